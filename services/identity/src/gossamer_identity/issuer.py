"""Issuer material: loading it from a mounted Secret, validating it, and reloading on rotation.

Linkerd mounts the issuer Secret at ``/var/run/linkerd/identity/issuer``. Two layouts exist:
``linkerd.io/tls`` (``crt.pem`` + ``key.pem``) and ``kubernetes.io/tls`` (``tls.crt`` +
``tls.key``, as cert-manager writes it, where ``tls.crt`` may carry the issuer's own chain).
The trust anchors come from a separate PEM bundle (the trust-roots ConfigMap).

:func:`load_issuer` is pure (bytes + ``now`` in, :class:`LoadedIssuer` or :class:`IssuerError`
out); :class:`IssuerFiles` reads the files and fingerprints them; :class:`IssuerReloader` polls
the fingerprint and swaps in a new issuer only once it fully validates, so a half-written
rotation never replaces a working issuer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography import x509
from gossamer_tls import (
    ChainError,
    Issuer,
    TlsError,
    load_certificates,
    load_private_key,
    verify_chain,
)

_log = structlog.get_logger("gossamer.identity.issuer")

LINKERD_SCHEME_FILES = ("crt.pem", "key.pem")
KUBERNETES_SCHEME_FILES = ("tls.crt", "tls.key")
SECRET_DATA_LINK = "..data"  # noqa: S105 - a file name
"""The symlink the kubelet swaps atomically when a mounted Secret or ConfigMap changes."""


class IssuerError(Exception):
    """The issuer material cannot be used; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class LoadedIssuer:
    """A validated issuer plus the anchors it was checked against."""

    issuer: Issuer
    anchors: tuple[x509.Certificate, ...]

    @property
    def expiry(self) -> dt.datetime:
        """When leaves can no longer be issued (earliest expiry of issuer, chain and anchor)."""
        return self.issuer.not_after

    @property
    def subject(self) -> str:
        return self.issuer.certificate.subject.rfc4514_string()


def load_issuer(
    anchors_pem: bytes, certificate_pem: bytes, key_pem: bytes, *, now: dt.datetime
) -> LoadedIssuer:
    """Validate issuer material: parseable, P-256, a CA, key matching, chaining to the anchors.

    Raises :class:`IssuerError` with a message an operator can act on.
    """
    try:
        anchors = load_certificates(anchors_pem, what="trust anchors")
        certificates = load_certificates(certificate_pem, what="issuer certificate")
        key = load_private_key(key_pem, what="issuer key")
    except TlsError as exc:
        raise IssuerError(str(exc)) from None
    issuer_certificate, *bundled = certificates
    # cert-manager's tls.crt may repeat the root; anchors belong in the trust bundle, not the chain.
    extra = [c for c in bundled if c not in anchors]
    try:
        verified = verify_chain(issuer_certificate, extra, anchors, now=now)
    except ChainError as exc:
        raise IssuerError(f"issuer certificate is not trusted: {exc}") from None
    try:
        issuer = Issuer(
            certificate=issuer_certificate,
            private_key=key,
            chain=verified.path[1:-1],
            ceiling=verified.anchor.not_valid_after_utc,
        )
    except TlsError as exc:
        raise IssuerError(str(exc)) from None
    return LoadedIssuer(issuer=issuer, anchors=tuple(anchors))


Fingerprint = tuple[object, ...]


def _stat_fingerprint(path: Path) -> tuple[object, ...]:
    try:
        st = os.stat(path)  # follows symlinks: a ..data swap changes the inode we see
    except OSError as exc:
        return (str(path), "missing", exc.errno)
    return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _link_fingerprint(directory: Path) -> tuple[object, ...]:
    try:
        return (str(directory), os.readlink(directory / SECRET_DATA_LINK))
    except OSError:
        return (str(directory), None)


@dataclass(frozen=True, slots=True)
class IssuerFiles:
    """Where the issuer material lives on disk."""

    issuer_dir: Path
    trust_anchors: Path

    def key_files(self) -> tuple[Path, Path]:
        """``(certificate, key)``: the linkerd.io/tls layout if present, else kubernetes.io/tls."""
        crt, key = (self.issuer_dir / name for name in LINKERD_SCHEME_FILES)
        if crt.exists() or key.exists():
            return crt, key
        crt, key = (self.issuer_dir / name for name in KUBERNETES_SCHEME_FILES)
        if crt.exists() or key.exists():
            return crt, key
        raise IssuerError(
            f"issuer directory {self.issuer_dir} has neither crt.pem/key.pem (linkerd.io/tls) "
            "nor tls.crt/tls.key (kubernetes.io/tls)"
        )

    def fingerprint(self) -> Fingerprint:
        """Changes whenever any file is replaced, rewritten or re-linked."""
        parts: list[object] = [
            _link_fingerprint(self.issuer_dir),
            _link_fingerprint(self.trust_anchors.parent),
            _stat_fingerprint(self.trust_anchors),
        ]
        for layout in (LINKERD_SCHEME_FILES, KUBERNETES_SCHEME_FILES):
            parts.extend(_stat_fingerprint(self.issuer_dir / name) for name in layout)
        return tuple(parts)

    def read(self) -> tuple[bytes, bytes, bytes]:
        """``(anchors, certificate, key)`` bytes; raises :class:`IssuerError` naming a bad file."""
        crt, key = self.key_files()
        out: list[bytes] = []
        for path in (self.trust_anchors, crt, key):
            try:
                out.append(path.read_bytes())
            except OSError as exc:
                raise IssuerError(f"cannot read {path}: {exc.strerror or exc}") from None
        return out[0], out[1], out[2]

    def load(self, *, now: dt.datetime) -> LoadedIssuer:
        anchors, certificate, key = self.read()
        return load_issuer(anchors, certificate, key, now=now)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class IssuerReloader:
    """Holds the current issuer and replaces it when the files change and the new one validates.

    Construct with :meth:`start`, which refuses (raises :class:`IssuerError`) if the initial
    material is unusable; afterwards :meth:`poll` (called from :meth:`run`) never raises.
    ``on_change`` and ``on_failure`` report later reloads, not the initial load.
    """

    def __init__(
        self,
        files: IssuerFiles,
        loaded: LoadedIssuer,
        fingerprint: Fingerprint,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        on_change: Callable[[LoadedIssuer], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.files = files
        self.current = loaded
        self._fingerprint = fingerprint
        self._clock = clock
        self._on_change = on_change
        self._on_failure = on_failure

    @classmethod
    def start(
        cls,
        files: IssuerFiles,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        on_change: Callable[[LoadedIssuer], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> IssuerReloader:
        fingerprint = files.fingerprint()
        loaded = files.load(now=clock())
        reloader = cls(
            files, loaded, fingerprint, clock=clock, on_change=on_change, on_failure=on_failure
        )
        return reloader

    @property
    def issuer(self) -> Issuer:
        return self.current.issuer

    def poll(self) -> bool:
        """Reload if the files changed; returns whether a new issuer was installed."""
        fingerprint = self.files.fingerprint()
        if fingerprint == self._fingerprint:
            return False
        # Remember the attempt even if it fails: the next write changes the fingerprint again,
        # and an unchanged broken file should be reported once, not every poll.
        self._fingerprint = fingerprint
        try:
            loaded = self.files.load(now=self._clock())
        except IssuerError as exc:
            _log.error("issuer_reload_failed", error=str(exc), keeping=self.current.subject)
            if self._on_failure is not None:
                self._on_failure(str(exc))
            return False
        previous = self.current
        self.current = loaded
        _log.info(
            "issuer_reloaded",
            subject=loaded.subject,
            serial=f"{loaded.issuer.certificate.serial_number:x}",
            previous_serial=f"{previous.issuer.certificate.serial_number:x}",
            expiry=loaded.expiry.isoformat(),
        )
        if self._on_change is not None:
            self._on_change(loaded)
        return True

    async def run(self, interval: float) -> None:
        """Poll forever every ``interval`` seconds (cancel the task to stop)."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.poll()  # a few stat() calls and, on change, reads of kilobyte-sized files
            except Exception:  # a reload bug must not stop future reloads
                _log.exception("issuer_reload_crashed")
