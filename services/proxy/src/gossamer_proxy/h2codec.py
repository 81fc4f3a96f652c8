"""The proxy's HTTP/2 codec: ``jh2``, the maintained fork of ``h2`` with compiled HPACK.

``jh2`` keeps h2's API (``H2Connection``, the events, settings and errors). Measured with
``bench/footprint.py`` (gRPC unary over two mTLS hops, 20,000 requests at c=64, CPU time of
both proxies divided by the count, runs interleaved): ~800 µs per request with ``h2``,
~650 µs with ``jh2``.

The data path reaches the codec through :data:`h2` here (``from ..h2codec import h2``, then
``h2.events.RequestReceived`` as before); type checking reads h2's annotations, since jh2
ships none. jh2 is imported on first use, so a sidecar that never sees HTTP/2 does not map
it (2.6 MB). grpclib, the control-plane client, keeps ``h2``: it does not work over jh2
(the proxy-to-control-plane test times out with it), so the two are not merged.

Connections come from :func:`new_connection`, which bounds what a connection remembers of
its closed streams (:class:`ResetStreamRecords`), and end with :func:`release`, which lets
reference counting free them at once.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections import OrderedDict
from types import ModuleType
from typing import TYPE_CHECKING, Any

__all__ = ["MAX_RESET_RECORDS", "ResetStreamRecords", "h2", "new_connection", "release"]

#: Streams closed by RST_STREAM that a connection remembers, newest first.
MAX_RESET_RECORDS = 1024


class _LazyCodec:
    """``h2.<submodule>`` served from jh2, imported at the first attribute read."""

    def __getattr__(self, name: str) -> ModuleType:
        if name.startswith("__"):
            raise AttributeError(name)
        if "jh2.hpack" not in sys.modules:
            _leave_out_pure_python_hpack()
        module = importlib.import_module(f"jh2.{name}")
        setattr(self, name, module)  # later reads are plain attribute reads
        return module


def _leave_out_pure_python_hpack() -> None:
    """Stand the compiled HPACK codec in for ``jh2.hpack.hpack``, which is never used.

    jh2 encodes and decodes header blocks with its compiled codec (``jh2._hazmat``) but
    still imports its pure-Python one (with the Huffman tables: 0.7 MB resident) through
    ``jh2.hpack``, for ``HeaderTuple``. With the compiled codec present, ``jh2.hpack.hpack``
    is that codec instead; without it, nothing changes and jh2 falls back as it always does.
    """
    try:
        compiled = importlib.import_module("jh2._hazmat")
    except ImportError:  # pragma: no cover - the wheel ships it; a source build may not
        return
    standin = ModuleType("jh2.hpack.hpack", "jh2's compiled HPACK codec (see gossamer h2codec)")
    standin.Encoder = compiled.Encoder  # type: ignore[attr-defined]
    standin.Decoder = compiled.Decoder  # type: ignore[attr-defined]
    sys.modules.setdefault("jh2.hpack.hpack", standin)


if TYPE_CHECKING:
    import h2
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    import h2.settings
    import h2.stream
else:
    h2 = _LazyCodec()


class ResetStreamRecords(OrderedDict[int, Any]):
    """How a connection's closed streams ended, kept for those closed by RST_STREAM only.

    h2 remembers every closed stream (up to 65,536 per connection, ~120 bytes each: 7.9 MB
    for one long-lived connection, and in proportion to the requests served until then).
    The record matters only for a stream that was reset: frames the peer sent before it saw
    the RST_STREAM are answered with RST_STREAM instead of a connection error. For a stream
    that ended normally a late frame is a connection error either way, and DATA and
    WINDOW_UPDATE on any forgotten stream are handled without one. So only resets are kept,
    the newest :data:`MAX_RESET_RECORDS` of them.
    """

    __slots__ = ()

    def __setitem__(self, stream_id: int, closed_by: Any) -> None:
        if closed_by not in _reset_closures():
            return
        super().__setitem__(stream_id, closed_by)
        if len(self) > MAX_RESET_RECORDS:
            self.popitem(last=False)


@functools.cache
def _reset_closures() -> frozenset[Any]:
    closed_by = h2.stream.StreamClosedBy
    return frozenset({closed_by.SEND_RST_STREAM, closed_by.RECV_RST_STREAM})


class _SettingHistory(list[Any]):
    """One setting's values, current first then those awaiting acknowledgement.

    h2 keeps each in a deque (~760 bytes even with one value; ten per connection); the
    queue is one or two values long, so a list with the one deque method h2 calls will do.
    """

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


def new_connection(config: h2.config.H2Configuration) -> h2.connection.H2Connection:
    """An HTTP/2 connection that remembers only its last :data:`MAX_RESET_RECORDS` resets,
    and keeps its settings in lists (:class:`_SettingHistory`)."""
    conn = h2.connection.H2Connection(config)
    conn._closed_streams = ResetStreamRecords()
    for settings in (conn.local_settings, conn.remote_settings):
        values: dict[Any, Any] = settings._settings  # h2 types them as deques
        for code, history in values.items():
            values[code] = _SettingHistory(history)
    return conn


def release(conn: h2.connection.H2Connection) -> None:
    """``conn`` will receive nothing more (its transport is gone): break its reference cycle.

    h2 keeps a table of its own bound methods to dispatch received frames by type, so every
    connection is a cycle that only the garbage collector frees, together with its streams
    and settings. The proxy's collector thresholds are high (gossamer_common.runtime), and a
    connection that lived through a few collections waits for a full one: under load the
    closed connections piled up by the hundred. Without the table, the connection goes as
    soon as the proxy drops it; it can still send (a reset, a GOAWAY), never receive.
    """
    conn._frame_dispatch_table.clear()
