"""The four benchmark topologies, each run for direct, Gossamer and Envoy side by side.

1. ``http1``: one hop, plaintext HTTP/1.1 (wrk → proxy → nginx).
2. ``http1-mtls``: two hops with mTLS (wrk → outbound proxy → inbound proxy → nginx).
3. ``grpc-mtls``: gRPC unary through two mTLS hops (h2load → … → grpcio server).
4. ``tcp``: opaque TCP bulk transfer (iperf3 → proxy → iperf3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import backends, envoy, gossamer
from bench.certs import MeshCerts
from bench.procs import ProcGroup

# A target builder starts the target's processes in ``group`` and returns the port the
# load generator should hit; the backend port is given.
TargetBuilder = Callable[[ProcGroup, int, MeshCerts], int]


@dataclass(frozen=True)
class Topology:
    name: str
    title: str
    backend: str  # "nginx" | "grpc" | "iperf3"
    targets: dict[str, TargetBuilder]


def _direct(group: ProcGroup, backend_port: int, certs: MeshCerts) -> int:
    return backend_port


def _envoy_one_hop(group: ProcGroup, backend_port: int, certs: MeshCerts) -> int:
    return envoy.start_envoy(group, "envoy", backend_port)[1]


def _envoy_tcp(group: ProcGroup, backend_port: int, certs: MeshCerts) -> int:
    return envoy.start_envoy(group, "envoy", backend_port, mode="tcp")[1]


def _envoy_pair(http2: bool) -> TargetBuilder:
    def build(group: ProcGroup, backend_port: int, certs: MeshCerts) -> int:
        _, inbound = envoy.start_envoy(
            group, "envoy-inbound", backend_port, http2_upstream=http2, listen_tls=certs.server
        )
        _, outbound = envoy.start_envoy(
            group, "envoy-outbound", inbound, http2_upstream=http2, upstream_tls=certs.client
        )
        return outbound

    return build


def _gossamer_one_hop(group: ProcGroup, backend_port: int, certs: MeshCerts) -> int:
    return gossamer.start_proxy(group, "gossamer", backend_port)


def _gossamer_tcp(group: ProcGroup, backend_port: int, certs: MeshCerts) -> int:
    return gossamer.start_proxy(group, "gossamer", backend_port, opaque=True)


def _gossamer_pair(group: ProcGroup, backend_port: int, certs: MeshCerts) -> int:
    return gossamer.start_pair(group, backend_port, certs)


TOPOLOGIES = [
    Topology(
        "http1",
        "Single hop, plaintext HTTP/1.1",
        "nginx",
        {"direct": _direct, "gossamer": _gossamer_one_hop, "envoy": _envoy_one_hop},
    ),
    Topology(
        "http1-mtls",
        "Two hops with mTLS, HTTP/1.1",
        "nginx",
        {"direct": _direct, "gossamer": _gossamer_pair, "envoy": _envoy_pair(http2=False)},
    ),
    Topology(
        "grpc-mtls",
        "gRPC unary through two mTLS hops",
        "grpc",
        {"direct": _direct, "gossamer": _gossamer_pair, "envoy": _envoy_pair(http2=True)},
    ),
    Topology(
        "tcp",
        "Opaque TCP bulk transfer",
        "iperf3",
        {"direct": _direct, "gossamer": _gossamer_tcp, "envoy": _envoy_tcp},
    ),
]


def start_backend(kind: str, group: ProcGroup) -> int:
    if kind == "nginx":
        return backends.start_nginx(group)
    if kind == "grpc":
        return backends.start_grpc_server(group)
    return backends.start_iperf3(group)


def workdir_for(root: Path, topology: Topology, target: str) -> Path:
    path = root / f"{topology.name}-{target}"
    path.mkdir(parents=True, exist_ok=True)
    return path
