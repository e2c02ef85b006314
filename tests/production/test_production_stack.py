"""The production stack, for real: PostgreSQL + S3 (moto) + `mlflow server` + Prefect server +
pools, deployments and a worker, all started by the deploy/ scripts (tests/production_stack.py).

MLflow finding recorded here (3.17.2, SQL store, so PostgreSQL and SQLite alike):
`search_model_versions` returns each version's tags but always an empty `aliases` list
(mlflow/mlflow#9783, closed with a docs warning; fix proposed in #22841). `get_model_version`,
`get_model_version_by_alias` and the registered models of `search_registered_models` carry them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from production_stack import DEPLOY, ROOT, ProductionStack

# the fixture `production_stack` (one per session) is in conftest.py

MODEL = "prod-stack-demo"
CORE_DEPLOYMENTS = {  # flow name / deployment name: pool, for the deployments the README names
    "label-new-models/label-new-models-hourly": "cpu",
    "label-model/label-model-gpu": "gpu",
    "label-models/label-models-gpu": "gpu",
    "label-models/label-models-cpu": "cpu",
    "label-model/label-model-cpu": "cpu",
    "select-models/select-models": "cpu",
    "build-graph/build-graph": "cpu",
}


def expected_deployments() -> dict[str, str]:
    """`flow name/deployment name` -> work pool, for every deployment in prefect.yaml (the flow
    name read from the entrypoint's ``@flow(name=...)``)."""
    out = {}
    for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]:
        path, func = d["entrypoint"].split(":")
        source = (ROOT / path).read_text()
        before = source[:source.index(f"def {func}(")]
        flow = re.findall(r'@flow\(\s*name="([^"]+)"', before)[-1]
        out[f"{flow}/{d['name']}"] = d["work_pool"]["name"]
    return out


@pytest.fixture()
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This process holds no S3 credentials or endpoint: artifacts must go through MLflow."""
    for k in list(os.environ):
        if k.startswith("AWS_") or k == "MLFLOW_S3_ENDPOINT_URL":
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))


@pytest.fixture()
def as_client(production_stack: ProductionStack) -> Iterator[None]:
    """This process's MLflow and Prefect clients authenticate as the stack's client user."""
    with production_stack.client_credentials():
        yield


@pytest.mark.slow
def test_stack_starts_in_time(production_stack: ProductionStack) -> None:
    print("start-up (s):", {k: round(v, 1) for k, v in production_stack.startup_s.items()})
    assert production_stack.startup_s["total"] < 120, production_stack.startup_s


@pytest.mark.slow
def test_mlflow_registry_on_postgres(production_stack: ProductionStack, no_aws: None,
                                    as_client: None) -> None:
    import mlflow

    client = mlflow.MlflowClient(production_stack.mlflow_uri)
    exp = client.create_experiment("prod-stack-registry")
    run = client.create_run(exp)
    client.set_terminated(run.info.run_id)
    client.create_registered_model(MODEL, tags={"mll.kind": "label"})
    tags = {"mll.status": "ready", "mll.graph_version": "g-123"}
    mv = client.create_model_version(MODEL, source=f"runs:/{run.info.run_id}/label",
                                     run_id=run.info.run_id, tags=tags)
    client.set_registered_model_alias(MODEL, "labeled", mv.version)

    found = client.search_model_versions(
        filter_string=f"name = '{MODEL}' and tags.`mll.status` = 'ready'")
    assert [v.version for v in found] == [mv.version]
    assert found[0].tags == tags
    # known MLflow behaviour (module docstring): search results carry no aliases
    assert found[0].aliases == [], "MLflow now returns aliases from search_model_versions"
    assert client.search_model_versions(
        filter_string=f"name = '{MODEL}' and tags.`mll.graph_version` LIKE 'g-9%'") == []
    assert client.get_model_version(MODEL, mv.version).aliases == ["labeled"]
    assert client.get_model_version_by_alias(MODEL, "labeled").version == mv.version
    (rm,) = client.search_registered_models(filter_string=f"name = '{MODEL}'")
    assert rm.aliases == {"labeled": mv.version}

    with production_stack.pg_connect("mlflow") as conn, conn.cursor() as cur:
        cur.execute("SELECT version, source, run_id FROM model_versions WHERE name = %s",
                    (MODEL,))
        assert cur.fetchall() == [(int(mv.version), f"runs:/{run.info.run_id}/label",
                                   run.info.run_id)]
        cur.execute("SELECT key, value FROM model_version_tags WHERE name = %s AND version = %s",
                    (MODEL, int(mv.version)))
        assert dict(cur.fetchall()) == tags
        cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s",
                    (MODEL,))
        assert cur.fetchall() == [("labeled", int(mv.version))]


@pytest.mark.slow
def test_artifacts_proxied_to_s3(production_stack: ProductionStack, no_aws: None,
                                 tmp_path: Path, as_client: None) -> None:
    import mlflow

    client = mlflow.MlflowClient(production_stack.mlflow_uri)
    exp = client.create_experiment("prod-stack-artifacts")
    run = client.create_run(exp)
    payload = os.urandom(70_000) + b"end"
    src = tmp_path / "label.bin"
    src.write_bytes(payload)
    client.log_artifact(run.info.run_id, str(src), artifact_path="label")
    client.set_terminated(run.info.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri

    s3 = production_stack.s3_client()
    listed = s3.list_objects_v2(Bucket=production_stack.bucket,
                                Prefix=f"mlflow/{exp}/{run.info.run_id}/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    key = f"mlflow/{exp}/{run.info.run_id}/artifacts/label/label.bin"
    assert keys == [key]
    body = s3.get_object(Bucket=production_stack.bucket, Key=key)["Body"].read()
    assert body == payload
    from mll_registry.registry.tracking import Tracking

    Tracking(production_stack.mlflow_uri)  # the library's MLflow set-up, as every command has
    back = client.download_artifacts(run.info.run_id, "label/label.bin", str(tmp_path / "dl"))
    assert Path(back).read_bytes() == payload
    # through the server, never from a presigned URL of the server's own S3 endpoint (which a
    # worker on another host may not reach: tests/production/test_production.py)
    log = (production_stack.root / "mlflow.log").read_text(errors="replace")
    assert (f'"GET /api/2.0/mlflow-artifacts/artifacts/{exp}/{run.info.run_id}/artifacts/label/'
            'label.bin') in log
    assert "/mlflow-artifacts/presigned/" not in log


def _prefect_client(stack: ProductionStack):  # noqa: ANN202
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api=stack.prefect_api_url, auth_string=stack.prefect_auth)


@pytest.mark.slow
def test_prefect_pools_and_deployments(production_stack: ProductionStack) -> None:
    expected = expected_deployments()
    assert CORE_DEPLOYMENTS.items() <= expected.items()

    with _prefect_client(production_stack) as client:
        pools = {p.name: p.type for p in client.read_work_pools()}
        assert pools == {"gpu": "process", "cpu": "process"}
        deployments = client.read_deployments()
        flows = {f.id: f.name for f in client.read_flows()}
    got = {f"{flows[d.flow_id]}/{d.name}": d for d in deployments}
    assert {k: d.work_pool_name for k, d in got.items()} == expected
    hourly = got["label-new-models/label-new-models-hourly"]
    assert [s.schedule.cron for s in hourly.schedules] == ["0 * * * *"]
    # deployed from the checkout: process workers run flows from it
    assert all(str(ROOT) in str(d.pull_steps) for d in got.values())

    with production_stack.pg_connect("prefect") as conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM deployment ORDER BY name")
        assert [r[0] for r in cur.fetchall()] == sorted(d.split("/")[1] for d in got)
        cur.execute("SELECT name, type FROM work_pool WHERE name IN ('gpu', 'cpu') ORDER BY name")
        assert cur.fetchall() == [("cpu", "process"), ("gpu", "process")]


@pytest.mark.slow
def test_worker_polls_from_empty_dir(production_stack: ProductionStack, tmp_path: Path) -> None:
    workdir = tmp_path / "worker-cpu"
    workdir.mkdir()
    # S3 credentials in the caller's environment must not reach the worker (worker.sh drops them)
    leak = {"AWS_ACCESS_KEY_ID": "leak", "AWS_SECRET_ACCESS_KEY": "leak",
            "MLFLOW_S3_ENDPOINT_URL": production_stack.s3_endpoint}
    proc = production_stack.start_worker("cpu", workdir, name="test-cpu-1", extra_env=leak)
    t0 = time.monotonic()
    workers: list[dict] = []
    while time.monotonic() - t0 < 90 and not workers:
        assert proc.poll() is None, (production_stack.root / "worker-test-cpu-1.log").read_text()
        workers = [w for w in production_stack.pool_workers("cpu") if w["name"] == "test-cpu-1"]
        time.sleep(1)
    print(f"worker polling after {time.monotonic() - t0:.1f} s")
    assert workers and workers[0]["status"] == "ONLINE", workers
    assert production_stack.pool_workers("gpu") == []

    # the exec'd `prefect worker` process: its working directory and the environment it hands
    # to flow runs (no S3 credentials)
    assert Path(os.readlink(f"/proc/{proc.pid}/cwd")) == workdir
    raw = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
    env = dict(e.decode().split("=", 1) for e in raw if b"=" in e)
    for k in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_URI", "MLL_DATA_DIR",
              "HF_HOME", "HF_ENDPOINT"):
        assert env[k] == production_stack.env[k], k
    # its own MLflow user, made by deploy/mlflow-users.sh
    assert env["MLFLOW_TRACKING_USERNAME"] == "worker-test-cpu-1"
    assert env["MLFLOW_TRACKING_PASSWORD"] == production_stack.mlflow_users["worker-test-cpu-1"]
    assert env["MLL_WORKER_NAME"] == "test-cpu-1"
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "MLFLOW_S3_ENDPOINT_URL"} & env.keys()

    production_stack.stop_worker(proc)
    assert proc.returncode is not None


# ---- fast checks of the scripts themselves (no servers) --------------------------------------

def _script_vars(text: str) -> set[str]:
    found = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", text))
    for names in re.findall(r"^\s*need_var ([A-Z0-9_ ]+)$", text, re.MULTILINE):
        found |= set(names.split())
    return found


def test_env_example_documents_every_variable() -> None:
    used: set[str] = set()
    for script in DEPLOY.glob("*.sh"):
        used |= _script_vars(script.read_text())
    used -= {"PATH", "BASH_SOURCE", "DEPLOY_DIR"}
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (DEPLOY / "env.example").read_text(),
                                re.MULTILINE))
    assert used - documented == set()


@pytest.mark.parametrize(("script", "var"), [("mlflow-server.sh", "MLFLOW_BACKEND_STORE_URI"),
                                             ("prefect-server.sh",
                                              "PREFECT_API_DATABASE_CONNECTION_URL"),
                                             ("prefect-deploy.sh", "PREFECT_API_URL"),
                                             ("mlflow-users.sh", "MLL_MLFLOW_PASSWORD"),
                                             ("worker.sh", "WORKER_POOL")])
def test_scripts_name_a_missing_variable(script: str, var: str) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "WORKER_", "PG_"))}
    r = subprocess.run(["bash", str(DEPLOY / script)], env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2
    assert var in r.stderr and "deploy/env.example" in r.stderr, r.stderr


def _dirty_checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "checkout"
    repo.mkdir()
    shutil.copy2(ROOT / "prefect.yaml", repo / "prefect.yaml")
    for args in (["init", "-q"], ["add", "prefect.yaml"],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    (repo / "prefect.yaml").write_text((repo / "prefect.yaml").read_text() + "# edited\n")
    return repo


#: the secret in every credential-bearing MLL_CODE_REPO below: it must never be printed
SECRET = "s3cret-pw"


@pytest.mark.parametrize(("extra", "says"), [
    ({"MLL_CODE_REPO": f"https://bob:{SECRET}@git.example.com/mll.git"}, "holds a credential"),
    ({"MLL_CODE_REPO": "https://git.example.com/mll.git", "MLL_CODE_COMMIT": "main"},
     "not a full 40-hex commit id"),
    ({"MLL_CODE_REPO": "https://git.example.com/mll.git", "MLL_REPO": "dirty"},
     "uncommitted changes the workers would not get"),
])
def test_prefect_deploy_refuses_code_it_cannot_pin(extra: dict[str, str], says: str,
                                                   tmp_path: Path) -> None:
    """Before touching the server: a git URL with a password (it would be stored in every
    deployment), a branch instead of a commit, or a checkout whose HEAD lacks its edits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLL_"))}
    env.update(PREFECT_API_URL="http://192.0.2.1:9/api", PREFECT_API_AUTH_STRING="u:p", **extra)
    if env.get("MLL_REPO") == "dirty":
        env["MLL_REPO"] = str(_dirty_checkout(tmp_path))
    r = subprocess.run(["bash", str(DEPLOY / "prefect-deploy.sh")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and says in r.stderr, r.stderr
    assert SECRET not in r.stdout + r.stderr


def _deploy_with_code_repo(url: str) -> subprocess.CompletedProcess[str]:
    """prefect-deploy.sh with MLL_CODE_REPO=url, a branch for a commit (so that a URL it takes
    ends at the commit check) and an unreachable Prefect server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLL_"))}
    env.update(PREFECT_API_URL="http://192.0.2.1:9/api", PREFECT_API_AUTH_STRING="u:p",
               MLL_CODE_REPO=url, MLL_CODE_COMMIT="main")
    return subprocess.run(["bash", str(DEPLOY / "prefect-deploy.sh")], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("url", "says"), [
    (f"https://{SECRET}@git.example.com/team/mll.git", "user info before '@'"),
    (f"https://oauth2:{SECRET}@gitlab.example.com/team/mll.git", "user info before '@'"),
    (f"HTTPS://x-access-token:{SECRET}@github.example.com/team/mll.git", "user info before '@'"),
    (f"git://{SECRET}@git.example.com/team/mll.git", "user info before '@'"),
    (f"https://gitlab.example.com/team/mll.git?private_token={SECRET}", "query string"),
    (f"https://git.example.com/team/mll.git?access_token={SECRET}", "query string"),
    (f"https://git.example.com/team/mll.git#{SECRET}", "fragment"),
    (f"ssh://git:{SECRET}@git.example.com/team/mll.git", "ssh password"),
    (f"git:{SECRET}@git.example.com:team/mll.git", "ssh password"),
], ids=["token-only", "oauth2-token", "user-token", "git-userinfo", "private_token",
        "access_token", "fragment", "ssh-password", "scp-password"])
def test_prefect_deploy_refuses_a_code_url_carrying_any_credential(url: str, says: str) -> None:
    """Issue #40, 10: a token alone before '@', an oauth2:TOKEN, or a token in the query is as
    secret as user:password, and would be stored in every deployment and printed. The refusal
    names what is wrong and the fix, never the secret."""
    r = _deploy_with_code_repo(url)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "MLL_CODE_REPO holds a credential" in r.stderr and says in r.stderr, r.stderr
    assert "credential helper" in r.stderr and "deploy key" in r.stderr, r.stderr
    assert SECRET not in r.stdout + r.stderr


@pytest.mark.parametrize("url", ["git@git.example.com:team/mll.git",
                                 "ssh://git@git.example.com:2222/team/mll.git",
                                 "https://git.example.com/team/mll.git",
                                 "git://192.0.2.1:9418/mll-registry.git"])
def test_prefect_deploy_takes_code_urls_without_credentials(url: str) -> None:
    """An ssh user name names the account whose key the worker holds, not a secret: taken, as is
    a URL without user info (both then stop at the commit check, before any server)."""
    r = _deploy_with_code_repo(url)
    assert r.returncode == 2 and "not a full 40-hex commit id" in r.stderr, r.stderr
