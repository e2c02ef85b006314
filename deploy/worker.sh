#!/usr/bin/env bash
# A Prefect process worker: polls WORKER_POOL and runs its flow runs as subprocesses that
# inherit this environment (the site's settings: MLFLOW_TRACKING_URI, MLL_*, HF_*).
#
#   PREFECT_API_URL=http://prefect:4200/api PREFECT_API_AUTH_STRING="mll:PASSWORD" \
#   MLFLOW_TRACKING_URI=http://mlflow:5000 MLFLOW_TRACKING_USERNAME=gpu-host-1 \
#   MLFLOW_TRACKING_PASSWORD=... \
#   WORKER_POOL=gpu MLL_WORKER_NAME=gpu-host-1 WORKER_DIR=/srv/mll-worker \
#   MLL_DATA_DIR=/srv/mll-data HF_HOME=/srv/hf [HF_TOKEN=...] bash deploy/worker.sh
#
# Runs in WORKER_DIR (created if missing) in the foreground (exec). Stopping takes two
# signals (SIGINT twice): the first one lets running flows finish.
# S3 credentials are dropped: artifacts go through the MLflow server (proxied). The worker's own
# MLflow user (deploy/mlflow-users.sh, role worker) and the Prefect auth string come from the
# environment, which the flow runs inherit; none is on a command line, in a parameter or a log.
set -euo pipefail
source "$(dirname "$0")/common.sh"
need_var PREFECT_API_URL PREFECT_API_AUTH_STRING MLFLOW_TRACKING_URI MLFLOW_TRACKING_USERNAME \
  MLFLOW_TRACKING_PASSWORD WORKER_POOL WORKER_DIR
need_bin prefect
: "${MLL_WORKER_NAME:=$(hostname)-$WORKER_POOL}"
export MLL_WORKER_NAME PREFECT_API_AUTH_STRING MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN MLFLOW_S3_ENDPOINT_URL
mkdir -p "$WORKER_DIR"
cd "$WORKER_DIR"
args=(worker start --pool "$WORKER_POOL" --name "$MLL_WORKER_NAME")
if [ -n "$WORKER_LIMIT" ]; then args+=(--limit "$WORKER_LIMIT"); fi
exec prefect "${args[@]}"
