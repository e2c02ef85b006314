"""The production stack for tests, brought up by the same scripts a team runs (deploy/*.sh).

PostgreSQL (databases `mlflow` and `prefect`) and an S3 server (moto) as backing services, then
`mlflow server` on PostgreSQL with proxied S3 artifacts, a Prefect server on PostgreSQL, the
work pools and every deployment of prefect.yaml. Everything listens on free ports of 127.0.0.1;
state lives in a tmp dir; teardown stops every process (workers first, PostgreSQL last).
Both servers authenticate every request: MLflow's basic-auth app (an admin for set-up, the
client user ``stack.env`` carries, and one user per worker, made by deploy/mlflow-users.sh) and
Prefect's auth string; every password is random per stack (:meth:`ProductionStack.secrets`).
``ProductionStack(root, prefect=False, s3=False)`` is PostgreSQL + MLflow alone (artifacts in a
local folder), for tests that break a backing service.

Not a test module: import the fixture factory and helpers from a test module::

    from production_stack import production_stack_fixture

    production_stack = production_stack_fixture()          # session-scoped fixture

    def test_x(production_stack, tmp_path):
        client = mlflow.MlflowClient(production_stack.mlflow_uri)
        proc = production_stack.start_worker("cpu", tmp_path / "w")
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
STARTUP_TIMEOUT_S = 240.0  # per phase; on this 2-core box the whole stack takes well under that


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as e:
        return f"(no log: {e})"


class StackError(RuntimeError):
    """A service died or did not become ready; the message holds the tail of its log."""


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path
    log_file: IO[str]
    stop_signal: int = signal.SIGTERM
    signals: int = 1           # how many times to send stop_signal before SIGKILL
    group: bool = True         # signal the whole process group, not only the leader
    started: float = field(default_factory=time.monotonic)

    def died(self) -> StackError | None:
        if self.proc.poll() is None:
            return None
        return StackError(f"{self.name} exited with {self.proc.returncode}; "
                          f"tail of {self.log}:\n{log_tail(self.log)}")


def _signal(svc: Service, sig: int) -> None:
    try:
        if svc.group:
            os.killpg(svc.proc.pid, sig)
        else:
            os.kill(svc.proc.pid, sig)
    except ProcessLookupError:
        pass


def stop_services(services: list[Service], wait_s: float = 15.0) -> None:
    """Stop several services at once: their stop signal (repeated as configured), then SIGKILL
    for whatever is left of their process groups."""
    for round_ in range(max((s.signals for s in services), default=0)):
        pending = [s for s in services if s.proc.poll() is None and round_ < s.signals]
        for s in pending:
            _signal(s, s.stop_signal)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(s.proc.poll() is None for s in pending):
            time.sleep(0.2)
    for s in services:
        if s.proc.poll() is None:
            _signal(s, signal.SIGKILL)
            s.proc.wait(10)
        # children that outlived their leader (uvicorn workers, flow runs)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(s.proc.pid, signal.SIGKILL)
        s.log_file.close()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _stripped_environ() -> dict[str, str]:
    """The test process's environment without anything that would point a service elsewhere."""
    drop = ("PREFECT_", "MLFLOW_", "MLL_", "PG", "S3_", "WORKER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    for k in list(env):
        if k.startswith("AWS_") and k != "AWS_CA_BUNDLE":
            del env[k]
    return env


class ProductionStack:
    """Ports, URIs, environments and the running services. ``start()`` brings it up."""

    def __init__(self, root: Path, *, bucket: str = "mll-test",
                 hf_endpoint: str = "https://huggingface.co", prefect: bool = True,
                 s3: bool = True, host: str = "127.0.0.1",
                 deploy_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.host = host  # where the MLflow and Prefect servers listen (backing services: loopback)
        self.deploy_env = dict(deploy_env or {})  # more settings of deploy/prefect-deploy.sh
        self.bucket = bucket
        self.with_prefect, self.with_s3 = prefect, s3
        # credentials: random per stack, handed to the scripts through their environment only
        self.admin_user, self.admin_password = "admin", "admin-" + secrets.token_urlsafe(12)
        self.prefect_auth = "mll:prefect-" + secrets.token_urlsafe(12)
        self.client_user, self.client_password = "mll-client", "client-" + secrets.token_urlsafe(12)
        self.mlflow_users: dict[str, str] = {}  # user -> password, as created by mlflow-users.sh
        self.pg_port, self.s3_port = free_port(), free_port()
        self.mlflow_port, self.prefect_port = free_port(), free_port()
        self.pg_user, self.pg_password = "mll", "pg-" + secrets.token_urlsafe(12)
        # the server runs as an unprivileged user: its data dir cannot sit under pytest's
        # private tmp root (/tmp/pytest-of-root is 0700), so it gets its own dir under /tmp
        self.pg_data = Path(tempfile.mkdtemp(prefix="mll-pg-")) / "data"
        self.pg_data.parent.chmod(0o711)  # mkdtemp makes it 0700
        self._aws = {"AWS_ACCESS_KEY_ID": "mll-test", "AWS_SECRET_ACCESS_KEY": "mll-test-secret",
                     "AWS_DEFAULT_REGION": "us-east-1"}
        self.services: list[Service] = []
        self.workers: list[Service] = []
        self.worker_env: dict[str, dict[str, str]] = {}  # remote workers' environments, by name
        self.startup_s: dict[str, float] = {}
        base = _stripped_environ()
        base.update(MLL_REPO=str(ROOT), MLL_VENV=sys.prefix, DO_NOT_TRACK="true",
                    MLFLOW_DISABLE_TELEMETRY="true", PREFECT_SERVER_ANALYTICS_ENABLED="false",
                    HF_HUB_DISABLE_TELEMETRY="1", PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="false")
        self._base = base
        # what a client or a worker needs (no S3 credentials: artifacts are proxied)
        self.env: dict[str, str] = {
            **base,
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_API_AUTH_STRING": self.prefect_auth,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "MLFLOW_TRACKING_USERNAME": self.client_user,
            "MLFLOW_TRACKING_PASSWORD": self.client_password,
            "MLL_DATA_DIR": str(root / "mll-data"),
            "HF_HOME": str(root / "hf-home"),
            "HF_ENDPOINT": hf_endpoint,
        }

    # ---- addresses -------------------------------------------------------------------------
    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def artifacts_destination(self) -> str:
        return f"s3://{self.bucket}/mlflow" if self.with_s3 else str(self.root / "mlflow-artifacts")

    def secrets(self) -> dict[str, str]:
        """Every password of the stack, by what it is (none may show in a log, tag or argv)."""
        out = {"postgres": self.pg_password, "mlflow admin": self.admin_password,
               "prefect auth string": self.prefect_auth.split(":", 1)[1],
               "s3 secret key": self._aws["AWS_SECRET_ACCESS_KEY"]}
        out.update({f"mlflow user {u}": p for u, p in self.mlflow_users.items()})
        return out

    @contextlib.contextmanager
    def client_credentials(self, user: str | None = None) -> Iterator[None]:
        """This process's MLflow clients (and Prefect's) authenticate as ``user`` (default: the
        client user) inside the block; the environment is restored after it."""
        user = user or self.client_user
        new = {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": self.mlflow_users[user],
               "PREFECT_API_AUTH_STRING": self.prefect_auth}
        old = {k: os.environ.get(k) for k in new}
        os.environ.update(new)
        try:
            yield
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def db_uri(self, database: str, driver: str = "postgresql") -> str:
        return (f"{driver}://{self.pg_user}:{self.pg_password}@127.0.0.1:{self.pg_port}/"
                f"{database}")

    # ---- clients ---------------------------------------------------------------------------
    def s3_client(self) -> Any:
        """A boto3 S3 client on the stack's object store (credentials passed, not in os.environ)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint,
                            aws_access_key_id=self._aws["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self._aws["AWS_SECRET_ACCESS_KEY"],
                            region_name=self._aws["AWS_DEFAULT_REGION"])

    def pg_connect(self, database: str = "mlflow") -> Any:
        """A psycopg2 connection (autocommit) to one of the stack's databases."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.pg_port, user=self.pg_user,
                                password=self.pg_password, dbname=database, connect_timeout=3)
        conn.autocommit = True
        return conn

    def prefect_api(self, path: str, body: dict | None = None) -> Any:
        """POST (with ``body``) or GET ``{PREFECT_API_URL}{path}``; the decoded JSON."""
        data = None if body is None else json.dumps(body).encode()
        token = base64.b64encode(self.prefect_auth.encode()).decode()
        req = urllib.request.Request(self.prefect_api_url + path, data=data,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Basic {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def pool_workers(self, pool: str) -> list[dict]:
        return list(self.prefect_api(f"/work_pools/{pool}/workers/filter", {}))

    # ---- processes -------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str], env: dict[str, str], *, cwd: Path = ROOT,
               stop_signal: int = signal.SIGTERM, signals: int = 1, group: bool = True,
               prefix: tuple[str, ...] = ()) -> Service:
        log = self.root / f"{name}.log"
        f = open(log, "w")  # noqa: SIM115 - lives as long as the service
        proc = subprocess.Popen([*prefix, "bash", *args], cwd=cwd, env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
        return Service(name, proc, log, f, stop_signal, signals, group)

    def _script(self, name: str, args: list[str], env: dict[str, str],
                timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Run a deploy script to completion (log to a file); raise with its log tail."""
        log = self.root / f"{name}.log"
        t0 = time.monotonic()
        with open(log, "w") as f:
            try:
                r = subprocess.run(["bash", *args], cwd=ROOT, env=env, stdout=f,
                                   stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise StackError(f"{name} took over {timeout} s; tail of {log}:\n"
                                 f"{log_tail(log)}") from None
        if r.returncode != 0:
            raise StackError(f"{name} failed with {r.returncode}; tail of {log}:\n{log_tail(log)}")
        self.startup_s[name] = time.monotonic() - t0

    def _wait(self, checks: dict[str, tuple[Service, Callable[[], bool]]],
              timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Poll services started together until each is ready; record each one's start-up time."""
        pending = dict(checks)
        deadline = time.monotonic() + timeout
        while pending:
            for name, (svc, ready) in list(pending.items()):
                if err := svc.died():
                    raise err
                ok = False
                try:
                    ok = ready()
                except Exception:  # noqa: BLE001 - not ready yet
                    ok = False
                if ok:
                    self.startup_s[name] = time.monotonic() - svc.started
                    del pending[name]
            if pending and time.monotonic() > deadline:
                name, (svc, _) = next(iter(pending.items()))
                raise StackError(f"{name} not ready after {timeout} s; tail of {svc.log}:\n"
                                 f"{log_tail(svc.log)}")
            time.sleep(0.3)

    def start(self) -> ProductionStack:
        t0 = time.monotonic()
        base = self._base
        pg_env = {**base, "PG_DATA": str(self.pg_data), "PG_HOST": "127.0.0.1",
                  "PG_PORT": str(self.pg_port), "PG_USER": self.pg_user,
                  "PG_PASSWORD": self.pg_password}
        s3_env = {**base, "S3_HOST": "127.0.0.1", "S3_PORT": str(self.s3_port)}
        # PostgreSQL's postmaster alone gets SIGINT (fast shutdown, as `pg_ctl stop -m fast`)
        pg = self._spawn("postgres", [str(DEPLOY / "backing-services.sh"), "postgres"], pg_env,
                         stop_signal=signal.SIGINT, group=False)
        self.services.append(pg)
        waits = {"postgres": (pg, lambda: self.pg_connect("prefect").close() is None)}
        if self.with_s3:
            s3 = self._spawn("s3", [str(DEPLOY / "backing-services.sh"), "s3"], s3_env)
            self.services.append(s3)
            waits["s3"] = (s3, lambda: "Buckets" in self.s3_client().list_buckets())
        self._wait(waits)
        if self.with_s3:
            self._script("s3-bucket", [str(DEPLOY / "backing-services.sh"), "bucket"],
                         {**base, **self._aws, "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
                          "S3_BUCKET": self.bucket})

        mlflow_env = {**base, "MLFLOW_BACKEND_STORE_URI": self.db_uri("mlflow"),
                      "MLFLOW_ARTIFACTS_DESTINATION": self.artifacts_destination,
                      "MLFLOW_HOST": self.host, "MLFLOW_PORT": str(self.mlflow_port),
                      "MLFLOW_WORKERS": "1", "MLFLOW_STATE_DIR": str(self.root / "mlflow-state"),
                      "MLFLOW_AUTH_ADMIN_USERNAME": self.admin_user,
                      "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password}
        if self.with_s3:
            mlflow_env.update(self._aws, MLFLOW_S3_ENDPOINT_URL=self.s3_endpoint)
        mlflow = self._spawn("mlflow", [str(DEPLOY / "mlflow-server.sh")], mlflow_env)
        self.services.append(mlflow)
        waits = {"mlflow": (mlflow, lambda: _http_ok(self.mlflow_uri + "/health"))}
        if self.with_prefect:
            prefect_env = {**base, "PREFECT_HOME": str(self.root / "prefect-server-home"),
                           "PREFECT_API_DATABASE_CONNECTION_URL": self.db_uri(
                               "prefect", "postgresql+asyncpg"),
                           "PREFECT_SERVER_API_AUTH_STRING": self.prefect_auth,
                           "PREFECT_SERVER_API_HOST": self.host,
                           "PREFECT_SERVER_API_PORT": str(self.prefect_port)}
            prefect = self._spawn("prefect", [str(DEPLOY / "prefect-server.sh")], prefect_env)
            self.services.append(prefect)
            waits["prefect"] = (prefect, lambda: _http_ok(self.prefect_api_url + "/health"))
        self._wait(waits)
        self.add_mlflow_user(self.client_user, self.client_password)
        if self.with_prefect:
            self._script("prefect-deploy", [str(DEPLOY / "prefect-deploy.sh")],
                         {**self.env, "PREFECT_HOME": str(self.root / "prefect-deploy-home"),
                          **self.deploy_env})
        self.startup_s["total"] = time.monotonic() - t0
        return self

    def add_mlflow_user(self, user: str, password: str | None = None,
                        role: str = "worker") -> str:
        """Create (or re-password) MLflow user ``user`` with ``role`` through
        deploy/mlflow-users.sh, as the admin; returns its password."""
        password = password or f"{user}-" + secrets.token_urlsafe(12)
        self._script(f"mlflow-users-{user}", [str(DEPLOY / "mlflow-users.sh")],
                     {**self._base, "MLFLOW_TRACKING_URI": self.mlflow_uri,
                      "MLFLOW_AUTH_ADMIN_USERNAME": self.admin_user,
                      "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
                      "MLL_MLFLOW_USER": user, "MLL_MLFLOW_PASSWORD": password,
                      "MLL_MLFLOW_ROLE": role})
        self.mlflow_users[user] = password
        return password

    def protect_ensembles(self) -> None:
        """deploy/mlflow-users.sh's DENY sync alone (MLL_MLFLOW_ROLE=protect), as the admin."""
        self._script("mlflow-users-protect", [str(DEPLOY / "mlflow-users.sh")],
                     {**self._base, "MLFLOW_TRACKING_URI": self.mlflow_uri,
                      "MLFLOW_AUTH_ADMIN_USERNAME": self.admin_user,
                      "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
                      "MLL_MLFLOW_ROLE": "protect"})

    def stop_postgres(self) -> None:
        """Stop PostgreSQL alone (fast shutdown), leaving the servers on it running."""
        pg = next(s for s in self.services if s.name == "postgres")
        stop_services([pg], wait_s=30)
        self.services.remove(pg)

    def command_lines(self) -> dict[int, str]:
        """pid -> command line (what `ps` shows every user) of every process of the stack."""
        groups = {s.proc.pid for s in [*self.services, *self.workers]}
        out = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
                pgid = int(stat[stat.rindex(")") + 2:].split()[2])
                if pgid in groups:
                    out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ValueError):
                continue
        return out

    def start_worker(self, pool: str, workdir: Path, name: str | None = None,
                     limit: int | None = None, extra_env: dict[str, str] | None = None
                     ) -> subprocess.Popen:
        """Start `deploy/worker.sh` for ``pool`` in ``workdir`` (log: ``<root>/worker-NAME.log``)
        as MLflow user ``worker-NAME`` (role worker); stopped at teardown, or earlier by
        ``stop_worker``."""
        name = name or f"{pool}-{len(self.workers) + 1}"
        user = f"worker-{name}"  # each worker its own MLflow user
        password = self.mlflow_users.get(user) or self.add_mlflow_user(user)
        env = {**self.env, "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password,
               "WORKER_POOL": pool, "MLL_WORKER_NAME": name,
               "WORKER_DIR": str(workdir),
               "PREFECT_HOME": str(self.root / f"prefect-home-{name}"), **(extra_env or {})}
        if limit is not None:
            env["WORKER_LIMIT"] = str(limit)
        svc = self._spawn(f"worker-{name}", [str(DEPLOY / "worker.sh")], env, cwd=ROOT,
                          stop_signal=signal.SIGINT, signals=2)
        self.workers.append(svc)
        return svc.proc

    def start_remote_worker(self, pool: str, workdir: Path, exec_prefix: list[str], *,
                            name: str, limit: int | None = None,
                            extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a worker as on another host: run through ``exec_prefix`` (e.g. inside a network
        namespace), from copies of deploy/worker.sh and common.sh in ``workdir``, in a Python
        environment with the locked dependencies but not this project (:func:`worker_venv`), so
        the flows' code can only arrive through the deployments' pull step. Its environment
        names nothing of this checkout, of the stack's directory or of another worker: paths
        under ``workdir``, the servers' URLs (``extra_env`` adds e.g. HF_ENDPOINT), its own
        MLflow user and the Prefect auth string. Stopped at teardown, like ``start_worker``."""
        user = f"worker-{name}"
        password = self.mlflow_users.get(user) or self.add_mlflow_user(user)
        ops = workdir / "ops"
        (ops / "deploy").mkdir(parents=True, exist_ok=True)
        for script in ("worker.sh", "common.sh"):
            shutil.copy2(DEPLOY / script, ops / "deploy" / script)
        worker_venv(ops / ".venv")  # common.sh's default MLL_VENV: MLL_REPO (= ops) /.venv
        for d in ("home", "tmp"):
            (workdir / d).mkdir(parents=True, exist_ok=True)
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": "C.UTF-8", "HOME": str(workdir / "home"), "TMPDIR": str(workdir / "tmp"),
               "DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true",
               "HF_HUB_DISABLE_TELEMETRY": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_API_URL": self.prefect_api_url,
               "PREFECT_API_AUTH_STRING": self.prefect_auth,
               "MLFLOW_TRACKING_URI": self.mlflow_uri, "MLFLOW_TRACKING_USERNAME": user,
               "MLFLOW_TRACKING_PASSWORD": password, "WORKER_POOL": pool,
               "MLL_WORKER_NAME": name, "WORKER_DIR": str(workdir / "cwd"),
               "PREFECT_HOME": str(workdir / "prefect-home"),
               "MLL_DATA_DIR": str(workdir / "data"), "HF_HOME": str(workdir / "hf"),
               **(extra_env or {})}
        if limit is not None:
            env["WORKER_LIMIT"] = str(limit)
        svc = self._spawn(f"worker-{name}", [str(ops / "deploy" / "worker.sh")], env,
                          cwd=workdir, stop_signal=signal.SIGINT, signals=2,
                          prefix=tuple(exec_prefix))
        self.workers.append(svc)
        self.worker_env[name] = env
        return svc.proc

    def stop_worker(self, proc: subprocess.Popen) -> None:
        svc = next(s for s in self.workers if s.proc is proc)
        stop_services([svc])
        self.workers.remove(svc)

    def stop(self) -> None:
        """Workers, then the servers, then PostgreSQL; then remove PostgreSQL's data dir."""
        try:
            stop_services(self.workers, wait_s=10)
            self.workers.clear()
            pg = [s for s in self.services if s.name == "postgres"]
            stop_services([s for s in self.services if s.name != "postgres"])
            stop_services(pg, wait_s=30)
            self.services.clear()
        finally:
            shutil.rmtree(self.pg_data.parent, ignore_errors=True)

    def __enter__(self) -> ProductionStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def worker_venv(dest: Path) -> Path:
    """A Python environment holding this one's installed packages but not the project, as
    `uv sync --frozen --no-install-project` makes on a worker host; built in a second: a bare
    venv whose one .pth line adds this environment's site-packages folder (a folder added that
    way has its own .pth files, the project's editable install among them, left unread), plus
    a `prefect` launcher."""
    import sysconfig

    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(dest)], check=True, timeout=120)
    py = dest / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    deps = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (Path(site) / "mll-locked-deps.pth").write_text("".join(f"{d}\n" for d in deps))
    launcher = dest / "bin" / "prefect"
    launcher.write_text(f"#!{py}\nimport sys\nfrom prefect.cli import app\nsys.exit(app())\n")
    launcher.chmod(0o755)
    return dest


def postgres_available() -> str | None:
    """None when deploy/backing-services.sh can run PostgreSQL here, else why not."""
    if (PG_BIN / "postgres").exists():
        return None if os.geteuid() != 0 or shutil.which("setpriv") else "setpriv missing"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        return None  # the script installs the package
    return f"PostgreSQL server binaries (PG_BIN={PG_BIN})"


def production_stack_fixture(scope: str = "session", **kwargs: Any) -> Any:
    """A pytest fixture (default: session-scoped) yielding a started ``ProductionStack``.
    Assign it to a name in a test module or conftest: ``production_stack = production_stack_fixture()``.
    ``kwargs`` go to ``ProductionStack``."""

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def production_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionStack]:
        if why := postgres_available():
            from conftest import missing_asset

            missing_asset(why, "bash scripts/bootstrap.sh env (as root it installs postgresql)")
        with ProductionStack(tmp_path_factory.mktemp("production-stack"), **kwargs) as stack:
            print("\nproduction stack start-up (s): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in stack.startup_s.items()))
            yield stack

    return production_stack
