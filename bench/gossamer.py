"""Gossamer's proxy as a benchmark target: one worker process, logs at warn, no access log.

Without iptables the outbound listener forwards to a fixed target
(``GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET``), as an ingress-style hop; everything else is the
production proxy.
"""

from __future__ import annotations

import sys

from bench.certs import MeshCerts
from bench.procs import ProcGroup, free_port, wait_for_port


def _base_env(listen: int) -> dict[str, str]:
    return {
        "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR": f"127.0.0.1:{listen}",
        "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
        "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
        "LINKERD2_PROXY_LOG": "warn",
    }


def start_proxy(group: ProcGroup, name: str, upstream_port: int, *, opaque: bool = False) -> int:
    """One proxy forwarding 127.0.0.1:<its port> to 127.0.0.1:upstream_port."""
    port = free_port()
    env = _base_env(port)
    env["GOSSAMER_PROXY_OUTBOUND_FIXED_TARGET"] = f"127.0.0.1:{upstream_port}"
    if opaque:
        env["GOSSAMER_PROXY_OUTBOUND_PORTS_DISABLE_PROTOCOL_DETECTION"] = str(upstream_port)
    group.start(name, [sys.executable, "-m", "gossamer_proxy"], env=env)
    wait_for_port(port)
    return port


def start_pair(group: ProcGroup, backend_port: int, certs: MeshCerts) -> int:
    """Outbound proxy → mTLS → inbound proxy → backend; returns the outbound proxy's port."""
    raise NotImplementedError("the two-hop mTLS pair needs the proxy's mesh mode (Proxy II)")
