"""The test network of the production test (tests/netns.py): a namespace reaches the bridge
address and nothing of the host's loopback, and it is torn down even when the test fails."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from netns import Network, links, namespaces, network_unavailable, remove_stale

PROBE = """
import socket, sys
for host, port in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        print(host, "open")
    except OSError:
        print(host, "unreachable")
"""


@pytest.fixture(autouse=True)
def _root() -> None:
    if why := network_unavailable():
        from conftest import missing_asset

        missing_asset(why, "run the tests as root on Linux with iproute2, as CI does")


def _listen(host: str) -> socket.socket:
    s = socket.socket()
    s.bind((host, 0))
    s.listen()
    return s


def test_a_namespace_reaches_only_the_bridge_and_is_torn_down_when_the_test_fails():
    sleeper = None
    with pytest.raises(RuntimeError, match="the test failed"), Network(["a", "b"]) as net:
        made = [ns.name for ns in net.spaces.values()]
        assert set(made) <= set(namespaces()) and net.bridge in links()
        on_bridge, on_loopback = _listen(net.host_address), _listen("127.0.0.1")
        with on_bridge, on_loopback:
            args = [net.host_address, str(on_bridge.getsockname()[1]),
                    "127.0.0.1", str(on_loopback.getsockname()[1])]
            out = subprocess.run([*net.exec_prefix("a"), sys.executable, "-c", PROBE, *args],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
            assert out.split("\n")[:2] == [f"{net.host_address} open", "127.0.0.1 unreachable"]
            # from the host itself both are open: the namespace, not the probe, makes the difference
            out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                                 text=True, timeout=60, check=True).stdout
            assert out.split("\n")[:2] == [f"{net.host_address} open", "127.0.0.1 open"]
        sleeper = subprocess.Popen([*net.exec_prefix("b"), "sleep", "300"])
        raise RuntimeError("the test failed")
    assert not set(made) & set(namespaces())
    assert net.bridge not in links() and not [x for x in links() if str(net.pid) in x]
    assert sleeper is not None and sleeper.wait(10) == -9  # what ran inside was killed


def test_a_network_left_by_a_killed_run_is_removed_by_the_next():
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale, bridge = f"mllns{dead.pid}-0", f"mllbr{dead.pid}"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        remove_stale()
        assert stale not in namespaces() and bridge not in links()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
