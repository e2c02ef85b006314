#!/usr/bin/env bash
# One MLflow user, created (or given a new password) by the admin, with its role. Run it once per
# worker host (each worker its own user) and per person who only reads:
#
#   MLFLOW_TRACKING_URI=http://mlflow:5000 MLFLOW_AUTH_ADMIN_PASSWORD=... \
#   MLL_MLFLOW_USER=gpu-host-1 MLL_MLFLOW_PASSWORD=... [MLL_MLFLOW_ROLE=worker|reader] \
#   bash deploy/mlflow-users.sh
#
# Every user reads everything (MLFLOW_AUTH_DEFAULT_PERMISSION=READ on the server). Role `worker`
# adds the MLflow role `mll-worker` (workspace `default`), what labelling, publishing, discovery and
# selection write, and no more:
#   experiment * EDIT               create runs and logged models in the mll-* experiments, log
#                                   params/metrics/tags/artifacts, end runs (not delete them)
#   registered_model * EDIT         create registered models and versions, set tags and aliases
#                                   (not delete a model or an alias)
#   registered_model_version * MANAGE  delete a version and its tags: a duplicate registration of
#                                   the same label, or one left `registering` by a dead worker, is
#                                   removed by the next one (the lease protocol)
# Creating an experiment or a registered model needs no grant (its creator may manage it).
# Role `reader` removes `mll-worker` from the user. Passwords come from the environment only.
set -euo pipefail
source "$(dirname "$0")/common.sh"
need_var MLFLOW_TRACKING_URI MLFLOW_AUTH_ADMIN_USERNAME MLFLOW_AUTH_ADMIN_PASSWORD MLL_MLFLOW_USER \
  MLL_MLFLOW_PASSWORD
need_bin python
case "$MLL_MLFLOW_ROLE" in
  worker|reader) ;;
  *) die "MLL_MLFLOW_ROLE must be worker or reader (got '$MLL_MLFLOW_ROLE')" ;;
esac
export MLFLOW_TRACKING_URI MLFLOW_AUTH_ADMIN_USERNAME MLFLOW_AUTH_ADMIN_PASSWORD MLL_MLFLOW_USER \
  MLL_MLFLOW_PASSWORD MLL_MLFLOW_ROLE
python - <<'PY'
import os
import sys

env = os.environ
# the admin's credentials, for this process only
env["MLFLOW_TRACKING_USERNAME"] = env["MLFLOW_AUTH_ADMIN_USERNAME"]
env["MLFLOW_TRACKING_PASSWORD"] = env["MLFLOW_AUTH_ADMIN_PASSWORD"]
env.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
from mlflow.exceptions import MlflowException
from mlflow.server.auth.client import AuthServiceClient

ROLE, WORKSPACE = "mll-worker", "default"
GRANTS = {("experiment", "*"): "EDIT", ("registered_model", "*"): "EDIT",
          ("registered_model_version", "*"): "MANAGE"}
user, password, kind = env["MLL_MLFLOW_USER"], env["MLL_MLFLOW_PASSWORD"], env["MLL_MLFLOW_ROLE"]
secrets = [s for s in (password, env["MLFLOW_AUTH_ADMIN_PASSWORD"]) if s]


def fail(what: str, exc: BaseException) -> None:
    text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    for s in secrets:
        text = text.replace(s, "***")
    sys.exit(f"mlflow-users.sh: {what} failed at {env['MLFLOW_TRACKING_URI']}: {text} "
             "(is the server up, MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD the admin's?)")


auth = AuthServiceClient(env["MLFLOW_TRACKING_URI"])
try:
    try:
        auth.get_user(user)
        auth.update_user_password(user, password)
        state = "password set"
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        auth.create_user(user, password)
        state = "created"
except Exception as exc:  # noqa: BLE001 - one line, no traceback
    fail(f"creating user {user}", exc)
try:
    role = next((r for r in auth.list_roles(WORKSPACE) if r.name == ROLE), None)
    if kind == "worker":
        if role is None:
            role = auth.create_role(WORKSPACE, ROLE, "MLL Registry workers: write labels")
        have = {(p.resource_type, p.resource_pattern): p for p in auth.list_role_permissions(role.id)}
        for (rtype, pattern), perm in GRANTS.items():
            if (rtype, pattern) not in have:
                auth.add_role_permission(role.id, rtype, pattern, perm)
            elif have[(rtype, pattern)].permission != perm:
                auth.update_role_permission(have[(rtype, pattern)].id, perm)
        if all(r.id != role.id for r in auth.list_user_roles(user)):
            auth.assign_role(user, role.id)
    elif role is not None and any(r.id == role.id for r in auth.list_user_roles(user)):
        auth.unassign_role(user, role.id)
except Exception as exc:  # noqa: BLE001 - one line, no traceback
    fail(f"giving {user} the role {kind}", exc)
print(f"mlflow-users: user {user} {state}, role {kind}")
PY
