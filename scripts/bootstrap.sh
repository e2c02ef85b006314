#!/usr/bin/env bash
# One command from a fresh clone: system packages, the locked environment, then a job.
#   bash scripts/bootstrap.sh demo   # the main job (mll demo on the embedded default)
#   bash scripts/bootstrap.sh test   # the test suite (what CI runs)
#   bash scripts/bootstrap.sh env    # set-up only
# Extra arguments go to the job (e.g. `... test -m "not slow"`).
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-env}"; shift || true

# Offline by default: no telemetry, no Hub, no surprise servers.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_HUB_DISABLE_TELEMETRY=1
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
export PREFECT_SERVER_ANALYTICS_ENABLED=false

# 1. System packages: WordNet 3.0 dict files, the demo's emoji image sources, chromium for
#    the UI screenshot test, and PostgreSQL for the production-stack test (deploy/; Debian/Ubuntu).
pkgs="wordnet-base wordnet-sense-index fonts-noto-color-emoji fonts-symbola ruby-gemojione libcairo2 chromium postgresql"
missing=""
if command -v dpkg-query >/dev/null; then
  for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing$missing" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "bootstrap: missing system packages:$missing" >&2
    echo "  install them as root: apt-get install$missing" >&2
    echo "  (or provide WordNet via nltk: python -m nltk.downloader wordnet; the demo needs the fonts)" >&2
  fi
fi

# 2. uv, then the locked environment (uv.lock pins the working set; see README "Pins").
if command -v uv >/dev/null; then UV=(uv)
elif python3 -m uv --version >/dev/null 2>&1; then UV=(python3 -m uv)
else
  python3 -m pip install -q uv 2>/dev/null || python3 -m pip install -q --user --break-system-packages uv
  UV=(python3 -m uv)
fi
# compiled bytecode at install time: with PYTHONDONTWRITEBYTECODE=1 (CI, containers) every
# command would otherwise recompile its dependencies' sources
UV_COMPILE_BYTECODE=1 "${UV[@]}" sync --frozen --quiet --all-extras

# 3. The job.
case "$job" in
  demo) exec "${UV[@]}" run --frozen mll demo "$@" ;;
  test)
    # lint first (seconds); the type check (a minute of one core) runs beside the suite's start
    # and fails the job as soon as the suite is done
    "${UV[@]}" run --frozen ruff check .
    types_log=$(mktemp)
    "${UV[@]}" run --frozen mypy mll_registry flows >"$types_log" 2>&1 &
    types_pid=$!
    tests_rc=0
    "${UV[@]}" run --frozen pytest --durations=25 "$@" || tests_rc=$?
    types_rc=0
    wait "$types_pid" || types_rc=$?
    cat "$types_log"; rm -f "$types_log"
    if [ "$types_rc" -ne 0 ]; then echo "bootstrap: mypy failed" >&2; exit "$types_rc"; fi
    if [ "$tests_rc" -ne 0 ]; then exit "$tests_rc"; fi
    # the whole suite (no arguments): then the mutation check, every deliberate bug caught
    if [ $# -eq 0 ]; then "${UV[@]}" run --frozen python scripts/mutations.py; fi ;;
  env) echo "bootstrap: environment ready (.venv); run commands with: uv run mll ..." >&2 ;;
  *) echo "usage: bash scripts/bootstrap.sh demo|test|env [args]" >&2; exit 2 ;;
esac
