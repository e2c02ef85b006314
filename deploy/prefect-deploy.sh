#!/usr/bin/env bash
# Work pools and deployments: creates the process pools in MLL_WORK_POOLS (default `gpu cpu`)
# unless they exist, then `prefect --no-prompt deploy --all` from the checkout MLL_REPO, so that
# every deployment in prefect.yaml is registered (re-running updates them in place).
#
#   PREFECT_API_URL=http://prefect:4200/api PREFECT_API_AUTH_STRING="mll:PASSWORD" \
#   [MLL_CODE_REPO=https://git.example.com/mll-registry.git] bash deploy/prefect-deploy.sh
#
# Where the flow runs get the code:
# - MLL_CODE_REPO empty: `prefect deploy` records a set_working_directory pull step for MLL_REPO;
#   process workers on this host run flows from that checkout, whatever their own directory.
# - MLL_CODE_REPO set (workers on other hosts): every deployment gets a git_clone pull step that
#   clones MLL_CODE_REPO at the pinned commit MLL_CODE_COMMIT (default: MLL_REPO's HEAD, refused
#   when the checkout has uncommitted changes, which the workers would not get) into the flow
#   run's working directory, checking out only the top-level files and MLL_CODE_DIRS. A worker
#   host needs the locked dependencies (`uv sync --frozen --no-install-project`), not the code.
set -euo pipefail
source "$(dirname "$0")/common.sh"
need_var PREFECT_API_URL PREFECT_API_AUTH_STRING MLL_REPO
export PREFECT_API_AUTH_STRING
need_bin prefect
[ -f "$MLL_REPO/prefect.yaml" ] || die "no prefect.yaml in MLL_REPO=$MLL_REPO"
cd "$MLL_REPO"
deploy_file=prefect.yaml
if [ -n "$MLL_CODE_REPO" ]; then
  case "$MLL_CODE_REPO" in
    *://*:*@*) die "MLL_CODE_REPO holds a password; give the workers git credentials of their own (a pull step stores its URL in every deployment)" ;;
  esac
  if [ -z "$MLL_CODE_COMMIT" ]; then
    need_bin git
    MLL_CODE_COMMIT=$(git -C "$MLL_REPO" rev-parse HEAD) \
      || die "MLL_REPO=$MLL_REPO is not a git checkout: set MLL_CODE_COMMIT to the commit to deploy"
    if [ -n "$(git -C "$MLL_REPO" status --porcelain --untracked-files=no)" ]; then
      die "MLL_REPO=$MLL_REPO has uncommitted changes the workers would not get: commit and push them, or set MLL_CODE_COMMIT"
    fi
  fi
  [[ "$MLL_CODE_COMMIT" =~ ^[0-9a-f]{40}$ ]] \
    || die "MLL_CODE_COMMIT=$MLL_CODE_COMMIT is not a full 40-hex commit id (a pinned commit, not a branch)"
  export MLL_CODE_REPO MLL_CODE_COMMIT MLL_CODE_DIRS
  deploy_file=$(mktemp -d)/prefect.yaml
  trap 'rm -rf "$(dirname "$deploy_file")"' EXIT
  python - prefect.yaml "$deploy_file" <<'PY'
import os
import sys

import yaml

with open(sys.argv[1]) as f:
    doc = yaml.safe_load(f)
doc["pull"] = [{"prefect.deployments.steps.git_clone": {
    "repository": os.environ["MLL_CODE_REPO"],
    "commit_sha": os.environ["MLL_CODE_COMMIT"],
    "directories": os.environ["MLL_CODE_DIRS"].split(),
}}]
with open(sys.argv[2], "w") as f:
    yaml.safe_dump(doc, f, sort_keys=False)
PY
  echo "prefect-deploy: flow runs clone $MLL_CODE_REPO at $MLL_CODE_COMMIT ($MLL_CODE_DIRS)"
fi
for pool in $MLL_WORK_POOLS; do
  if prefect work-pool inspect "$pool" >/dev/null 2>&1; then
    echo "prefect-deploy: work pool $pool exists"
  else
    prefect work-pool create "$pool" --type process
  fi
done
prefect --no-prompt deploy --all --prefect-file "$deploy_file"
