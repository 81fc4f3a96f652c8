"""A server TLS context whose certificate follows its files on disk.

cert-manager (or a chart upgrade) rewrites the webhook's certificate while the injector
runs. The listening socket keeps one outer :class:`ssl.SSLContext`; its SNI callback, which
OpenSSL runs on every handshake even when the client sends no SNI (the apiserver dialling
``https://127.0.0.1``), swaps in the newest loaded context. A half-written or mismatched
pair is refused and the previous certificate keeps serving.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import structlog

_log = structlog.get_logger("gossamer.injector.tls")


@dataclass(frozen=True, slots=True)
class FileStamp:
    """Enough of ``stat`` to notice a rewrite, a rename-over (new inode) or a truncation."""

    mtime_ns: int
    size: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileStamp | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(st.st_mtime_ns, st.st_size, st.st_ino)


def _server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class ReloadingServerTLS:
    """Owns the outer context handed to the listener and the current inner one."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._stamps = self._current_stamps()
        self._current = _server_context(cert_file, key_file)
        self.context = _server_context(cert_file, key_file)
        self.context.sni_callback = self._select
        self.reloads = 0

    def _current_stamps(self) -> tuple[FileStamp | None, FileStamp | None]:
        return FileStamp.of(self.cert_file), FileStamp.of(self.key_file)

    def _select(self, conn: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        conn.context = self._current

    def reload_if_changed(self) -> bool:
        """Load the files again if they changed; True when a new certificate is in use."""
        stamps = self._current_stamps()
        if stamps == self._stamps or None in stamps:
            return False
        try:
            fresh = _server_context(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            # Likely caught mid-rotation (cert written, key not yet): keep serving the old
            # pair and look again next round, since the stamps are not recorded.
            _log.warning("tls_reload_failed", cert=str(self.cert_file), error=str(exc))
            return False
        self._stamps = stamps
        self._current = fresh
        self.reloads += 1
        _log.info("tls_reloaded", cert=str(self.cert_file), reloads=self.reloads)
        return True

    async def watch(self, interval: float) -> None:
        """Poll the files every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.reload_if_changed()
