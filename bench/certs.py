"""A throwaway mesh PKI for the mTLS topologies: one anchor, one issuer, two leaves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.envoy import TlsFiles

CLIENT_ID = "client.bench.serviceaccount.identity.gossamer.cluster.local"
SERVER_ID = "server.bench.serviceaccount.identity.gossamer.cluster.local"


@dataclass(frozen=True)
class MeshCerts:
    client: TlsFiles
    server: TlsFiles


def make_mesh_certs(workdir: Path) -> MeshCerts:
    raise NotImplementedError  # filled in once gossamer_tls lands
