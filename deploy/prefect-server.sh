#!/usr/bin/env bash
# Prefect server (API, UI, scheduler) on PostgreSQL, every API request authenticated.
#
#   PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://USER:PASSWORD@db:5432/prefect \
#   PREFECT_SERVER_API_AUTH_STRING="mll:PASSWORD" \
#   PREFECT_SERVER_API_HOST=0.0.0.0 PREFECT_UI_API_URL=http://prefect.example.org:4200/api \
#   bash deploy/prefect-server.sh
#
# Migrates the database on start, then serves in the foreground (exec: SIGTERM stops it).
# Clients, deploys and workers reach it at PREFECT_API_URL=http://HOST:PORT/api with
# PREFECT_API_AUTH_STRING set to the same "user:password" (HTTP basic auth; the UI asks for it);
# a request without it gets 401 (only GET /api/health and /api/ready answer anyone). The database
# URL and the auth string reach the server through its environment, never its command line.
set -euo pipefail
source "$(dirname "$0")/common.sh"
need_var PREFECT_API_DATABASE_CONNECTION_URL PREFECT_SERVER_API_AUTH_STRING
need_bin prefect
case "$PREFECT_API_DATABASE_CONNECTION_URL" in
  postgresql+asyncpg://*) python -c "import asyncpg" 2>/dev/null \
      || die "asyncpg missing in MLL_VENV=$MLL_VENV (uv sync --extra server)" ;;
  *) die "PREFECT_API_DATABASE_CONNECTION_URL must be postgresql+asyncpg://... (got a different scheme)" ;;
esac
export PREFECT_API_DATABASE_CONNECTION_URL PREFECT_SERVER_API_AUTH_STRING PREFECT_SERVER_API_HOST \
  PREFECT_SERVER_API_PORT
exec prefect server start --host "$PREFECT_SERVER_API_HOST" --port "$PREFECT_SERVER_API_PORT"
