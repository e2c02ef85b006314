#!/usr/bin/env bash
# Dev/test backing services: PostgreSQL and an S3-compatible object store on this machine.
# Production teams bring their own (a managed PostgreSQL, S3 or any S3-compatible store) and
# start at mlflow-server.sh.
#
#   PG_DATA=/var/tmp/mll-pg bash deploy/backing-services.sh postgres   # foreground server
#   bash deploy/backing-services.sh s3                                 # foreground server
#   bash deploy/backing-services.sh bucket                             # once S3 answers
#
# postgres: creates PG_DATA on first start (initdb as PG_OS_USER, a role PG_USER with
#   PG_PASSWORD, databases `mlflow` and `prefect` owned by it), then execs the server in the
#   foreground as PG_OS_USER (PostgreSQL refuses to run as root), listening on PG_HOST:PG_PORT.
#   SIGINT = fast shutdown (what `pg_ctl stop -m fast` sends). As root on Debian/Ubuntu, installs
#   the `postgresql` package when PG_BIN lacks it. PG_DATA's parent folders must be traversable
#   by PG_OS_USER (a pytest tmp dir under /tmp/pytest-of-root is not).
# s3: execs moto's standalone server on S3_HOST:S3_PORT. Why moto: a real implementation on PyPI
#   (already in the dev environment) whose standalone server mode speaks the S3 REST API over
#   HTTP, so MLflow's own boto3 code path is exercised as against AWS; Debian ships no MinIO
#   binary. moto keeps objects in memory: they are gone when it stops (dev/test only).
# bucket: creates S3_BUCKET through boto3 at MLFLOW_S3_ENDPOINT_URL (default: the s3 server
#   above) with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; does nothing if it exists.
set -euo pipefail
source "$(dirname "$0")/common.sh"
: "${MLFLOW_S3_ENDPOINT_URL:=http://$S3_HOST:$S3_PORT}"

# run_as_pg CMD...: run CMD as PG_OS_USER (exec'd: no intermediate process)
run_as_pg() {
  if [ "$(id -u)" = 0 ]; then
    exec setpriv --reuid="$PG_OS_USER" --regid="$(id -g "$PG_OS_USER")" --init-groups -- "$@"
  else
    exec "$@"
  fi
}

install_postgres() {
  [ -x "$PG_BIN/postgres" ] && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "backing-services: installing postgresql" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  [ -x "$PG_BIN/postgres" ] \
    || die "PostgreSQL not found at PG_BIN=$PG_BIN (install it as root: apt-get install postgresql)"
}

postgres_server() {
  need_var PG_DATA
  install_postgres
  if [ "$(id -u)" = 0 ]; then
    need_bin setpriv
    id "$PG_OS_USER" >/dev/null 2>&1 \
      || useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER"
    mkdir -p "$PG_DATA"
    chown "$PG_OS_USER:" "$PG_DATA"
    (run_as_pg test -w "$PG_DATA") \
      || die "PG_OS_USER=$PG_OS_USER cannot write PG_DATA=$PG_DATA (a parent folder is private?)"
  else
    mkdir -p "$PG_DATA"
  fi
  chmod 700 "$PG_DATA"
  cd "$PG_DATA"  # the server user may not be able to read the caller's working directory
  if [ ! -s "$PG_DATA/PG_VERSION" ]; then
    local pwfile sql out
    pwfile="$(mktemp)"
    printf '%s\n' "$PG_PASSWORD" >"$pwfile"
    chmod 644 "$pwfile"  # read by initdb as PG_OS_USER; removed right after
    (run_as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$pwfile" -E UTF8 \
      --no-locale --auth-local=peer --auth-host=scram-sha-256) >/dev/null
    rm -f "$pwfile"
    # single-user mode: the role and the two databases, before the server listens at all
    sql="CREATE ROLE \"$PG_USER\" LOGIN PASSWORD '${PG_PASSWORD//\'/\'\'}';
CREATE DATABASE mlflow OWNER \"$PG_USER\";
CREATE DATABASE prefect OWNER \"$PG_USER\";"
    out="$( (run_as_pg "$PG_BIN/postgres" --single -D "$PG_DATA" postgres <<<"$sql") 2>&1)"
    if grep -q "ERROR:" <<<"$out"; then  # single-user mode reports SQL errors but exits 0
      rm -rf "${PG_DATA:?}"/*
      die "creating the role and databases failed: $(grep "ERROR:" <<<"$out")"
    fi
    echo "backing-services: initialised $PG_DATA (role $PG_USER, databases mlflow, prefect)" >&2
  fi
  run_as_pg "$PG_BIN/postgres" -D "$PG_DATA" -c listen_addresses="$PG_HOST" -c port="$PG_PORT" \
    -c unix_socket_directories="$PG_DATA"
}

s3_server() {
  need_bin moto_server
  exec moto_server -H "$S3_HOST" -p "$S3_PORT"
}

create_bucket() {
  need_var AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY S3_BUCKET
  need_bin python
  export MLFLOW_S3_ENDPOINT_URL S3_BUCKET AWS_DEFAULT_REGION
  python - <<'PY'
import os

import boto3
from botocore.exceptions import ClientError

s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"] or None)
bucket = os.environ["S3_BUCKET"]
try:
    s3.head_bucket(Bucket=bucket)
    print(f"backing-services: bucket {bucket} exists")
except ClientError:
    s3.create_bucket(Bucket=bucket)
    print(f"backing-services: created bucket {bucket}")
PY
}

case "${1:-}" in
  postgres) postgres_server ;;
  s3) s3_server ;;
  bucket) create_bucket ;;
  *) die "usage: backing-services.sh postgres|s3|bucket" ;;
esac
