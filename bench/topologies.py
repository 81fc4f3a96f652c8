"""The benchmark topologies, each run for direct, Gossamer and Envoy side by side.

1. ``http1``: one hop, plaintext HTTP/1.1 (wrk → proxy → nginx); nginx as a proxy too.
2. ``http1-mtls``: two hops with mTLS (wrk → outbound proxy → inbound proxy → nginx).
3. ``http1-mtls-cold``: the same two hops, fresh proxies every round and no warm-up: p99 at
   c=64 while 64 new client connections make the proxies open their mesh connections.
4. ``grpc-mtls``: gRPC unary through two mTLS hops (h2load → … → grpcio server).
5. ``tcp``: opaque TCP bulk transfer (iperf3 → proxy → iperf3).
6. ``tap``: one hop with the mesh identity, tap served but nobody tapping (``gossamer``) against
   tap off (``tap-off``), and ``tapped``: tap served while a tap client observes every request
   of its c=64 row (:mod:`bench.tapping`).
7. ``multicore``: a scaling check, not a per-core ratio. Gossamer at ``LINKERD2_PROXY_CORES=2``
   against Gossamer at 1 core and Envoy with ``--concurrency 2`` (and 1, Envoy's own scaling
   as the yardstick), one hop plaintext and two hops with mTLS, c=64. A 2-core proxy needs
   both CPUs of the machine, so nothing is pinned (:data:`~bench.procs.UNPINNED`) and wrk
   and nginx compete with the proxy for them. Its figures go to a section of their own and
   to no goal of issue 21.

With a baseline revision (``--baseline-rev``), every topology also runs that revision's
proxy as the ``baseline`` target, built the same way as ``gossamer`` from its own venv.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench import backends, envoy, gossamer
from bench.certs import MeshCerts
from bench.procs import PINNED, UNPINNED, Placement, ProcGroup
from bench.scaling import ScalingCheck, ScalingSet

#: The cores of the multi-core topology's proxies: the machine's CPUs.
MULTICORE_CORES = 2

# A target builder starts the target's processes in ``group`` and returns the port the
# load generator should hit; the backend port is given.
TargetBuilder = Callable[[ProcGroup, int, MeshCerts], int]


class ProxyBuilder(Protocol):
    """Gossamer's builder also takes the interpreter whose ``gossamer_proxy`` runs."""

    def __call__(
        self, group: ProcGroup, backend_port: int, certs: MeshCerts, *, python: str
    ) -> int: ...


@dataclass(frozen=True)
class Topology:
    name: str
    title: str
    backend: str  # "nginx" | "grpc" | "iperf3"
    targets: dict[str, TargetBuilder]  # every target but Gossamer's
    proxy: ProxyBuilder  # Gossamer's (current or baseline)
    #: Fresh processes each round, no warm-up, c=64 only.
    cold: bool = False
    #: The rows (connection counts) of a warm request topology.
    connections: tuple[int, ...] = (1, 16, 64)
    #: Targets that run only the c=64 row, with a tap client observing it.
    tapped: frozenset[str] = frozenset()
    #: Where its processes run: pinned (the per-core topologies) or not (multi-core).
    placement: Placement = PINNED
    #: Multi-core topologies only: the many-core ÷ one-core comparisons, in their own section.
    scaling: ScalingCheck | None = None

    def rows_of(self, target: str) -> tuple[int, ...]:
        return (64,) if target in self.tapped else self.connections

    def builders(self, baseline_python: str | None = None) -> dict[str, TargetBuilder]:
        """Every target of this topology in run order; ``baseline`` when one is given."""
        found: dict[str, TargetBuilder] = {}
        if "direct" in self.targets:
            found["direct"] = self.targets["direct"]
        found["gossamer"] = functools.partial(self.proxy, python=sys.executable)
        found |= {name: b for name, b in self.targets.items() if name != "direct"}
        if baseline_python is not None:
            found["baseline"] = functools.partial(self.proxy, python=baseline_python)
        return found


def _direct(group: ProcGroup, backend_port: int, certs: MeshCerts) -> int:
    return backend_port


def _nginx_proxy(group: ProcGroup, backend_port: int, certs: MeshCerts) -> int:
    return backends.start_nginx_proxy(group, backend_port)


def _envoy_one_hop(group: ProcGroup, backend_port: int, certs: MeshCerts) -> int:
    return envoy.start_envoy(group, "envoy", backend_port)[1]


def _envoy_tcp(group: ProcGroup, backend_port: int, certs: MeshCerts) -> int:
    return envoy.start_envoy(group, "envoy", backend_port, mode="tcp")[1]


def _envoy_pair(http2: bool, concurrency: int = 1) -> TargetBuilder:
    def build(group: ProcGroup, backend_port: int, certs: MeshCerts) -> int:
        _, inbound = envoy.start_envoy(
            group,
            "envoy-inbound",
            backend_port,
            http2_upstream=http2,
            listen_tls=certs.server,
            concurrency=concurrency,
        )
        _, outbound = envoy.start_envoy(
            group,
            "envoy-outbound",
            inbound,
            http2_upstream=http2,
            upstream_tls=certs.client,
            concurrency=concurrency,
        )
        return outbound

    return build


def _envoy_workers(concurrency: int) -> TargetBuilder:
    def build(group: ProcGroup, backend_port: int, certs: MeshCerts) -> int:
        return envoy.start_envoy(group, "envoy", backend_port, concurrency=concurrency)[1]

    return build


def _gossamer_cores(cores: int, *, two_hops: bool) -> ProxyBuilder:
    """Gossamer with ``LINKERD2_PROXY_CORES=cores``: one hop, or the mTLS pair."""

    def build(group: ProcGroup, backend_port: int, certs: MeshCerts, *, python: str) -> int:
        if two_hops:
            return gossamer.start_pair(group, backend_port, certs, python=python, cores=cores)
        return gossamer.start_proxy(group, "gossamer", backend_port, python=python, cores=cores)

    return build


def _current(builder: ProxyBuilder) -> TargetBuilder:
    return functools.partial(builder, python=sys.executable)


def _gossamer_one_hop(group: ProcGroup, backend_port: int, certs: MeshCerts, *, python: str) -> int:
    return gossamer.start_proxy(group, "gossamer", backend_port, python=python)


def _gossamer_tcp(group: ProcGroup, backend_port: int, certs: MeshCerts, *, python: str) -> int:
    return gossamer.start_proxy(group, "gossamer", backend_port, opaque=True, python=python)


def _tap_off(group: ProcGroup, backend_port: int, certs: MeshCerts) -> int:
    return gossamer.start_tap_proxy(group, backend_port, certs, tap=False)


def _gossamer_tap_on(group: ProcGroup, backend_port: int, certs: MeshCerts, *, python: str) -> int:
    return gossamer.start_tap_proxy(group, backend_port, certs, tap=True, python=python)


def _tapped(group: ProcGroup, backend_port: int, certs: MeshCerts) -> int:
    return gossamer.start_tap_proxy(group, backend_port, certs, tap=True)


def _gossamer_pair(group: ProcGroup, backend_port: int, certs: MeshCerts, *, python: str) -> int:
    return gossamer.start_pair(group, backend_port, certs, python=python)


TOPOLOGIES = [
    Topology(
        "http1",
        "Single hop, plaintext HTTP/1.1",
        "nginx",
        {"direct": _direct, "envoy": _envoy_one_hop, "nginx": _nginx_proxy},
        _gossamer_one_hop,
    ),
    Topology(
        "http1-mtls",
        "Two hops with mTLS, HTTP/1.1",
        "nginx",
        {"direct": _direct, "envoy": _envoy_pair(http2=False)},
        _gossamer_pair,
    ),
    Topology(
        "http1-mtls-cold",
        "Two hops with mTLS, HTTP/1.1, cold: fresh proxies, no warm-up",
        "nginx",
        {"envoy": _envoy_pair(http2=False)},
        _gossamer_pair,
        cold=True,
    ),
    Topology(
        "grpc-mtls",
        "gRPC unary through two mTLS hops",
        "grpc",
        {"direct": _direct, "envoy": _envoy_pair(http2=True)},
        _gossamer_pair,
    ),
    Topology(
        "tcp",
        "Opaque TCP bulk transfer",
        "iperf3",
        {"direct": _direct, "envoy": _envoy_tcp},
        _gossamer_tcp,
    ),
    Topology(
        "tap",
        "Tap: one hop with identity, tap served but idle, against tap off and tapped at c=64",
        "nginx",
        {"tap-off": _tap_off, "tapped": _tapped},
        _gossamer_tap_on,
        connections=(1, 64),
        tapped=frozenset({"tapped"}),
    ),
    Topology(
        "multicore",
        f"Multi-core scaling check: Gossamer at {MULTICORE_CORES} cores against 1 core and "
        f"Envoy at {MULTICORE_CORES} workers, nothing pinned",
        "nginx",
        {
            "gossamer-1core": _current(_gossamer_cores(1, two_hops=False)),
            "envoy": _envoy_workers(MULTICORE_CORES),
            "envoy-1worker": _envoy_workers(1),
            "gossamer-mtls": _current(_gossamer_cores(MULTICORE_CORES, two_hops=True)),
            "gossamer-mtls-1core": _current(_gossamer_cores(1, two_hops=True)),
            "envoy-mtls": _envoy_pair(http2=False, concurrency=MULTICORE_CORES),
            "envoy-mtls-1worker": _envoy_pair(http2=False),
        },
        _gossamer_cores(MULTICORE_CORES, two_hops=False),
        connections=(64,),
        placement=UNPINNED,
        scaling=ScalingCheck(
            MULTICORE_CORES,
            UNPINNED.describe(),
            (
                ScalingSet(
                    "single hop, plaintext HTTP/1.1",
                    "gossamer",
                    "gossamer-1core",
                    "envoy",
                    "envoy-1worker",
                ),
                ScalingSet(
                    "two hops with mTLS, HTTP/1.1",
                    "gossamer-mtls",
                    "gossamer-mtls-1core",
                    "envoy-mtls",
                    "envoy-mtls-1worker",
                ),
            ),
        ),
    ),
]


def placement_note(topologies: Sequence[Topology]) -> str:
    """Where the chosen topologies' processes ran, for the report's header."""
    by_placement: dict[Placement, list[str]] = {}
    for topology in topologies:
        by_placement.setdefault(topology.placement, []).append(topology.name)
    if len(by_placement) == 1:
        return next(iter(by_placement)).describe()
    return "; ".join(
        f"{placement.describe()} ({', '.join(names)})" for placement, names in by_placement.items()
    )


def start_backend(kind: str, group: ProcGroup) -> int:
    if kind == "nginx":
        return backends.start_nginx(group)
    if kind == "grpc":
        return backends.start_grpc_server(group)
    return backends.start_iperf3(group)


def workdir_for(root: Path, topology: Topology, target: str, round_index: int = 0) -> Path:
    suffix = f"-r{round_index}" if round_index else ""
    path = root / f"{topology.name}-{target}{suffix}"
    path.mkdir(parents=True, exist_ok=True)
    return path
