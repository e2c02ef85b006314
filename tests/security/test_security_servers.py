"""The servers ask who is calling, and a database outage ends within the retry budget.

On the production stack of the deploy/ scripts (the session's `production_stack`, conftest.py):
MLflow's basic-auth app answers 401 to a request without valid credentials, and 403 to a write by a
reader; the Prefect server answers 401 without its auth string; no password of the stack is on a
process's command line, in a worker's log, in a flow run's logs or in an MLflow tag or param.
On PostgreSQL + `mlflow server` alone (deploy/ scripts), PostgreSQL stopped: `mll graph list`
ends with exit 2 and one line within MLL_RETRY_BUDGET_S (MLflow's server holds a request ~100 s
while it retries its database, which the client waited for before).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from production_stack import ProductionStack, postgres_available

pytestmark = pytest.mark.slow

MODEL = "hf--sec--auth-model"  # a label model: what the stack's worker-role client writes


def _http(url: str, body: dict | None = None, auth: tuple[str, str] | str | None = None,
          method: str | None = None) -> tuple[int, str]:
    """(status, body) of one request; ``auth`` is (user, password) or "user:password"."""
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        raw = auth if isinstance(auth, str) else f"{auth[0]}:{auth[1]}"
        headers["Authorization"] = "Basic " + base64.b64encode(raw.encode()).decode()
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


@pytest.fixture(scope="module")
def registered(production_stack: ProductionStack) -> dict[str, str]:
    """A registered model with one version, made by the stack's client user."""
    from mlflow import MlflowClient

    with production_stack.client_credentials():
        client = MlflowClient(production_stack.mlflow_uri)
        exp = client.create_experiment("sec-auth")
        run = client.create_run(exp)
        client.create_registered_model(MODEL)
        mv = client.create_model_version(MODEL, f"runs:/{run.info.run_id}/label",
                                         run_id=run.info.run_id)
    return {"run_id": run.info.run_id, "version": str(mv.version)}


def _writes(stack: ProductionStack, run_id: str, version: str) -> dict[str, tuple[str, dict]]:
    api = stack.mlflow_uri + "/api/2.0/mlflow"
    return {
        "register a version": (f"{api}/model-versions/create",
                               {"name": MODEL, "source": f"runs:/{run_id}/label", "run_id": run_id}),
        "set a model tag": (f"{api}/registered-models/set-tag",
                            {"name": MODEL, "key": "mll.status", "value": "evil"}),
        "set a version tag": (f"{api}/model-versions/set-tag",
                              {"name": MODEL, "version": version, "key": "mll.status",
                               "value": "evil"}),
        "set an alias": (f"{api}/registered-models/alias",
                         {"name": MODEL, "alias": "labeled", "version": version}),
    }


def test_mlflow_refuses_writes_without_credentials(production_stack: ProductionStack,
                                                   registered: dict[str, str]) -> None:
    stack = production_stack
    writes = _writes(stack, registered["run_id"], registered["version"])
    for what, (url, body) in writes.items():
        assert _http(url, body)[0] == 401, f"{what} without credentials"
        assert _http(url, body, (stack.client_user, "wrong-password"))[0] == 401, what
        assert _http(url, body, ("nobody", stack.client_password))[0] == 401, what
    search = stack.mlflow_uri + "/api/2.0/mlflow/registered-models/search"
    assert _http(search)[0] == 401  # not even a read

    # a reader (no role) reads everything and writes nothing
    reader_pw = stack.add_mlflow_user("sec-reader", role="reader")
    status, body = _http(f"{search}?filter=name%3D%27{MODEL}%27", auth=("sec-reader", reader_pw))
    assert status == 200 and json.loads(body)["registered_models"][0]["name"] == MODEL
    for what, (url, body_) in writes.items():
        assert _http(url, body_, ("sec-reader", reader_pw))[0] == 403, f"a reader may {what}"

    # nothing changed: one version, no tag, no alias (read back with the client's credentials)
    got = _http(f"{stack.mlflow_uri}/api/2.0/mlflow/registered-models/get?name={MODEL}",
                auth=(stack.client_user, stack.client_password))
    assert got[0] == 200
    model = json.loads(got[1])["registered_model"]
    assert "tags" not in model and "aliases" not in model, model
    versions = _http(f"{stack.mlflow_uri}/api/2.0/mlflow/model-versions/search"
                     f"?filter=name%3D%27{MODEL}%27", auth=(stack.client_user, stack.client_password))
    assert [v["version"] for v in json.loads(versions[1])["model_versions"]] == ["1"]
    assert "tags" not in json.loads(versions[1])["model_versions"][0]

    # the same requests with a worker-role user's credentials go through (they were well formed)
    url, body = writes["set an alias"]
    assert _http(url, body, (stack.client_user, stack.client_password))[0] == 200


def test_prefect_refuses_clients_without_the_auth_string(production_stack: ProductionStack) -> None:
    stack = production_stack
    user = stack.prefect_auth.split(":", 1)[0]
    url = stack.prefect_api_url + "/deployments/filter"
    assert _http(url, {})[0] == 401
    assert _http(url, {}, f"{user}:wrong")[0] == 401
    status, body = _http(url, {}, stack.prefect_auth)
    assert status == 200 and {d["name"] for d in json.loads(body)} >= {"select-models"}
    assert _http(stack.prefect_api_url + "/health")[0] == 200  # the probe Prefect leaves open

    import httpx
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(api=stack.prefect_api_url) as client, \
            pytest.raises(httpx.HTTPStatusError) as err:
        client.read_work_pools()
    assert err.value.response.status_code == 401


def _flow_run_state(stack: ProductionStack, run_id: str) -> str:
    return str(stack.prefect_api(f"/flow_runs/{run_id}")["state"]["type"])


def test_no_secret_on_a_command_line_or_in_worker_and_flow_logs(
        production_stack: ProductionStack, tmp_path: Path) -> None:
    """A worker runs a flow that talks to MLflow and fails (no graph is published here); its
    log, the flow run's logs, MLflow's tags and params and every command line of the stack hold
    no password of the stack."""
    stack = production_stack
    proc = stack.start_worker("cpu", tmp_path / "worker", name="sec-cpu")
    dep = stack.prefect_api("/deployments/name/select-models/select-models")
    run = stack.prefect_api(f"/deployments/{dep['id']}/create_flow_run",
                            {"parameters": {"task_name": "sec-pets", "classes": ["dog", "cat"]},
                             "name": "sec-no-secrets"})
    seen: dict[int, str] = {}
    deadline = time.monotonic() + 300
    while _flow_run_state(stack, run["id"]) not in ("COMPLETED", "FAILED", "CRASHED"):
        assert proc.poll() is None, (stack.root / "worker-sec-cpu.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the flow run did not end in 300 s"
        seen.update(stack.command_lines())  # the flow run's own process too, while it runs
        time.sleep(0.5)
    seen.update(stack.command_lines())
    state = _flow_run_state(stack, run["id"])
    logs = stack.prefect_api("/logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}},
                                              "limit": 200})
    flow_logs = "\n".join(str(entry["message"]) for entry in logs)
    stack.stop_worker(proc)
    worker_log = (stack.root / "worker-sec-cpu.log").read_text(errors="replace")
    # the run got as far as MLflow (authenticated): it failed on the missing graph, not on 401
    assert state == "FAILED", (state, flow_logs[-2000:])
    assert "error code 401" not in flow_logs and "not authenticated" not in flow_logs, \
        flow_logs[-2000:]
    assert "graph" in flow_logs.lower(), flow_logs[-2000:]
    assert any("mlflow" in c and "server" in c for c in seen.values()), seen  # the scan works
    assert any("prefect" in c and "worker" in c for c in seen.values()), seen

    from mlflow import MlflowClient

    with stack.client_credentials():
        client = MlflowClient(stack.mlflow_uri)
        exps = [e.experiment_id for e in client.search_experiments()]
        recorded = [json.dumps({**r.data.tags, **r.data.params})
                    for r in client.search_runs(exps, max_results=1000)]
    secrets = stack.secrets()
    assert "mlflow user worker-sec-cpu" in secrets
    for what, secret in secrets.items():
        assert len(secret) >= 12
        for pid, cmd in seen.items():
            assert secret not in cmd, f"the {what} password is on the command line of {pid}"
        assert secret not in worker_log, f"the {what} password is in the worker's log"
        assert secret not in flow_logs, f"the {what} password is in the flow run's logs"
        assert not [r for r in recorded if secret in r], f"the {what} password is in MLflow"


# ---- PostgreSQL down --------------------------------------------------------------------------

def test_workers_write_labels_and_no_ensemble(production_stack: ProductionStack) -> None:
    """Issue #40 item 1: a labelling worker (role worker) writes label models and no version,
    tag or alias of an ensemble once deploy/mlflow-users.sh has synced its DENY list; a
    selector (role selector) registers and promotes ensembles. Real basic-auth MLflow."""
    stack = production_stack
    api = stack.mlflow_uri + "/api/2.0/mlflow"
    selector = ("sec-selector", stack.add_mlflow_user("sec-selector", role="selector"))
    worker = ("sec-worker", stack.add_mlflow_user("sec-worker", role="worker"))

    def call(path: str, body: dict, who: tuple[str, str], method: str = "POST") -> tuple[int, Any]:
        code, text = _http(f"{api}/{path}", body, who, method=method)
        return code, (json.loads(text) if code == 200 and text else text)

    def run_of(who: tuple[str, str], exp: str) -> str:
        code, got = call("experiments/create", {"name": exp}, who)
        assert code == 200, got
        code, got = call("runs/create", {"experiment_id": got["experiment_id"]}, who)
        assert code == 200, got
        return got["run"]["info"]["run_id"]

    ens = "sec-pets-mll-ensemble"
    rid = run_of(selector, "sec-selection")
    assert call("registered-models/create", {"name": ens}, selector)[0] == 200
    code, got = call("model-versions/create", {"name": ens, "source": f"runs:/{rid}/ensemble",
                                               "run_id": rid}, selector)
    assert code == 200, got
    stack.protect_ensembles()
    writes = {
        "register a version": ("model-versions/create",
                               {"name": ens, "source": f"runs:/{rid}/ensemble", "run_id": rid}),
        "set an alias": ("registered-models/alias", {"name": ens, "alias": "champion",
                                                     "version": "1"}),
        "set a version tag": ("model-versions/set-tag", {"name": ens, "version": "1",
                                                         "key": "mll.status", "value": "evil"}),
        "set a model tag": ("registered-models/set-tag", {"name": ens, "key": "mll.kind",
                                                          "value": "label"}),
    }
    for what, (path, body) in writes.items():
        assert call(path, body, worker)[0] == 403, f"a labelling worker may {what} of an ensemble"
    code, _ = call("model-versions/delete", {"name": ens, "version": "1"}, worker, "DELETE")
    assert code == 403, "a labelling worker may delete an ensemble's version"
    # what labelling writes still goes through: a label model, its version and alias
    wrid = run_of(worker, "sec-labels")
    label = "hf--sec--model"
    assert call("registered-models/create", {"name": label}, worker)[0] == 200
    assert call("model-versions/create", {"name": label, "source": f"runs:/{wrid}/label",
                                          "run_id": wrid}, worker)[0] == 200
    assert call("registered-models/alias", {"name": label, "alias": "labeled", "version": "1"},
                worker)[0] == 200
    # the selector still registers and promotes the ensemble
    for what in ("register a version", "set an alias"):
        path, body = writes[what]
        code, got = call(path, body, selector)
        assert code == 200, (what, got)


@pytest.fixture(scope="module")
def mlflow_on_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionStack]:
    """PostgreSQL + `mlflow server` (deploy/ scripts, basic auth on), nothing else."""
    if why := postgres_available():
        pytest.fail(f"{why} missing; provide it with: bash scripts/bootstrap.sh env (as root it "
                    "installs postgresql)")
    with ProductionStack(tmp_path_factory.mktemp("mlflow-pg"), prefect=False, s3=False) as stack:
        yield stack


def _mll(stack: ProductionStack, args: list[str], home: Path, timeout: float = 400,
         **env: str) -> tuple[Any, float]:
    """Run ``mll ARGS`` against the stack; a run past ``timeout`` seconds fails the test then
    (not when the command gives up by itself)."""
    import os

    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("MLL_", "MLFLOW_", "AWS_", "HF_", "PREFECT_"))}
    base.update(HOME=str(home), XDG_DATA_HOME=str(home / "share"), HF_HUB_OFFLINE="1",
                MLFLOW_TRACKING_URI=stack.mlflow_uri, MLFLOW_TRACKING_USERNAME=stack.client_user,
                MLFLOW_TRACKING_PASSWORD=stack.client_password)
    base.update(env)
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-m", "mll_registry.cli.main", *args], env=base,
                           cwd=home, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mll {' '.join(args)} ran past {timeout:.0f} s", pytrace=False)
    return r, time.monotonic() - t0


def test_cli_unauthenticated_then_postgres_down_within_the_retry_budget(mlflow_on_postgres: ProductionStack,
                                                    tmp_path: Path) -> None:
    stack = mlflow_on_postgres
    home = tmp_path / "home"
    home.mkdir()
    # the process start alone (imports), measured on this box: the budget comes on top of it
    r, start_s = _mll(stack, ["--version"], home)
    assert r.returncode == 0, r.stderr
    # without a password the CLI says so (before: every read failed quietly, "no graphs")
    r, _ = _mll(stack, ["graph", "list", "--json"], home, MLFLOW_TRACKING_PASSWORD="wrong-one")
    assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr[-2000:])
    (line,) = [line for line in r.stderr.splitlines() if line.strip()]
    assert "not authenticated (401)" in line and "MLFLOW_TRACKING_PASSWORD" in line, line
    # no registry call before the outage: the server's worker then retries creating its database
    # engine (~100 s, MLflow's own loop) inside the first request, the case that ignored the budget
    stack.stop_postgres()
    budget = 3.0
    # within the budget, plus the process start and generous slack for a loaded 2-core box
    # (before: ~100 s, MLflow's own database retries in the server); a run past that is stopped
    limit = start_s + budget + 25
    r, took = _mll(stack, ["graph", "list"], home, timeout=limit,
                   MLL_RETRY_BUDGET_S=str(budget))
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, r.stderr[-3000:]
    # one error line; before it, at most the retry notices (when the server answers its 5xx at
    # once instead of holding the request, the client retries within the budget and says so)
    *progress, line = lines
    assert all(re.fullmatch(r"read the default graph: transient failure \(\w+\), retry \d+/\d+",
                            p) for p in progress), r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "sqlalchemy" not in r.stderr.lower(), line
    assert stack.mlflow_uri in line, line
    assert "database" in line and "MLL_RETRY_BUDGET_S" in line, line
    for secret in stack.secrets().values():
        assert secret not in r.stderr + r.stdout
    assert took < limit, (took, start_s, line)
