"""The proxy's own identity as the data path sees it: disabled, static, or certified.

Four modes, chosen from the settings (:func:`identity_from_settings`):

* **disabled** — ``LINKERD2_PROXY_IDENTITY_DISABLED=true``, or no identity environment at
  all: no mTLS anywhere, ``/ready`` does not wait for a certificate, TLS labels say
  ``tls="disabled"`` where Linkerd does.
* **static** — ``GOSSAMER_PROXY_IDENTITY_CERT_FILE`` and ``…_KEY_FILE`` (PEM chain and key,
  read at start and again whenever they change) with the trust anchors and local name:
  for benchmarks and tests that
  run without a control plane, and for a proxy outside Kubernetes (an ExternalWorkload)
  whose SPIFFE SVID is handed to it as files. Such a proxy's identity is a URI
  (``LINKERD2_PROXY_IDENTITY_SERVER_ID=spiffe://…``) and it terminates mTLS for its
  ``LINKERD2_PROXY_IDENTITY_SERVER_NAME`` (the workload's ``meshTLS.serverName``). The
  chain is checked against the anchors and the identity (a DNS SAN, or a URI SAN for a
  URI) exactly as a Certify answer would be, so a wrong file fails at start.
* **pushed** — a multi-core worker (:mod:`.multicore`): the parent certifies once and sends
  the key and chain down its private socket pair, renewals too, so a pod has one identity.
* **certify** — the Linkerd way: :class:`~gossamer_proxy.mesh.identity.IdentityClient`
  generates the key in memory, calls Certify and renews at ~70% of the lifetime.

:class:`LocalIdentity` hands out ``ssl`` contexts built from the current certificate and
caches them until the certificate changes: building a context costs a key load and a chain
parse, far too much per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from gossamer_common.metrics import Registry

from .config import ProxySettings
from .mesh.credential_check import CredentialRejected, check_credentials, is_uri_identity
from .mesh.identity import IdentityClient, IdentityConfig, IdentityConfigError, IdentityMetrics
from .mesh.tls_contexts import Credentials, ResumingContext, client_context, server_context
from .mesh.transport import ALPN_PROTOCOL

__all__ = [
    "IdentityConfigError",
    "LocalIdentity",
    "StaticFiles",
    "identity_from_settings",
    "load_static",
    "local_identity_name",
]


_log = structlog.get_logger("gossamer.proxy.identity")

#: A file watcher failing the same way every round logs once per this many rounds.
_WATCH_LOG_EVERY = 30


@dataclass(frozen=True, slots=True)
class StaticFiles:
    """Where a static identity's chain and key live, re-read when they change (a SPIFFE
    helper, or ``gossamer svid`` run again, rotates an SVID by rewriting them)."""

    cert: Path
    key: Path
    interval: float = 10.0

    def stamp(self) -> tuple[tuple[int, int, int], ...]:
        """What changes when either file is rewritten (``OSError`` if one is missing)."""
        stats = (self.cert.stat(), self.key.stat())
        return tuple((st.st_ino, st.st_size, st.st_mtime_ns) for st in stats)


class LocalIdentity:
    """This proxy's mesh identity and the TLS contexts made from it."""

    def __init__(
        self,
        local_name: str,
        trust_anchors_pem: str,
        *,
        client: IdentityClient | None = None,
        static: Credentials | None = None,
        metrics: IdentityMetrics | None = None,
        pushed: bool = False,
        server_name: str | None = None,
        files: StaticFiles | None = None,
        files_stamp: tuple[tuple[int, int, int], ...] | None = None,
    ) -> None:
        if files is not None and static is None:
            raise ValueError("only a static identity is re-read from files")
        if not pushed and (client is None) == (static is None):
            raise ValueError("exactly one of client and static credentials is needed")
        if pushed and (client is not None or static is not None):
            raise ValueError("pushed credentials come from the parent process only")
        self.name = local_name
        #: The TLS server name (SNI) inbound mTLS is terminated for: the identity itself,
        #: or for a URI identity (an ExternalWorkload) its ``meshTLS.serverName``.
        self.server_name = server_name or local_name
        self.trust_anchors_pem = trust_anchors_pem
        self._client = client
        self._static = static
        #: A multi-core worker's credentials, installed by its parent (:meth:`install`).
        self._pushed = pushed
        self._installed: Credentials | None = None
        self._task: asyncio.Task[None] | None = None
        self._cache_for: Credentials | None = None
        self._server: ssl.SSLContext | None = None
        self._clients: dict[tuple[tuple[str, ...], bool], ResumingContext] = {}
        self._metrics = metrics
        self._files = files
        #: The files' stamp when ``static`` was read from them: taken before the read
        #: (``files_stamp``), so a rotation during the read is seen at the first check.
        self._stamp = files_stamp
        if files is not None and files_stamp is None:
            with contextlib.suppress(OSError):
                self._stamp = files.stamp()
        if static is not None and metrics is not None:
            metrics.expiration.set(static.not_after)
            metrics.refreshes.inc()

    @property
    def credentials(self) -> Credentials | None:
        if self._static is not None:
            return self._static
        if self._pushed:
            return self._installed
        assert self._client is not None
        return self._client.credentials

    @property
    def ready(self) -> bool:
        """True once a certificate is installed (at once in static mode)."""
        return self.credentials is not None

    def install(self, credentials: Credentials) -> None:
        """A worker's new certificate from its parent (the parent certified and checked it)."""
        if not self._pushed:
            raise ValueError("only a worker's identity takes pushed credentials")
        if credentials.identity != self.name:
            raise ValueError(
                f"pushed credentials are for {credentials.identity!r}, not {self.name!r}"
            )
        self._installed = credentials

    def start(self) -> None:
        """Begin certifying (certify mode), or watching the files of a static identity; call
        from the running loop."""
        if self._client is not None and self._task is None:
            self._task = asyncio.create_task(self._client.run(), name="identity-certify")
        elif self._files is not None and self._task is None:
            self._task = asyncio.create_task(self._watch_files(), name="identity-files")

    async def _watch_files(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        assert self._files is not None
        failure: str | None = None
        repeats = 0
        while True:
            await sleep(self._files.interval)
            # A stat per interval; a changed pair costs two small reads and an in-memory
            # handshake (milliseconds), so the loop is not worth leaving.
            try:
                self.reload_files()
            except Exception as exc:  # the watcher must outlive any failure
                # e.g. EMFILE from the key's memfd: a dead watcher would never rotate the
                # SVID again, so log (the same failure once per _WATCH_LOG_EVERY rounds)
                # and try again next round; the stamp is unchanged, so the pair is re-read.
                error = f"{type(exc).__name__}: {exc}"
                repeats = repeats + 1 if error == failure else 1
                failure = error
                if (repeats - 1) % _WATCH_LOG_EVERY == 0:
                    _log.warning(
                        "identity_files_reload_failed",
                        identity=self.name,
                        error=error,
                        repeats=repeats,
                    )
            else:
                failure, repeats = None, 0

    def reload_files(self) -> str | None:
        """Re-read a static identity's files if they changed; install them once they pass
        the same checks as at start. Returns why new files were refused (``None``: nothing
        changed, or installed). A refused or half-written pair keeps the current
        certificate, and is tried again when the files change again."""
        if self._files is None:
            return None
        try:
            stamp = self._files.stamp()
            if stamp == self._stamp:
                return None
            cert_pem, key_pem = self._files.cert.read_bytes(), self._files.key.read_bytes()
        except OSError as exc:
            return self._refused(f"cannot read static identity: {exc}")
        try:
            credentials = load_static(self.name, self.trust_anchors_pem, cert_pem, key_pem)
        except IdentityConfigError as exc:
            self._stamp = stamp
            return self._refused(str(exc))
        self._stamp = stamp
        self._static = credentials
        if self._metrics is not None:
            self._metrics.expiration.set(credentials.not_after)
            self._metrics.refreshes.inc()
        _log.info("identity_files_reloaded", identity=self.name, not_after=credentials.not_after)
        return None

    def _refused(self, error: str) -> str:
        _log.warning("identity_files_refused", identity=self.name, error=error)
        return error

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _fresh(self) -> Credentials | None:
        credentials = self.credentials
        if credentials is not self._cache_for:
            self._cache_for = credentials
            self._server = None
            self._clients.clear()
        return credentials

    def server_context(self) -> ssl.SSLContext | None:
        """Inbound mTLS (ALPN ``transport.l5d.io/v1`` accepted); ``None`` before a cert."""
        credentials = self._fresh()
        if credentials is None:
            return None
        if self._server is None:
            self._server = server_context(
                credentials, self.trust_anchors_pem, alpn_protocols=(ALPN_PROTOCOL,)
            )
        return self._server

    def client_context(
        self, alpn: tuple[str, ...] = (), *, check_name: bool = True
    ) -> ResumingContext | None:
        """Outbound mTLS; connect with ``server_hostname=<server identity>``, or with
        ``check_name=False`` to a server name and check the identity after the handshake."""
        credentials = self._fresh()
        if credentials is None:
            return None
        context = self._clients.get((alpn, check_name))
        if context is None:
            context = client_context(
                credentials, self.trust_anchors_pem, alpn_protocols=alpn, check_name=check_name
            )
            self._clients[(alpn, check_name)] = context
        return context


def load_static(
    local_name: str,
    trust_anchors_pem: str,
    cert_pem: bytes,
    key_pem: bytes,
) -> Credentials:
    """Check a static chain + key like a Certify answer; raises :class:`IdentityConfigError`.

    Validity is checked against the system clock, as every handshake will check it.
    """
    try:
        return check_credentials(local_name, key_pem, cert_pem, trust_anchors_pem)
    except CredentialRejected as exc:
        raise IdentityConfigError(f"static identity certificate rejected: {exc}") from None


def local_identity_name(settings: ProxySettings) -> str | None:
    """The proxy's identity: ``LINKERD2_PROXY_IDENTITY_SERVER_ID`` (a DNS-like name or a
    SPIFFE URI), else ``LINKERD2_PROXY_IDENTITY_LOCAL_NAME``, as Linkerd reads them."""
    return settings.identity_server_id or settings.identity_local_name


def _enabled(settings: ProxySettings) -> bool:
    if settings.identity_disabled:
        return False
    return any(
        (
            settings.identity_local_name,
            settings.identity_server_id,
            settings.identity_trust_anchors,
            settings.identity_svc_addr,
            settings.identity_cert_file,
        )
    )


def identity_from_settings(settings: ProxySettings, registry: Registry) -> LocalIdentity | None:
    """The proxy's identity, or ``None`` when identity is disabled.

    Raises :class:`IdentityConfigError` naming the variables that are missing or wrong.
    """
    if not _enabled(settings):
        return None
    metrics = IdentityMetrics(registry)
    static_files: Sequence[str | None] = (settings.identity_cert_file, settings.identity_key_file)
    if any(static_files):
        if not all(static_files):
            raise IdentityConfigError(
                "GOSSAMER_PROXY_IDENTITY_CERT_FILE and GOSSAMER_PROXY_IDENTITY_KEY_FILE must "
                "be set together"
            )
        name = local_identity_name(settings)
        if not name or not settings.identity_trust_anchors:
            raise IdentityConfigError(
                "a static identity needs LINKERD2_PROXY_IDENTITY_LOCAL_NAME (or "
                "LINKERD2_PROXY_IDENTITY_SERVER_ID) and LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"
            )
        if is_uri_identity(name) and (
            not settings.identity_server_name or is_uri_identity(settings.identity_server_name)
        ):
            # Inbound mTLS is terminated only for a ClientHello whose SNI is the server
            # name; a spiffe:// string is never an SNI, so without a DNS-like server name
            # meshed clients would pass through unterminated and unauthenticated.
            raise IdentityConfigError(
                "a SPIFFE URI identity (LINKERD2_PROXY_IDENTITY_SERVER_ID) needs "
                "LINKERD2_PROXY_IDENTITY_SERVER_NAME, the DNS-like TLS server name "
                "(meshTLS.serverName) that inbound mTLS is terminated for"
            )
        assert settings.identity_cert_file is not None
        assert settings.identity_key_file is not None
        files = StaticFiles(
            Path(settings.identity_cert_file),
            Path(settings.identity_key_file),
            interval=settings.identity_min_refresh,
        )
        try:
            # Stamp first: files rotated while being read differ from the stamp, so the
            # watcher's first round re-reads them instead of keeping a stale pair.
            stamp = files.stamp()
            cert_pem, key_pem = files.cert.read_bytes(), files.key.read_bytes()
        except OSError as exc:
            raise IdentityConfigError(f"cannot read static identity: {exc}") from None
        credentials = load_static(name, settings.identity_trust_anchors, cert_pem, key_pem)
        return LocalIdentity(
            name,
            settings.identity_trust_anchors,
            static=credentials,
            metrics=metrics,
            server_name=settings.identity_server_name,
            files=files,
            files_stamp=stamp,
        )
    if is_uri_identity(local_identity_name(settings) or ""):
        raise IdentityConfigError(
            "a SPIFFE URI identity (LINKERD2_PROXY_IDENTITY_SERVER_ID) is not issued by the "
            "identity service: give its SVID with GOSSAMER_PROXY_IDENTITY_CERT_FILE and "
            "GOSSAMER_PROXY_IDENTITY_KEY_FILE"
        )
    if settings.identity_server_name and settings.identity_server_name != (
        local_identity_name(settings)
    ):
        raise IdentityConfigError(
            "LINKERD2_PROXY_IDENTITY_SERVER_NAME differs from the identity, which only a "
            "static (URI) identity supports"
        )
    config = IdentityConfig.from_settings(settings)
    client = IdentityClient(config, metrics=metrics)
    return LocalIdentity(config.local_name, config.trust_anchors_pem, client=client)
