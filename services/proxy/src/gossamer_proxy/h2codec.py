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

Connections come from :func:`new_connection`, which remembers nothing of closed streams
(:class:`ClosedStreamSink`), and end with :func:`release`, which lets reference counting
free them at once.
"""

from __future__ import annotations

import functools
import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

__all__ = [
    "SUPPORTED_JH2",
    "ClosedStreamSink",
    "h2",
    "missing_internals",
    "new_connection",
    "release",
    "take_answers_owed",
]


class _LazyCodec:
    """``h2.<submodule>`` served from jh2, imported at the first attribute read."""

    def __getattr__(self, name: str) -> ModuleType:
        if name.startswith("__"):
            raise AttributeError(name)
        if "jh2.hpack" not in sys.modules:
            _leave_out_pure_python_hpack()
        _check_codec()
        module = importlib.import_module(f"jh2.{name}")
        setattr(self, name, module)  # later reads are plain attribute reads
        return module


#: The jh2 releases whose internals this module relies on (pinned so in pyproject.toml).
SUPPORTED_JH2 = ">=5.0.15,<5.1"


@functools.cache
def _check_codec() -> None:
    """Fail at import, naming the jh2 expected, if an internal this module uses is gone.

    Otherwise a rename would surface later and elsewhere: :func:`release` would raise
    AttributeError as each connection closes, and an override that h2 no longer calls would
    silently bring back connection errors for frames on forgotten streams.
    """
    try:
        connection = importlib.import_module("jh2.connection")
        stream = importlib.import_module("jh2.stream")
        version = str(importlib.import_module("jh2").__version__)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"gossamer-proxy needs jh2 {SUPPORTED_JH2}: {exc}") from exc
    missing = missing_internals(connection, stream)
    if missing:
        raise ImportError(
            f"gossamer-proxy needs jh2 {SUPPORTED_JH2} (tested with 5.0.15); jh2 {version} "
            f"lacks what it relies on: {', '.join(missing)}"
        )


def missing_internals(connection: ModuleType, stream: ModuleType) -> list[str]:
    """The jh2 internals used here that ``connection`` and ``stream`` (jh2's) do not have."""
    missing: list[str] = []
    conn_class = getattr(connection, "H2Connection", None)
    for method in (
        "_stream_closed_by",
        "_handle_data_on_closed_stream",
        "_stream_id_is_outbound",
    ):
        if not callable(getattr(conn_class, method, None)):
            missing.append(f"H2Connection.{method}")
    if not hasattr(getattr(stream, "StreamClosedBy", None), "SEND_RST_STREAM"):
        missing.append("StreamClosedBy.SEND_RST_STREAM")
    if conn_class is None:
        return missing
    try:
        probe = conn_class()
    except Exception as exc:  # any failure means a jh2 this module does not know
        return [*missing, f"H2Connection() ({exc!r})"]
    for attribute, kind in (
        ("_frame_dispatch_table", dict),
        ("_closed_streams", object),
        ("streams", dict),
        ("highest_inbound_stream_id", int),
        ("highest_outbound_stream_id", int),
    ):
        if not isinstance(getattr(probe, attribute, None), kind):
            missing.append(f"H2Connection().{attribute}")
    settings = getattr(getattr(probe, "local_settings", None), "_settings", None)
    if not isinstance(settings, dict) or not all(
        callable(getattr(history, "popleft", None)) for history in settings.values()
    ):
        missing.append("Settings._settings")
    return missing


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


class ClosedStreamSink(dict[int, Any]):
    """Where h2 files its closed streams (how each ended): nothing is kept.

    h2 remembers up to 65,536 closed streams per connection (~120 bytes each: 7.9 MB for
    one long-lived connection), to tell a late frame on a stream it reset (a stream error)
    from one on a stream that ended (a connection error). Any bound on that record is a
    cliff: past it, a late frame for a stream this side reset (a response to a cancelled
    gRPC call) becomes a connection error that fails every stream on the connection. So,
    as Rust's ``h2`` does, nothing is recorded, and every stream at or below the highest id
    seen that is no longer tracked is taken for a closed stream that may have been
    forgotten (:func:`new_connection`): a frame on it is a stream error (RFC 9113 §5.1
    allows either) and the connection goes on.
    """

    __slots__ = ()

    def __setitem__(self, stream_id: int, closed_by: Any) -> None:
        pass


class _SettingHistory(list[Any]):
    """One setting's values, current first then those awaiting acknowledgement.

    h2 keeps each in a deque (~760 bytes even with one value; ten per connection); the
    queue is one or two values long, so a list with the one deque method h2 calls will do.
    """

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


def new_connection(config: h2.config.H2Configuration) -> h2.connection.H2Connection:
    """An HTTP/2 connection that remembers none of its closed streams (:class:`ClosedStreamSink`)
    and keeps its settings in lists (:class:`_SettingHistory`).

    A frame on a stream it may have forgotten (at or below the highest id of its side, no
    longer tracked) is a stream error, as in Rust's ``h2``: HEADERS is answered with
    RST_STREAM(STREAM_CLOSED); DATA too, its length credited back to the connection window
    (h2 does that for DATA on any closed stream); h2 ignores RST_STREAM and WINDOW_UPDATE.
    Each RST_STREAM it answers that way is counted in :func:`take_answers_owed`.
    """
    conn: h2.connection.H2Connection = _connection_class()(config)
    conn._closed_streams = ClosedStreamSink()
    for settings in (conn.local_settings, conn.remote_settings):
        values: dict[Any, Any] = settings._settings  # h2 types them as deques
        for code, history in values.items():
            values[code] = _SettingHistory(history)
    return conn


def take_answers_owed(conn: h2.connection.H2Connection) -> int:
    """RST_STREAM frames ``conn`` queued for frames on forgotten streams since the last call.

    Such frames cost the peer nothing and owe it an answer, so the caller counts them
    against its flood limits (:meth:`gossamer_common.h2flood.FloodGuard.control_frame`).
    """
    owed: int = getattr(conn, "answers_owed", 0)
    if owed:
        conn.answers_owed = 0  # type: ignore[attr-defined]
    return owed


@functools.cache
def _connection_class() -> type[Any]:
    """jh2's connection, with closed streams it has forgotten treated as reset ones."""
    base: Any = h2.connection.H2Connection
    reset_by_this_side = h2.stream.StreamClosedBy.SEND_RST_STREAM

    class ForgetfulConnection(base):  # type: ignore[misc]
        #: RST_STREAMs queued for frames on forgotten streams (see take_answers_owed).
        answers_owed = 0

        def _may_have_forgotten(self, stream_id: int) -> bool:
            if stream_id <= 0 or stream_id in self.streams:
                return False
            if self._stream_id_is_outbound(stream_id):
                return bool(stream_id <= self.highest_outbound_stream_id)
            return bool(stream_id <= self.highest_inbound_stream_id)

        def _stream_closed_by(self, stream_id: int) -> Any:
            # h2 asks when a frame came for a closed or untracked stream, to choose
            # between a stream error (closed by a reset) and a connection error.
            stream = self.streams.get(stream_id)
            if stream is not None:
                return stream.closed_by
            if self._may_have_forgotten(stream_id):
                self.answers_owed += 1  # h2 answers it with RST_STREAM
                return reset_by_this_side
            return None

        def _handle_data_on_closed_stream(self, events: Any, exc: Any, frame: Any) -> Any:
            self.answers_owed += 1  # RST_STREAM (and the connection window's credit)
            return super()._handle_data_on_closed_stream(events, exc, frame)

    return ForgetfulConnection


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
