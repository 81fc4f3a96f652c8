"""The proxy's identity client: an in-memory key, Certify, renewal, and the TLS contexts.

At start the proxy generates an ECDSA P-256 key that never leaves its memory, then calls
``io.linkerd.proxy.identity.Identity/Certify`` with a DER CSR and the projected
service-account token (linkerd-wire.md §2). The response is checked (:mod:`.certify`) and
installed; :attr:`IdentityClient.ready` is set once the first certificate is in place (the
admin ``/ready`` waits on it). The next refresh is scheduled at ~70% of the lifetime and a
failure is retried with jittered backoff (:mod:`.schedule`). While the identity service is
down the current certificate stays in use until it expires.

The identity service is reached in plaintext when ``LINKERD2_PROXY_IDENTITY_SVC_NAME`` is
unset (local mode, or a loopback address: Linkerd skips TLS for ``localhost``), otherwise
over TLS with the trust anchors as roots and the service's identity as the expected server
name (:mod:`.channels`). The call is made with grpclib; a fresh channel per Certify carries
the current certificate, if any, as client certificate. The key, the CSR and the checks of
the answer are made in a short-lived helper process (:mod:`.credential_helper`), so that
``cryptography`` never stays resident in the sidecar.

Unlike Linkerd's ``linkerd2-proxy-identity`` bootstrap, nothing is written to
``LINKERD2_PROXY_IDENTITY_DIR``: that bootstrap exists only because Linkerd generates the
key in a separate process before ``exec``; Gossamer's proxy generates it in-process
(design.md §3), so the key need not touch even a memory-backed volume.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from gossamer_common.metrics import Counter, Gauge, Registry

from gossamer_proxy.mesh import credential_helper
from gossamer_proxy.mesh.backoff import UniformSource
from gossamer_proxy.mesh.certify import CertifyResponseError, validate_certify_response
from gossamer_proxy.mesh.control_address import ControlAddressError, split_host_port
from gossamer_proxy.mesh.credential_helper import CredentialHelperError
from gossamer_proxy.mesh.schedule import CertState, RenewalSchedule
from gossamer_proxy.mesh.settings import MeshSettings
from gossamer_proxy.mesh.tls_contexts import (
    Credentials,
    client_context,
    server_context,
)

__all__ = ["IdentityClient", "IdentityConfig", "IdentityConfigError", "IdentityMetrics"]

log = structlog.get_logger("gossamer.proxy.identity")

CERTIFY_TIMEOUT = 10.0


class IdentityConfigError(ValueError):
    """The identity environment is incomplete or unusable."""


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    local_name: str
    trust_anchors_pem: str
    token_file: Path
    svc_addr: str
    svc_name: str | None = None
    min_refresh: float = 10.0
    max_refresh: float = 86400.0
    retry_max: float = 60.0

    @classmethod
    def from_settings(cls, settings: MeshSettings) -> IdentityConfig:
        missing = [
            env
            for env, value in (
                ("LINKERD2_PROXY_IDENTITY_LOCAL_NAME", settings.identity_local_name),
                ("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", settings.identity_trust_anchors),
                ("LINKERD2_PROXY_IDENTITY_SVC_ADDR", settings.identity_svc_addr),
            )
            if not value
        ]
        if missing:
            raise IdentityConfigError(f"identity is enabled but {', '.join(missing)} unset")
        assert settings.identity_local_name is not None
        assert settings.identity_trust_anchors is not None
        assert settings.identity_svc_addr is not None
        return cls(
            local_name=settings.identity_local_name,
            trust_anchors_pem=settings.identity_trust_anchors,
            token_file=Path(settings.identity_token_file),
            svc_addr=settings.identity_svc_addr,
            svc_name=settings.identity_svc_name,
            min_refresh=settings.identity_min_refresh,
            max_refresh=settings.identity_max_refresh,
        )


def check_trust_anchors(trust_anchors_pem: str) -> None:
    """Refuse trust anchors that are not PEM certificates, without loading ``cryptography``."""
    if "-----BEGIN CERTIFICATE-----" not in trust_anchors_pem:
        raise IdentityConfigError(
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS must hold PEM certificates (the text, "
            "not a path)"
        )
    try:
        ssl.create_default_context(cadata=trust_anchors_pem)
    except (ssl.SSLError, ValueError) as exc:
        raise IdentityConfigError(
            f"LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS: certificates do not load: {exc}"
        ) from None


class IdentityMetrics:
    """``identity_cert_expiration_timestamp_seconds`` and ``identity_cert_refresh_count``."""

    def __init__(self, registry: Registry) -> None:
        self.expiration: Gauge = registry.gauge(
            "identity_cert_expiration_timestamp_seconds",
            "Expiry of the proxy's current certificate, in seconds since the epoch.",
        )
        self.refreshes: Counter = registry.counter(
            "identity_cert_refresh_count", "Certificates installed since the proxy started."
        )


class IdentityClient:
    """Obtains and renews the proxy's certificate; hands out TLS contexts built from it."""

    def __init__(
        self,
        config: IdentityConfig,
        *,
        metrics: IdentityMetrics | None = None,
        rng: UniformSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        check_trust_anchors(config.trust_anchors_pem)
        try:
            split_host_port(config.svc_addr)
        except ControlAddressError as exc:
            raise IdentityConfigError(f"LINKERD2_PROXY_IDENTITY_SVC_ADDR: {exc}") from None
        # The key and its CSR, made by the first Certify and kept for every renewal.
        self._key_and_csr: tuple[bytes, bytes] | None = None
        self._metrics = metrics
        self._rng = rng or random.Random()  # noqa: S311 - retry jitter, not cryptography
        self._clock = clock
        self._schedule = RenewalSchedule(
            min_refresh=config.min_refresh,
            max_refresh=config.max_refresh,
            retry_max=config.retry_max,
        )
        self.credentials: Credentials | None = None
        self.ready = asyncio.Event()
        #: The last error from the identity service, for logs and diagnostics.
        self.last_error: str | None = None

    @property
    def local_name(self) -> str:
        return self.config.local_name

    def state(self) -> CertState:
        return self._schedule.state(self._clock())

    async def run(self) -> None:
        """Certify, then renew forever (cancel the task to stop)."""
        while True:
            delay = await self.refresh()
            await asyncio.sleep(delay)

    async def refresh(self) -> float:
        """One Certify attempt; installs the result and returns the delay to the next one."""
        from gossamer_proxy.mesh.rpc import RpcError  # with grpclib: certify mode only

        try:
            credentials = await self._certify()
        except (RpcError, CertifyResponseError, CredentialHelperError, OSError) as exc:
            self.last_error = str(exc)
            delay = self._schedule.on_failure(self._clock(), self._rng)
            log.warning(
                "identity_certify_failed",
                error=self.last_error,
                retry_in=round(delay, 3),
                keeping_certificate=self.credentials is not None,
                state=self.state().value,
            )
            return delay
        self._install(credentials)
        return self._schedule.on_certified(
            self._clock(), credentials.not_before, credentials.not_after
        )

    def _install(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self.last_error = None
        if self._metrics is not None:
            self._metrics.expiration.set(credentials.not_after)
            self._metrics.refreshes.inc()
        log.info(
            "identity_certified",
            identity=credentials.identity,
            not_after=dt.datetime.fromtimestamp(credentials.not_after, dt.UTC).isoformat(),
        )
        self.ready.set()

    async def _certify(self) -> Credentials:
        # The gRPC client is imported by the first Certify: a proxy with a static identity
        # never loads grpclib, h2 or protobuf.
        from gossamer_api.proxy import identity_grpc, identity_pb2

        from gossamer_proxy.mesh.channels import control_channel
        from gossamer_proxy.mesh.rpc import unary_call

        token = await asyncio.to_thread(self.config.token_file.read_bytes)
        if self._key_and_csr is None:
            self._key_and_csr = await credential_helper.new_key_and_csr(self.config.local_name)
        key_pem, csr = self._key_and_csr
        request = identity_pb2.CertifyRequest(
            identity=self.config.local_name, token=token, certificate_signing_request=csr
        )
        channel = control_channel(
            self.config.svc_addr,
            server_name=self.config.svc_name,
            trust_anchors_pem=self.config.trust_anchors_pem,
            credentials=self.credentials,
        )
        try:
            stub = identity_grpc.IdentityStub(channel)
            response: identity_pb2.CertifyResponse = await unary_call(
                stub.Certify, request, deadline=CERTIFY_TIMEOUT
            )
        finally:
            channel.close()
        return validate_certify_response(
            response,
            key_pem=key_pem,
            local_name=self.config.local_name,
            trust_anchors_pem=self.config.trust_anchors_pem,
            now=dt.datetime.fromtimestamp(self._clock(), dt.UTC),
        )

    def _require(self) -> Credentials:
        if self.credentials is None:
            raise RuntimeError("the proxy has no certificate yet (wait for IdentityClient.ready)")
        return self.credentials

    def server_context(
        self, *, alpn_protocols: Sequence[str] = ("transport.l5d.io/v1",)
    ) -> ssl.SSLContext:
        """A fresh inbound mTLS context with the current certificate."""
        return server_context(
            self._require(), self.config.trust_anchors_pem, alpn_protocols=alpn_protocols
        )

    def client_context(self, *, alpn_protocols: Sequence[str] = ()) -> ssl.SSLContext:
        """A fresh outbound mTLS context; connect with ``server_hostname=<server identity>``."""
        return client_context(
            self._require(), self.config.trust_anchors_pem, alpn_protocols=alpn_protocols
        )
