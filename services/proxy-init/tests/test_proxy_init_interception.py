"""Acceptance: real iptables (legacy, nft) in throwaway namespaces, real TCP, SO_ORIGINAL_DST.

Topology, built fresh for every test (nothing outside these namespaces is touched):

    pod  eth0 10.77.0.1/24 fd77::1/64  <-- veth -->  peer  eth0 10.77.0.2/24 fd77::2/64

A listener in the pod stands in for the proxy (4140 outbound on loopback, 4143 inbound) and the
app (8080, plus 4191 which is an ignored inbound port); one in the peer stands in for the world
(80 and 4567, an ignored outbound port). Every listener answers each connection with one JSON
line saying which namespace and port accepted it and what SO_ORIGINAL_DST reported, so a test
learns exactly where its connection went.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from gossamer_common.netns import NetNamespace, add_veth, network_namespace
from gossamer_proxy_init.config import parse_args
from gossamer_proxy_init.rules import build_rules
from gossamer_proxy_init.savefile import nat_table

pytestmark = pytest.mark.netns

APP_UID = 5000
PROXY_UID = 2102
POD = {4: "10.77.0.1", 6: "fd77::1"}
PEER = {4: "10.77.0.2", 6: "fd77::2"}
LOOPBACK = {4: "127.0.0.1", 6: "::1"}
MODES = ["legacy", "nft"]
PROXY_INIT_ARGS = [
    "--incoming-proxy-port", "4143", "--outgoing-proxy-port", "4140",
    "--proxy-uid", str(PROXY_UID), "--proxy-gid", str(PROXY_UID),
    "--inbound-ports-to-ignore", "4190,4191", "--outbound-ports-to-ignore", "4567",
]  # fmt: skip

LISTENER = r"""
import json, selectors, socket, struct, sys
tag, binds = sys.argv[1], json.loads(sys.argv[2])
sel = selectors.DefaultSelector()
for host, port in binds:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, port))
    s.listen(64)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)

def original_dst(conn):
    try:
        if conn.family == socket.AF_INET:
            raw = conn.getsockopt(socket.SOL_IP, 80, 16)
            host = socket.inet_ntop(socket.AF_INET, raw[4:8])
            return "%s:%d" % (host, struct.unpack("!H", raw[2:4])[0])
        raw = conn.getsockopt(socket.IPPROTO_IPV6, 80, 28)
        host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        return "[%s]:%d" % (host, struct.unpack("!H", raw[2:4])[0])
    except OSError as exc:
        return "error: %s" % exc

while True:
    for key, _ in sel.select():
        conn, peer = key.fileobj.accept()
        with conn:
            reply = {"ns": tag, "port": conn.getsockname()[1], "orig": original_dst(conn)}
            conn.sendall((json.dumps(reply) + "\n").encode())
"""


def ask(host: str, port: int) -> dict[str, Any]:
    """Connect and read the listener's one-line answer (in a forked child, maybe as another uid)."""
    try:
        with socket.create_connection((host, port), timeout=5) as conn:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    if not data:
        return {"error": "connection closed without an answer"}
    answer: dict[str, Any] = json.loads(data)
    return answer


def hostport(family: int, host: str, port: int) -> str:
    return f"{host}:{port}" if family == 4 else f"[{host}]:{port}"


@dataclass
class PodNet:
    mode: str
    pod: NetNamespace
    peer: NetNamespace

    def proxy_init(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "gossamer_proxy_init", "--iptables-mode", self.mode]
        argv += [*args, "--netns", self.pod.path]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    def install(self, *extra: str) -> None:
        done = self.proxy_init(*PROXY_INIT_ARGS, *extra)
        assert done.returncode == 0, done.stderr

    def save(self, family: int) -> str:
        tool = "iptables" if family == 4 else "ip6tables"
        return self.pod.run([f"{tool}-{self.mode}-save", "-t", "nat"]).stdout

    def tables(self) -> dict[int, str]:
        return {family: nat_table(self.save(family)).normalized() for family in (4, 6)}


def start_listener(
    ns: NetNamespace, tag: str, binds: list[tuple[str, int]]
) -> subprocess.Popen[str]:
    proc = ns.popen(
        [sys.executable, "-c", LISTENER, tag, json.dumps(binds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    if not ready or proc.stdout.readline().strip() != "ready":
        proc.kill()
        proc.wait(timeout=10)
        pytest.fail(
            f"listener in {ns.name} did not start: {proc.stderr.read() if proc.stderr else ''}"
        )
    return proc


@pytest.fixture(params=MODES)
def podnet(request: pytest.FixtureRequest) -> Iterator[PodNet]:
    with network_namespace("gsm-pod-") as pod, network_namespace("gsm-peer-") as peer:
        add_veth(
            pod, peer,
            a_addresses=[f"{POD[4]}/24", f"{POD[6]}/64"],
            b_addresses=[f"{PEER[4]}/24", f"{PEER[6]}/64"],
        )  # fmt: skip
        yield PodNet(request.param, pod, peer)


@pytest.fixture
def listeners(podnet: PodNet) -> Iterator[None]:
    pod_binds = [("127.0.0.1", 4140), ("::1", 4140)]
    pod_binds += [(host, port) for host in ("0.0.0.0", "::") for port in (4143, 8080, 4191)]
    peer_binds = [(host, port) for host in ("0.0.0.0", "::") for port in (80, 4567)]
    procs = [start_listener(podnet.pod, "pod", pod_binds)]
    try:
        procs.append(start_listener(podnet.peer, "peer", peer_binds))
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.mark.usefixtures("listeners")
@pytest.mark.parametrize("family", [4, 6])
def test_traffic_goes_through_the_proxy_ports(podnet: PodNet, family: int) -> None:
    pod, peer = podnet.pod, podnet.peer
    # Before proxy-init nothing is redirected.
    assert pod.call(ask, PEER[family], 80, uid=APP_UID, gid=APP_UID)["ns"] == "peer"
    podnet.install()

    # Outbound from an app user, to any port, lands on 4140 with the original destination.
    for port in (80, 12345):
        got = pod.call(ask, PEER[family], port, uid=APP_UID, gid=APP_UID)
        assert got == {"ns": "pod", "port": 4140, "orig": hostport(family, PEER[family], port)}

    # The proxy's own traffic (by uid, or by gid alone) goes straight out.
    got = pod.call(ask, PEER[family], 80, uid=PROXY_UID, gid=PROXY_UID)
    assert (got["ns"], got["port"]) == ("peer", 80)
    got = pod.call(ask, PEER[family], 80, uid=APP_UID, gid=PROXY_UID)
    assert (got["ns"], got["port"]) == ("peer", 80)

    # Loopback traffic and ignored outbound ports are not redirected.
    got = pod.call(ask, LOOPBACK[family], 8080, uid=APP_UID, gid=APP_UID)
    assert (got["ns"], got["port"]) == ("pod", 8080)
    got = pod.call(ask, PEER[family], 4567, uid=APP_UID, gid=APP_UID)
    assert (got["ns"], got["port"]) == ("peer", 4567)

    # Inbound lands on 4143 with the original destination; ignored inbound ports do not.
    got = peer.call(ask, POD[family], 8080)
    assert got == {"ns": "pod", "port": 4143, "orig": hostport(family, POD[family], 8080)}
    got = peer.call(ask, POD[family], 4191)
    assert (got["ns"], got["port"]) == ("pod", 4191)


@pytest.mark.usefixtures("listeners")
def test_ignored_subnets_skip_inbound_only(podnet: PodNet) -> None:
    podnet.install("--subnets-to-ignore", "10.77.0.0/24,fd77::/64")
    for family in (4, 6):
        got = podnet.peer.call(ask, POD[family], 8080)
        assert (got["ns"], got["port"]) == ("pod", 8080)  # source is in the ignored subnet
        got = podnet.pod.call(ask, PEER[family], 80, uid=APP_UID, gid=APP_UID)
        assert (got["ns"], got["port"]) == ("pod", 4140)  # outbound is unaffected


@pytest.mark.usefixtures("listeners")
def test_ipv6_off_leaves_ip6tables_alone(podnet: PodNet) -> None:
    empty6 = podnet.tables()[6]
    podnet.install("--ipv6=false")
    assert podnet.tables()[6] == empty6
    got = podnet.pod.call(ask, PEER[6], 80, uid=APP_UID, gid=APP_UID)
    assert (got["ns"], got["port"]) == ("peer", 80)
    got = podnet.pod.call(ask, PEER[4], 80, uid=APP_UID, gid=APP_UID)
    assert (got["ns"], got["port"]) == ("pod", 4140)


def test_rules_match_the_builder_and_second_run_changes_nothing(podnet: PodNet) -> None:
    podnet.install()
    first = podnet.tables()
    config = parse_args(PROXY_INIT_ARGS)
    for family in (4, 6):
        table = nat_table(podnet.save(family))
        expected = sorted(build_rules(config, family).lines())
        assert sorted(rule.line() for rule in table.rules) == expected
    podnet.install()
    assert podnet.tables() == first


def test_rerun_with_new_flags_replaces_rules(podnet: PodNet) -> None:
    podnet.install("--outbound-ports-to-ignore", "443")
    podnet.install()
    saved = podnet.save(4)
    assert "ignore-port-443" not in saved
    assert saved.count("install-proxy-init-output") == 1


def test_cleanup_restores_the_empty_table(podnet: PodNet) -> None:
    before = podnet.tables()
    podnet.install("--subnets-to-ignore", "10.0.0.0/8,fd00::/8")
    assert podnet.tables() != before
    done = podnet.proxy_init("--cleanup")
    assert done.returncode == 0, done.stderr
    assert podnet.tables() == before
    again = podnet.proxy_init("--cleanup")  # nothing left to remove is not an error
    assert again.returncode == 0, again.stderr
    assert "no proxy-init rules to remove" in again.stderr


@pytest.mark.parametrize(
    "bad",
    [
        ["--outbound-ports-to-ignore", "70000"],
        ["--subnets-to-ignore", "10.0.0.0/40"],
        ["--iptables-mode", "ebpf"],
    ],
)
def test_invalid_flags_change_nothing(podnet: PodNet, bad: list[str]) -> None:
    podnet.install()
    installed = podnet.tables()
    done = podnet.proxy_init(*PROXY_INIT_ARGS, "--outbound-ports-to-ignore", "1", *bad)
    assert done.returncode == 2
    assert "invalid arguments" in done.stderr
    assert podnet.tables() == installed


def test_simulate_changes_nothing_and_logs_go_to_stderr(podnet: PodNet) -> None:
    before = podnet.tables()
    done = podnet.proxy_init(*PROXY_INIT_ARGS, "--simulate")
    assert done.returncode == 0, done.stderr
    assert "-j REDIRECT --to-ports 4143" in done.stdout
    assert podnet.tables() == before


def test_logs_dump_before_and_after_as_json(podnet: PodNet) -> None:
    done = podnet.proxy_init(*PROXY_INIT_ARGS, "--log-format", "json", "--ipv6=false")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines()]
    names = [e["event"] for e in events]
    assert names == [
        "entered network namespace",
        "current nat table",
        "applying",
        "resulting nat table",
    ]
    assert "PROXY_INIT_OUTPUT" not in events[1]["output"]
    assert "proxy-init/redirect-all-outgoing-to-proxy-port" in events[3]["output"]


def test_runs_inside_ip_netns_exec_too(podnet: PodNet) -> None:
    """Without --netns, as the init container runs it: in the namespace it was started in."""
    argv = [sys.executable, "-m", "gossamer_proxy_init", "--iptables-mode", podnet.mode]
    done = podnet.pod.run([*argv, *PROXY_INIT_ARGS], check=False)
    assert done.returncode == 0, done.stderr
    assert "PROXY_INIT_REDIRECT" in podnet.save(6)
    assert os.path.exists(podnet.pod.path)
