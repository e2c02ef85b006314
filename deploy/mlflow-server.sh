#!/usr/bin/env bash
# MLflow tracking server: runs, metrics and the model registry in PostgreSQL, artifacts in S3.
# Artifacts are proxied (--serve-artifacts): clients and workers need only MLFLOW_TRACKING_URI
# (http://HOST:PORT) and no S3 credentials; only this process holds them.
#
#   MLFLOW_BACKEND_STORE_URI=postgresql://USER:PASSWORD@db:5432/mlflow \
#   MLFLOW_ARTIFACTS_DESTINATION=s3://BUCKET/mlflow \
#   AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... [MLFLOW_S3_ENDPOINT_URL=http://s3:9000] \
#   MLFLOW_HOST=0.0.0.0 MLFLOW_ALLOWED_HOSTS=mlflow.example.org bash deploy/mlflow-server.sh
#
# Runs the schema migrations on start (once, before the workers fork), then serves in the
# foreground (exec: SIGTERM stops it). Requests whose Host header is not allowed get 403: set
# MLFLOW_ALLOWED_HOSTS to the names clients use when they are not localhost or a private IP.
set -euo pipefail
source "$(dirname "$0")/common.sh"
need_var MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION
need_bin mlflow
case "$MLFLOW_ARTIFACTS_DESTINATION" in
  s3://*) python -c "import boto3" 2>/dev/null \
            || die "boto3 missing in MLL_VENV=$MLL_VENV (uv sync --extra server)" ;;
esac
case "$MLFLOW_BACKEND_STORE_URI" in
  postgresql://*|postgresql+psycopg2://*) python -c "import psycopg2" 2>/dev/null \
            || die "psycopg2 missing in MLL_VENV=$MLL_VENV (uv sync --extra server)" ;;
esac
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION AWS_DEFAULT_REGION
args=(server --backend-store-uri "$MLFLOW_BACKEND_STORE_URI"
      --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --serve-artifacts
      --host "$MLFLOW_HOST" --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS")
if [ -n "$MLFLOW_ALLOWED_HOSTS" ]; then args+=(--allowed-hosts "$MLFLOW_ALLOWED_HOSTS"); fi
exec mlflow "${args[@]}"
