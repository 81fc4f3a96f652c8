"""Sans-io decoding of the apiserver's watch stream.

A watch response is newline-delimited JSON: one ``{"type": ..., "object": {...}}`` per line,
where type is ADDED, MODIFIED, DELETED, BOOKMARK or ERROR. :class:`WatchDecoder` takes bytes
as they arrive (in any chunking) and returns whole events, so the framing logic is tested
without a socket. ``ERROR`` events carry a ``Status``; they are turned into exceptions here
(410 into :class:`~gossamer_kube.errors.WatchExpired`) so no caller can mistake one for data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from gossamer_kube.errors import KubeProtocolError, error_from_status

__all__ = ["EVENT_TYPES", "MAX_EVENT_BYTES", "WatchDecoder", "WatchEvent", "decode_event_line"]

EVENT_TYPES: Final = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK"})

#: The apiserver caps one object at ~1.5 MiB in etcd; anything far beyond that is not a
#: watch event but a broken or hostile stream, and buffering it would only eat memory.
MAX_EVENT_BYTES: Final = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change notification: ``type`` is ADDED, MODIFIED, DELETED or BOOKMARK."""

    type: str
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        """The object's ``metadata.resourceVersion`` (for BOOKMARKs, the watch position)."""
        meta = self.object.get("metadata")
        if isinstance(meta, dict):
            rv = meta.get("resourceVersion")
            if isinstance(rv, str):
                return rv
        return ""


def decode_event_line(line: bytes) -> WatchEvent:
    """Decode one line of a watch stream, raising for ERROR events and malformed input."""
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KubeProtocolError(f"watch line is not JSON: {line[:200]!r}") from exc
    if not isinstance(doc, dict):
        raise KubeProtocolError(f"watch line is not a JSON object: {line[:200]!r}")
    kind = doc.get("type")
    obj = doc.get("object")
    if not isinstance(obj, dict):
        raise KubeProtocolError(f"watch event has no object: {line[:200]!r}")
    if kind == "ERROR":
        raise error_from_status(obj)
    if kind not in EVENT_TYPES:
        raise KubeProtocolError(f"unknown watch event type {kind!r}")
    assert isinstance(kind, str)
    return WatchEvent(kind, obj)


class WatchDecoder:
    """Turns watch-stream bytes into :class:`WatchEvent` objects, whatever the chunking."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_event_bytes
        self._error: Exception | None = None

    def raise_pending(self) -> None:
        """Raise the error that followed the events last returned, if there was one.

        Events that precede an ERROR line (or a malformed one) in the same chunk are returned
        first, so none is lost; the error is kept here and raised on the next call.
        """
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def feed(self, data: bytes) -> list[WatchEvent]:
        """Add received bytes; return the events completed by them (possibly none)."""
        self.raise_pending()
        self._buffer += data
        events: list[WatchEvent] = []
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self._buffer[start:end]).strip()
            start = end + 1
            if line:
                try:
                    events.append(decode_event_line(line))
                except Exception as exc:
                    self._buffer.clear()
                    if not events:
                        raise
                    self._error = exc
                    return events
        del self._buffer[:start]
        if len(self._buffer) > self._max:
            size = len(self._buffer)
            self._buffer.clear()
            raise KubeProtocolError(f"watch event exceeds {self._max} bytes ({size} buffered)")
        return events

    def end(self) -> list[WatchEvent]:
        """The stream ended: decode a final unterminated line, if any.

        The apiserver always ends events with a newline, but a trailing complete JSON object
        without one is accepted; a truncated one raises, since it means a lost event.
        """
        self.raise_pending()
        rest = bytes(self._buffer).strip()
        self._buffer.clear()
        if not rest:
            return []
        return [decode_event_line(rest)]
