#!/usr/bin/env bash
# MLflow tracking server: runs, metrics and the model registry in PostgreSQL, artifacts in S3,
# every request authenticated (MLflow's basic-auth app).
# Artifacts are proxied (--serve-artifacts): clients and workers need only MLFLOW_TRACKING_URI
# (http://HOST:PORT) plus their own MLFLOW_TRACKING_USERNAME/PASSWORD, and no S3 credentials;
# only this process holds them.
#
#   MLFLOW_BACKEND_STORE_URI=postgresql://USER:PASSWORD@db:5432/mlflow \
#   MLFLOW_ARTIFACTS_DESTINATION=s3://BUCKET/mlflow \
#   AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... [MLFLOW_S3_ENDPOINT_URL=http://s3:9000] \
#   MLFLOW_AUTH_ADMIN_PASSWORD=... MLFLOW_STATE_DIR=/var/lib/mll-mlflow \
#   MLFLOW_HOST=0.0.0.0 MLFLOW_ALLOWED_HOSTS=mlflow.example.org bash deploy/mlflow-server.sh
#
# Authentication: `mlflow server --app-name basic-auth` with the auth config written to
# MLFLOW_STATE_DIR/basic_auth.ini (mode 0600: its database_uri may hold a password). Users and
# grants live at MLFLOW_AUTH_DATABASE_URI (default: a sqlite file in MLFLOW_STATE_DIR; point it at
# PostgreSQL when several MLflow servers share the registry). Requests without valid credentials
# get 401; a user without a grant has MLFLOW_AUTH_DEFAULT_PERMISSION (READ). A checked password
# is trusted for MLFLOW_AUTH_CACHE_TTL_S per server worker (each check is a scrypt hash, ~0.1 s of
# CPU: without the cache one worker served ~2 requests/s under load); a changed password or a
# deleted user is honoured by every worker within that time. The admin
# (MLFLOW_AUTH_ADMIN_USERNAME, password MLFLOW_AUTH_ADMIN_PASSWORD) is created on the first start
# and is for set-up only: deploy/mlflow-users.sh creates the workers' own users.
# Secrets reach the server through its environment and that file, never its command line (`ps`
# shows arguments to every user): the store URIs go as MLFLOW_BACKEND_STORE_URI and
# MLFLOW_ARTIFACTS_DESTINATION, which `mlflow server` reads itself.
#
# Runs the schema migrations on start (once, before the workers fork), then serves in the
# foreground (exec: SIGTERM stops it). Requests whose Host header is not allowed get 403: set
# MLFLOW_ALLOWED_HOSTS to the names clients use when they are not localhost or a private IP.
set -euo pipefail
source "$(dirname "$0")/common.sh"
need_var MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION MLFLOW_AUTH_ADMIN_PASSWORD \
  MLFLOW_STATE_DIR
need_bin mlflow
case "$MLFLOW_ARTIFACTS_DESTINATION" in
  s3://*) python -c "import boto3" 2>/dev/null \
            || die "boto3 missing in MLL_VENV=$MLL_VENV (uv sync --extra server)" ;;
esac
case "$MLFLOW_BACKEND_STORE_URI" in
  postgresql://*|postgresql+psycopg2://*) python -c "import psycopg2" 2>/dev/null \
            || die "psycopg2 missing in MLL_VENV=$MLL_VENV (uv sync --extra server)" ;;
esac
python -c "import flask_wtf" 2>/dev/null \
  || die "flask-wtf missing in MLL_VENV=$MLL_VENV (the basic-auth app needs it: uv sync --extra server)"

mkdir -p "$MLFLOW_STATE_DIR"
chmod 700 "$MLFLOW_STATE_DIR"
# the Flask secret key (CSRF of the user pages): the same in every worker and across restarts
if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
  key_file="$MLFLOW_STATE_DIR/flask-secret-key"
  if [ ! -s "$key_file" ]; then
    (umask 077; python -c "import secrets; print(secrets.token_hex(32))" >"$key_file")
  fi
  MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$key_file")"
fi
auth_ini="$MLFLOW_STATE_DIR/basic_auth.ini"
rm -f "$auth_ini"
# configparser interpolates %: a percent-encoded password in the URI is written as %%
(umask 077; cat >"$auth_ini" <<EOF
[mlflow]
default_permission = $MLFLOW_AUTH_DEFAULT_PERMISSION
database_uri = ${MLFLOW_AUTH_DATABASE_URI//%/%%}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME//%/%%}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = $MLFLOW_AUTH_CACHE_TTL_S
EOF
)
export MLFLOW_AUTH_CONFIG_PATH="$auth_ini" MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_AUTH_ADMIN_USERNAME \
  MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION \
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION AWS_DEFAULT_REGION
args=(server --app-name basic-auth --serve-artifacts
      --host "$MLFLOW_HOST" --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS")
if [ -n "$MLFLOW_ALLOWED_HOSTS" ]; then args+=(--allowed-hosts "$MLFLOW_ALLOWED_HOSTS"); fi
exec mlflow "${args[@]}"
