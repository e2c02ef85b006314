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
# code_repo_credential URL: what in the git URL is a credential (empty: none). A pull step stores
# its URL in every deployment and this script prints it, so the URL carries none: no query string
# or fragment (`?private_token=`, `?access_token=`), no user info in http(s), git:// or file URLs
# (`TOKEN@`, `oauth2:TOKEN@`, `user:pass@`: any `@` there). Only an ssh user name may stay
# (`git@host:org/repo`, `ssh://git@host/org/repo`): it names an account, the key is the worker's.
code_repo_credential() {
  local url=$1 scheme user
  case "$url" in *'?'* | *'#'*) echo "a query string or fragment (such as ?private_token=)"; return ;; esac
  [[ "$url" == *@* ]] || return 0
  scheme=$(printf '%s' "${url%%://*}" | tr '[:upper:]' '[:lower:]')
  if [[ "$url" == *://* ]] && [[ "$scheme" != ssh && "$scheme" != git+ssh && "$scheme" != ssh+git ]]; then
    echo "user info before '@' (a token, oauth2:TOKEN or user:password)"
    return
  fi
  user=${url#*://}
  user=${user%%@*}
  [[ "$user" =~ ^[A-Za-z0-9._-]+$ ]] || echo "an ssh password or more than a user name before '@'"
}

if [ -n "$MLL_CODE_REPO" ]; then
  credential=$(code_repo_credential "$MLL_CODE_REPO")
  [ -z "$credential" ] \
    || die "MLL_CODE_REPO holds a credential: $credential (not shown; a pull step would store it in every deployment). Give the URL without it (https://host/org/repo.git or git@host:org/repo.git) and each worker host git credentials of its own: a credential helper, a ~/.netrc or an ssh deploy key"
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
