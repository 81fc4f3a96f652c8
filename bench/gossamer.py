"""Gossamer's proxy as a benchmark target: one process, logs at warn, no access log.

Without iptables the outbound listener forwards to a fixed target
(``GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET``), as an ingress-style hop; everything else is the
production proxy. The two-hop topologies add the mesh: static identities from the bench PKI,
mTLS between the proxies, the inbound proxy forwarding to a fixed backend. The tap topology
runs one hop with an identity, so that the proxy can serve tap (:func:`start_tap_proxy`).
The multi-core topology sets ``LINKERD2_PROXY_CORES`` (``cores``): a parent and its workers,
started once the admin server's ``/ready`` answers 200, which it does when every worker
accepts. A pair's admin ports go to ``group.info["admin_ports"]``, so that the bench can
read the proxies' own count of failed responses (:func:`failed_responses`).
"""

from __future__ import annotations

import contextlib
import http.client
import re
import sys
import time
from collections import Counter

from bench.certs import MeshCerts, TlsFiles
from bench.procs import ProcGroup, free_port, wait_for_port

#: A proxy's start (imports, identity check) on a very busy 2-core machine can take long.
START_TIMEOUT = 60.0


def _base_env(listen: int, admin: int, cores: int | None) -> dict[str, str]:
    env = {
        "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR": f"127.0.0.1:{listen}",
        "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
        "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": f"127.0.0.1:{admin}",
        "LINKERD2_PROXY_LOG": "warn",
    }
    if cores is not None:
        env["LINKERD2_PROXY_CORES"] = str(cores)
    return env


def _ready(admin: int) -> bool:
    with contextlib.suppress(OSError, http.client.HTTPException):
        connection = http.client.HTTPConnection("127.0.0.1", admin, timeout=2.0)
        try:
            connection.request("GET", "/ready")
            return connection.getresponse().status == 200
        finally:
            connection.close()
    return False


def wait_until_ready(group: ProcGroup, admin: int, timeout: float) -> None:
    """Until the proxy's admin ``/ready`` answers 200: with workers, once every one accepts."""
    deadline = time.monotonic() + timeout
    while not _ready(admin):
        group.check_alive()
        if time.monotonic() >= deadline:
            raise TimeoutError(f"the proxy with admin port {admin} not ready after {timeout}s")
        time.sleep(0.1)


def start_proxy(
    group: ProcGroup,
    name: str,
    upstream_port: int,
    *,
    opaque: bool = False,
    python: str = sys.executable,
    timeout: float = START_TIMEOUT,
    cores: int | None = None,
) -> int:
    """One proxy forwarding 127.0.0.1:<its port> to 127.0.0.1:upstream_port.

    ``python`` is the interpreter of the venv whose proxy runs (a baseline revision's);
    ``timeout`` bounds its start (longer under valgrind); ``cores``, when given, is its
    ``LINKERD2_PROXY_CORES``.
    """
    port, admin = free_port(), free_port()
    env = _base_env(port, admin, cores)
    env["GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET"] = f"127.0.0.1:{upstream_port}"
    if opaque:
        env["GOSSAMER_PROXY_OUTBOUND_PORTS_DISABLE_PROTOCOL_DETECTION"] = str(upstream_port)
    group.start(name, [python, "-m", "gossamer_proxy"], env=env)
    wait_for_port(port, timeout)
    if cores is not None:
        wait_until_ready(group, admin, timeout)
    return port


def _static_identity(side: TlsFiles) -> dict[str, str]:
    """The proxy's static identity mode: a fixed chain and key instead of calling Certify."""
    return {
        "GOSSAMER_PROXY_IDENTITY_CERT_FILE": str(side.cert),
        "GOSSAMER_PROXY_IDENTITY_KEY_FILE": str(side.key),
        "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": side.ca.read_text(),
        "LINKERD2_PROXY_IDENTITY_LOCAL_NAME": side.identity,
    }


def start_pair(
    group: ProcGroup,
    backend_port: int,
    certs: MeshCerts,
    *,
    python: str = sys.executable,
    timeout: float = START_TIMEOUT,
    cores: int | None = None,
) -> int:
    """Outbound proxy → mTLS → inbound proxy → backend; returns the outbound proxy's port.

    The two proxies play a client pod's and a server pod's sidecars without iptables or a
    control plane: the outbound one sends everything to the inbound one's listener with mTLS,
    expecting the server's identity (as a discovery TLS hint would); the inbound one
    terminates mTLS with the server's certificate and forwards plaintext to the backend.
    ``cores``, when given, is each proxy's ``LINKERD2_PROXY_CORES``.
    """
    inbound, server_admin = free_port(), free_port()
    server_env = _base_env(free_port(), server_admin, cores)
    server_env |= {
        "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": f"127.0.0.1:{inbound}",
        "GOSSAMER_PROXY_INBOUND_FIXED_TARGET": f"127.0.0.1:{backend_port}",
        **_static_identity(certs.server),
    }
    group.start("gossamer-inbound", [python, "-m", "gossamer_proxy"], env=server_env)
    wait_for_port(inbound, timeout)

    outbound, client_admin = free_port(), free_port()
    client_env = _base_env(outbound, client_admin, cores)
    client_env |= {
        "GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET": f"127.0.0.1:{inbound}",
        "GOSSAMER_PROXY_OUTBOUND_FIXED_IDENTITY": certs.server.identity,
        **_static_identity(certs.client),
    }
    group.start("gossamer-outbound", [python, "-m", "gossamer_proxy"], env=client_env)
    wait_for_port(outbound, timeout)
    if cores is not None:
        wait_until_ready(group, server_admin, timeout)
        wait_until_ready(group, client_admin, timeout)
    group.info["admin_ports"] = f"gossamer-outbound={client_admin},gossamer-inbound={server_admin}"
    return outbound


def admin_ports(info: dict[str, str]) -> dict[str, int]:
    """The admin port of each proxy of a pair, by process name (none for other targets)."""
    pairs = (entry.split("=", 1) for entry in info.get("admin_ports", "").split(",") if entry)
    return {name: int(port) for name, port in pairs}


_SAMPLE = re.compile(r"^response_total\{(?P<labels>.*)\} (?P<value>[0-9.e+]+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
#: At most this many bytes of a proxy's /metrics page are read.
METRICS_LIMIT = 16 << 20


def parse_failed_responses(text: str) -> Counter[str]:
    """``response_total{classification="failure"}`` of a /metrics page, by reason.

    The reason is the grpc-status when there is one, else the :status or the error label
    (``grpc_status=14``, ``status_code=503``, ``error=…``).
    """
    failed: Counter[str] = Counter()
    for line in text.splitlines():
        sample = _SAMPLE.match(line)
        if sample is None:
            continue
        labels = dict(_LABEL.findall(sample.group("labels")))
        if labels.get("classification") != "failure":
            continue
        reason = next(
            (f"{k}={labels[k]}" for k in ("grpc_status", "error", "status_code") if labels.get(k)),
            "unknown",
        )
        failed[reason] += int(float(sample.group("value")))
    return failed


def failed_responses(admin: int, timeout: float = 10.0) -> Counter[str]:
    """The failed responses a proxy counted since it started, by reason (its /metrics)."""
    connection = http.client.HTTPConnection("127.0.0.1", admin, timeout=timeout)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read(METRICS_LIMIT + 1)
    finally:
        connection.close()
    if response.status != 200 or len(body) > METRICS_LIMIT:
        raise RuntimeError(
            f"the proxy's /metrics on port {admin}: status {response.status}, {len(body)} bytes"
        )
    return parse_failed_responses(body.decode("utf-8", errors="replace"))


def start_tap_proxy(
    group: ProcGroup,
    backend_port: int,
    certs: MeshCerts,
    *,
    tap: bool,
    python: str = sys.executable,
) -> int:
    """One hop with the mesh identity on, tap served (``tap``) or not; returns its port.

    wrk → outbound listener → nginx, as ``http1``, but the proxy holds the server's static
    identity, which the tap server needs. With ``tap`` it serves ``Tap/Observe`` on its
    control port to the tap identity alone; the port goes to ``group.info["tap_port"]``.
    """
    port = free_port()
    env = _base_env(port, free_port(), None) | _static_identity(certs.server)
    env["GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET"] = f"127.0.0.1:{backend_port}"
    if tap:
        control = free_port()
        env["LINKERD2_PROXY_TAP_SVC_NAME"] = certs.tap.identity
        env["LINKERD2_PROXY_CONTROL_LISTEN_ADDR"] = f"127.0.0.1:{control}"
        group.info |= {
            "tap_port": str(control),
            "tap_server_name": certs.server.identity,
            "tap_ca": str(certs.tap.ca),
            "tap_cert": str(certs.tap.cert),
            "tap_key": str(certs.tap.key),
        }
    group.start("gossamer-tap" if tap else "gossamer", [python, "-m", "gossamer_proxy"], env=env)
    wait_for_port(port, START_TIMEOUT)
    if tap:
        wait_for_port(int(group.info["tap_port"]), START_TIMEOUT)
    return port
