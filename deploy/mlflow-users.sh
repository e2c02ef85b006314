#!/usr/bin/env bash
# One MLflow user, created (or given a new password) by the admin, with its role. Run it once per
# worker host (each worker its own user) and per person who only reads:
#
#   MLFLOW_TRACKING_URI=http://mlflow:5000 MLFLOW_AUTH_ADMIN_PASSWORD=... \
#   MLL_MLFLOW_USER=gpu-host-1 MLL_MLFLOW_PASSWORD=... [MLL_MLFLOW_ROLE=worker|selector|reader] \
#   bash deploy/mlflow-users.sh
#
# Every user reads everything (MLFLOW_AUTH_DEFAULT_PERMISSION=READ on the server). Role `worker`
# (labelling, publishing graphs, discovery) adds the MLflow role `mll-worker` (workspace
# `default`), what those write, and no more:
#   experiment * EDIT               create runs and logged models in the mll-* experiments, log
#                                   params/metrics/tags/artifacts, end runs (not delete them)
#   registered_model * EDIT         create registered models and versions, set tags and aliases
#                                   (not delete a model or an alias)
#   registered_model_version * MANAGE  delete a version and its tags: a duplicate registration of
#                                   the same label, or one left `registering` by a dead worker, is
#                                   removed by the next one (the lease protocol)
#   registered_model NAME DENY      for every registered model that is not a label model
#                                   (hf--*, local--*, open_clip--*) or the graphs (mll-graphs):
#                                   a worker writes no version, tag or alias of an ensemble (a DENY
#                                   outranks the wildcard grants: MLflow folds a user's grants
#                                   per resource, and any DENY wins)
# MLflow grants name one resource or all (`*`), never a prefix, so the DENY list is kept by this
# script: every run re-applies it (MLL_MLFLOW_ROLE=protect does only that, no user needed): run it
# after registering a new ensemble name, or on a schedule. Role `selector` (who registers and
# promotes ensembles: `mll select --register`, the select-models and promote-ensemble
# deployments) adds the role `mll-selector`: the same three wildcard grants, no DENY. A user has
# one role: giving one removes the other. Role `reader` removes both. Creating an experiment or a
# registered model needs no grant (its creator may manage it). Passwords come from the
# environment only.
set -euo pipefail
source "$(dirname "$0")/common.sh"
case "$MLL_MLFLOW_ROLE" in
  worker|selector|reader) need_var MLFLOW_TRACKING_URI MLFLOW_AUTH_ADMIN_USERNAME \
    MLFLOW_AUTH_ADMIN_PASSWORD MLL_MLFLOW_USER MLL_MLFLOW_PASSWORD ;;
  protect) need_var MLFLOW_TRACKING_URI MLFLOW_AUTH_ADMIN_USERNAME MLFLOW_AUTH_ADMIN_PASSWORD
    MLL_MLFLOW_USER="" MLL_MLFLOW_PASSWORD="" ;;
  *) die "MLL_MLFLOW_ROLE must be worker, selector, reader or protect (got '$MLL_MLFLOW_ROLE')" ;;
esac
need_bin python
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

ROLES, WORKSPACE = {"worker": "mll-worker", "selector": "mll-selector"}, "default"
GRANTS = {("experiment", "*"): "EDIT", ("registered_model", "*"): "EDIT",
          ("registered_model_version", "*"): "MANAGE"}
#: what a worker may write: label models (one per model source) and the published graphs
LABEL_PREFIXES, GRAPHS = ('hf--', 'local--', 'open_clip--'), "mll-graphs"  # as mll_registry.models.refs
user, password, kind = env["MLL_MLFLOW_USER"], env["MLL_MLFLOW_PASSWORD"], env["MLL_MLFLOW_ROLE"]
secrets = [s for s in (password, env["MLFLOW_AUTH_ADMIN_PASSWORD"]) if s]


def fail(what: str, exc: BaseException) -> None:
    text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    for s in secrets:
        text = text.replace(s, "***")
    sys.exit(f"mlflow-users.sh: {what} failed at {env['MLFLOW_TRACKING_URI']}: {text} "
             "(is the server up, MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD the admin's?)")


auth = AuthServiceClient(env["MLFLOW_TRACKING_URI"])


def role_of(name: str, create: bool):
    role = next((r for r in auth.list_roles(WORKSPACE) if r.name == name), None)
    if role is None and create:
        role = auth.create_role(WORKSPACE, name, f"MLL Registry {name.removeprefix('mll-')}s")
        for (rtype, pattern), perm in GRANTS.items():
            auth.add_role_permission(role.id, rtype, pattern, perm)
    return role


def grant(role, want: dict) -> None:
    have = {(p.resource_type, p.resource_pattern): p for p in auth.list_role_permissions(role.id)}
    for (rtype, pattern), perm in want.items():
        if (rtype, pattern) not in have:
            auth.add_role_permission(role.id, rtype, pattern, perm)
        elif have[(rtype, pattern)].permission != perm:
            auth.update_role_permission(have[(rtype, pattern)].id, perm)


state = ""
if user:
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
    worker = role_of(ROLES["worker"], True)
    grant(worker, GRANTS)
    grant(role_of(ROLES["selector"], True), GRANTS)
    if user:
        mine = {r.id: r for r in auth.list_user_roles(user)}
        for k, name in ROLES.items():
            role = role_of(name, False)
            if k == kind and role.id not in mine:
                auth.assign_role(user, role.id)
            elif k != kind and role.id in mine:
                auth.unassign_role(user, role.id)
except Exception as exc:  # noqa: BLE001 - one line, no traceback
    fail(f"giving {user or 'the roles'} the role {kind}", exc)
# the DENY list: every registered model a worker has no business writing
try:
    from mlflow import MlflowClient

    client, names, token = MlflowClient(env["MLFLOW_TRACKING_URI"]), [], None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        names += [m.name for m in page]
        token = page.token
        if not token:
            break
    deny = {("registered_model", n): "DENY" for n in names
            if n != GRAPHS and not n.startswith(LABEL_PREFIXES)}
    grant(worker, deny)
except Exception as exc:  # noqa: BLE001 - one line, no traceback
    fail("denying workers the ensembles", exc)
print(f"mlflow-users: {f'user {user} {state}, role {kind}; ' if user else ''}"
      f"workers denied {len(deny)} registered models that are not labels or graphs")
PY
