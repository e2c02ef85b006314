"""Network namespaces for tests: hosts that share no network with the test machine but a bridge.

``Network(["w1", "w2"])`` makes a bridge on this machine with two addresses (``host_address``
for the servers, ``alias_address`` for a second name of the same host, e.g. a CDN) and one
network namespace per name, joined to the bridge by a veth pair. A namespace has its own
loopback and no route but the bridge's /24: from inside it, only the bridge addresses are
reachable, and 127.0.0.1 is the namespace's own (nothing listens there). ``exec_prefix(name)``
runs a command inside (``ip netns exec``). Leaving the block (normally or by an exception)
kills what still runs in the namespaces and deletes them, the veth pairs and the bridge; a
network left behind by a killed test run (its pid gone) is removed by the next one.

Not a test module. Needs root and iproute2 (``network_unavailable()`` says why not).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass

from mll_registry.fsutil import pid_alive

PREFIX = "mllns"  # namespace names: mllns<pid>-<i>; bridge mllbr<pid>; veth mllv<pid>x<i>


def _ip(*args: str, check: bool = True) -> str:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def network_unavailable() -> str | None:
    """None when this process can make network namespaces, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if not shutil.which("ip"):
        return "iproute2 (the `ip` program)"
    return None


def namespaces() -> list[str]:
    """The names of this machine's network namespaces."""
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def links() -> list[str]:
    """The names of this machine's network interfaces (of the root namespace)."""
    return re.findall(r"^\d+: ([^:@]+)", _ip("-o", "link", "show"), re.M)


def _kill_inside(ns: str) -> None:
    for pid in _ip("netns", "pids", ns, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def remove_stale() -> None:
    """Delete the namespaces and bridges of test runs whose process is gone."""
    for ns in namespaces():
        if (m := re.fullmatch(rf"{PREFIX}(\d+)-\d+", ns)) and not pid_alive(int(m[1])):
            _kill_inside(ns)
            _ip("netns", "del", ns, check=False)
    for link in links():
        if (m := re.fullmatch(r"mllbr(\d+)", link)) and not pid_alive(int(m[1])):
            _ip("link", "del", link, check=False)


def _free_subnet() -> ipaddress.IPv4Network:
    used = [ipaddress.ip_interface(a).network
            for a in re.findall(r"inet (\S+)", _ip("-o", "-4", "addr", "show"))]
    for third in range(os.getpid() % 200 + 20, 256):
        net = ipaddress.ip_network(f"10.231.{third}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free 10.231.x.0/24 subnet for the test network")


@dataclass(frozen=True)
class Namespace:
    name: str
    address: str  # this namespace's address on the bridge


class Network:
    """A bridge and one network namespace per name; a context manager (see the module doc)."""

    def __init__(self, names: list[str]) -> None:
        self.pid = os.getpid()
        self.bridge = f"mllbr{self.pid}"
        self.subnet = _free_subnet()
        hosts = list(self.subnet.hosts())
        self.host_address, self.alias_address = str(hosts[0]), str(hosts[1])
        self.spaces = {n: Namespace(f"{PREFIX}{self.pid}-{i}", str(hosts[10 + i]))
                       for i, n in enumerate(names)}

    def exec_prefix(self, name: str) -> list[str]:
        """The command prefix that runs a program inside namespace ``name``."""
        return ["ip", "netns", "exec", self.spaces[name].name]

    def up(self) -> Network:
        remove_stale()
        plen = self.subnet.prefixlen
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.host_address}/{plen}", "dev", self.bridge)
        _ip("addr", "add", f"{self.alias_address}/{plen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, ns in enumerate(self.spaces.values()):
            host_end, ns_end = f"mllv{self.pid}x{i}", f"mllv{self.pid}y{i}"
            _ip("netns", "add", ns.name)
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            _ip("link", "set", ns_end, "netns", ns.name)
            _ip("link", "set", host_end, "master", self.bridge)
            _ip("link", "set", host_end, "up")
            _ip("-n", ns.name, "addr", "add", f"{ns.address}/{plen}", "dev", ns_end)
            _ip("-n", ns.name, "link", "set", ns_end, "up")
            _ip("-n", ns.name, "link", "set", "lo", "up")
        return self

    def down(self) -> None:
        """Kill what runs inside, delete the namespaces (their veth pairs go with them) and the
        bridge; quiet about what is already gone."""
        existing = set(namespaces())
        for ns in self.spaces.values():
            if ns.name in existing:
                _kill_inside(ns.name)
                _ip("netns", "del", ns.name, check=False)
        for i in range(len(self.spaces)):
            if f"mllv{self.pid}x{i}" in links():
                _ip("link", "del", f"mllv{self.pid}x{i}", check=False)
        if self.bridge in links():
            _ip("link", "del", self.bridge, check=False)

    def __enter__(self) -> Network:
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc: object) -> None:
        self.down()


@dataclass
class CodeServer:
    """A git daemon serving a bare copy of this checkout at one commit (see :func:`serve_code`)."""

    url: str
    commit: str
    proc: subprocess.Popen
    log: str

    def connections(self) -> list[str]:
        """The client addresses of the connections the daemon logged."""
        with open(self.log, errors="replace") as f:
            return re.findall(r"Connection from \[?([0-9a-f.:]+?)\]?:\d+", f.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def serve_code(repo: str, root: str, address: str, port: int) -> CodeServer:
    """Serve ``repo``'s code over git:// on ``address:port``: a bare clone in ``root``, at
    ``repo``'s HEAD, or at a commit of its working tree when tracked files are modified
    (`git stash create`, which changes nothing in the checkout) so a test pulls what it runs."""
    import time

    def git(*args: str, cwd: str = repo) -> str:
        return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                              text=True, timeout=120).stdout.strip()

    bare = os.path.join(root, "mll-registry.git")
    git("clone", "--quiet", "--bare", repo, bare)
    commit = git("stash", "create") or git("rev-parse", "HEAD")
    git("push", "--quiet", bare, f"{commit}:refs/heads/deployed")
    git("config", "uploadpack.allowFilter", "true", cwd=bare)
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=bare)
    log = os.path.join(root, "git-daemon.log")
    with open(log, "w") as f:
        proc = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", "--verbose",
                                 f"--base-path={root}", f"--listen={address}", f"--port={port}",
                                 root], stdout=f, stderr=subprocess.STDOUT)
    url = f"git://{address}:{port}/mll-registry.git"
    server = CodeServer(url, commit, proc, log)
    deadline = time.monotonic() + 30
    while subprocess.run(["git", "ls-remote", url], capture_output=True, timeout=30).returncode:
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            with open(log, errors="replace") as f:
                raise RuntimeError(f"git daemon did not serve {url}: {f.read()[-2000:]}")
        time.sleep(0.2)
    return server
