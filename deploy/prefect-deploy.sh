#!/usr/bin/env bash
# Work pools and deployments: creates the process pools in MLL_WORK_POOLS (default `gpu cpu`)
# unless they exist, then `prefect --no-prompt deploy --all` from the checkout MLL_REPO, so that
# every deployment in prefect.yaml is registered (re-running updates them in place).
#
#   PREFECT_API_URL=http://prefect:4200/api PREFECT_API_AUTH_STRING="mll:PASSWORD" \
#   bash deploy/prefect-deploy.sh
#
# `prefect deploy` records a set_working_directory pull step for MLL_REPO: process workers run
# flows from that checkout, whatever their own working directory.
set -euo pipefail
source "$(dirname "$0")/common.sh"
need_var PREFECT_API_URL PREFECT_API_AUTH_STRING MLL_REPO
export PREFECT_API_AUTH_STRING
need_bin prefect
[ -f "$MLL_REPO/prefect.yaml" ] || die "no prefect.yaml in MLL_REPO=$MLL_REPO"
cd "$MLL_REPO"
for pool in $MLL_WORK_POOLS; do
  if prefect work-pool inspect "$pool" >/dev/null 2>&1; then
    echo "prefect-deploy: work pool $pool exists"
  else
    prefect work-pool create "$pool" --type process
  fi
done
prefect --no-prompt deploy --all
