# shellcheck shell=bash
# Sourced by every deploy/*.sh script: the one place where defaults are stated, plus helpers.
# Every variable is documented in deploy/env.example. Scripts are configured only through the
# environment; a variable set by the caller always wins over the default below.

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# --- defaults (stated once) ----------------------------------------------------------------
: "${MLL_REPO:=$(cd "$DEPLOY_DIR/.." && pwd)}"       # the checkout `prefect deploy` runs from
: "${MLL_VENV:=$MLL_REPO/.venv}"                     # environment holding mlflow/prefect/moto_server
# PostgreSQL (dev/test server of backing-services.sh)
: "${PG_BIN:=/usr/lib/postgresql/15/bin}"
: "${PG_OS_USER:=postgres}"                          # PostgreSQL refuses to run as root
: "${PG_HOST:=127.0.0.1}"
: "${PG_PORT:=5432}"
: "${PG_USER:=mll}"
: "${PG_PASSWORD:=mll}"
# S3 (dev/test object store of backing-services.sh) and the bucket MLflow writes to
: "${S3_HOST:=127.0.0.1}"
: "${S3_PORT:=9000}"
: "${S3_BUCKET:=mll}"
: "${AWS_DEFAULT_REGION:=us-east-1}"
# MLflow tracking server
: "${MLFLOW_HOST:=127.0.0.1}"
: "${MLFLOW_PORT:=5000}"
: "${MLFLOW_WORKERS:=2}"
: "${MLFLOW_ALLOWED_HOSTS:=}"                        # empty: MLflow's default (localhost, private IPs)
: "${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:=false}"     # 6 s / 0.5 GB start instead of 26 s / 2 GB
# MLflow authentication (mlflow-server.sh runs `--app-name basic-auth`; mlflow-users.sh adds users)
: "${MLFLOW_STATE_DIR:=/var/tmp/mll/mlflow-server}"  # auth config, auth DB, Flask secret key (0700)
: "${MLFLOW_AUTH_DATABASE_URI:=sqlite:///$MLFLOW_STATE_DIR/basic_auth.db}"  # users and grants
: "${MLFLOW_AUTH_DEFAULT_PERMISSION:=READ}"          # what a user holds on resources without a grant
: "${MLFLOW_AUTH_ADMIN_USERNAME:=admin}"             # created on the first start, for set-up only
: "${MLFLOW_AUTH_CACHE_TTL_S:=60}"                   # a checked password is trusted this long per worker
: "${MLL_MLFLOW_ROLE:=worker}"                       # mlflow-users.sh: worker (writes labels), selector (ensembles), reader or protect
# Prefect server, pools and deployments
: "${PREFECT_SERVER_API_HOST:=127.0.0.1}"
: "${PREFECT_SERVER_API_PORT:=4200}"
: "${MLL_WORK_POOLS:=gpu cpu}"
: "${MLL_CODE_REPO:=}"                               # prefect-deploy.sh: git URL workers pull the code from
                                                     #   (empty: workers run the checkout it deploys from)
: "${MLL_CODE_COMMIT:=}"                             # the commit they pull (empty: MLL_REPO's HEAD, if clean)
: "${MLL_CODE_DIRS:=mll_registry flows model_cards}" # folders checked out besides the top-level files
: "${WORKER_LIMIT:=}"                                # worker.sh: max concurrent flow runs (empty: none)
# Telemetry off, and no silent temporary Prefect server when PREFECT_API_URL is missing.
: "${DO_NOT_TRACK:=true}"
: "${MLFLOW_DISABLE_TELEMETRY:=true}"
: "${PREFECT_SERVER_ANALYTICS_ENABLED:=false}"
: "${HF_HUB_DISABLE_TELEMETRY:=1}"
: "${PREFECT_SERVER_ALLOW_EPHEMERAL_MODE:=false}"
export DO_NOT_TRACK MLFLOW_DISABLE_TELEMETRY PREFECT_SERVER_ANALYTICS_ENABLED \
  HF_HUB_DISABLE_TELEMETRY PREFECT_SERVER_ALLOW_EPHEMERAL_MODE
# --------------------------------------------------------------------------------------------

if [ -d "$MLL_VENV/bin" ]; then PATH="$MLL_VENV/bin:$PATH"; fi

die() { echo "${0##*/}: $*" >&2; exit 2; }

# need_var NAME...: fail naming each variable that is unset or empty
need_var() {
  local v missing=()
  for v in "$@"; do [ -n "${!v:-}" ] || missing+=("$v"); done
  [ ${#missing[@]} -eq 0 ] || die "missing environment variable(s): ${missing[*]} (see deploy/env.example)"
}

# need_bin NAME...: fail naming each program that is not on PATH
need_bin() {
  local b
  for b in "$@"; do
    command -v "$b" >/dev/null 2>&1 \
      || die "program '$b' not found on PATH (MLL_VENV=$MLL_VENV; run: bash scripts/bootstrap.sh env)"
  done
}
