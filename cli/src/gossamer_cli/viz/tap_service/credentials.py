"""The tap service's own mesh identity: the certificate it dials the proxies with.

On a cluster the service obtains it as a proxy does: it generates a key in memory, sends a
CSR with its service account's projected token (audience ``identity.l5d.io``) to the
identity service's ``Certify`` over TLS (the identity service must prove its own name),
checks the answer and renews at about 70% of the lifetime. In local mode it signs its
certificate with the local issuer instead (:func:`~gossamer_cli.viz.tap_identity.
local_tap_credentials`), as the CLI does when it is its own tap service. Either way the key
never touches a file system.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from cryptography import x509
from gossamer_api.proxy import identity_pb2
from gossamer_api.proxy.identity_grpc import IdentityStub
from grpclib.client import Channel
from grpclib.config import Configuration

from gossamer_cli.viz.tap_identity import TapCredentials, local_tap_credentials

__all__ = ["CertifyCredentials", "CredentialSource", "LocalIssuerCredentials", "renew_at"]

CERTIFY_TIMEOUT: Final = 10.0
RENEW_FRACTION: Final = 0.7


class CredentialSource(Protocol):
    async def current(self) -> TapCredentials: ...


def renew_at(not_before: float, not_after: float) -> float:
    """When a certificate valid from ``not_before`` to ``not_after`` should be replaced."""
    return not_before + (not_after - not_before) * RENEW_FRACTION


def _validity(chain_pem: bytes) -> tuple[float, float]:
    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    return leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()


@dataclass
class _Cached:
    credentials: TapCredentials
    renew: float


class LocalIssuerCredentials:
    """Local mode: signed by the local issuer in ``state_dir``, re-signed when due."""

    def __init__(
        self, state_dir: Path, identity: str, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.state_dir = state_dir
        self.identity = identity
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC).timestamp())
        self._cached: _Cached | None = None

    async def current(self) -> TapCredentials:
        now = self._clock()
        if self._cached is None or now >= self._cached.renew:
            when = dt.datetime.fromtimestamp(now, dt.UTC)
            issued = await asyncio.to_thread(
                local_tap_credentials, self.state_dir, self.identity, now=when
            )
            self._cached = _Cached(issued, renew_at(*_validity(issued.chain_pem)))
        return self._cached.credentials


class CertifyCredentials:
    """A cluster: ``Certify`` with the service account token, renewed when due."""

    def __init__(
        self,
        *,
        identity: str,
        identity_addr: str,
        identity_name: str,
        trust_anchors_pem: bytes,
        token_file: Path,
        clock: Callable[[], float] | None = None,
    ) -> None:
        host, sep, port = identity_addr.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"the identity service address wants HOST:PORT, not {identity_addr!r}")
        self.host, self.port = host.strip("[]"), int(port)
        self.identity = identity
        self.identity_name = identity_name
        self.trust_anchors_pem = trust_anchors_pem
        self.token_file = token_file
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC).timestamp())
        self._cached: _Cached | None = None
        self._lock = asyncio.Lock()

    async def current(self) -> TapCredentials:
        async with self._lock:
            if self._cached is None or self._clock() >= self._cached.renew:
                issued = await self._certify()
                self._cached = _Cached(issued, renew_at(*_validity(issued.chain_pem)))
            return self._cached.credentials

    async def _certify(self) -> TapCredentials:
        from gossamer_tls import build_csr, generate_private_key, private_key_to_pem

        key = generate_private_key()
        csr = build_csr(key, self.identity)
        token = await asyncio.to_thread(self.token_file.read_bytes)
        context = ssl.create_default_context(cadata=self.trust_anchors_pem.decode())
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.set_alpn_protocols(["h2"])
        config = Configuration(ssl_target_name_override=self.identity_name)
        channel = Channel(self.host, self.port, ssl=context, config=config)
        try:
            request = identity_pb2.CertifyRequest(
                identity=self.identity, token=token, certificate_signing_request=csr
            )
            response = await IdentityStub(channel).Certify(request, timeout=CERTIFY_TIMEOUT)
        finally:
            channel.close()
        return _checked(response, key_pem=private_key_to_pem(key), identity=self.identity,
                        anchors=self.trust_anchors_pem, now=self._clock())  # fmt: skip


def _checked(
    response: identity_pb2.CertifyResponse,
    *,
    key_pem: bytes,
    identity: str,
    anchors: bytes,
    now: float,
) -> TapCredentials:
    """Refuse an answer whose leaf does not name ``identity``, is not valid now, or does not
    chain to the trust anchors (the proxies would refuse it later, less clearly)."""
    from gossamer_tls import certificates_to_pem, verify_chain

    leaf = x509.load_der_x509_certificate(response.leaf_certificate)
    intermediates = [x509.load_der_x509_certificate(d) for d in response.intermediate_certificates]
    verify_chain(
        leaf,
        intermediates,
        x509.load_pem_x509_certificates(anchors),
        now=dt.datetime.fromtimestamp(now, dt.UTC),
        dns_name=identity,
    )
    return TapCredentials(identity, certificates_to_pem([leaf, *intermediates]), key_pem, anchors)
