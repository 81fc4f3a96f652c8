"""The request-observer seam: one hook point per protocol for everything that watches requests.

Access logs, tap and tracing spans all want the same few moments of every HTTP request, on
HTTP/1 (:mod:`.http1.server`) and HTTP/2 (:mod:`.http2.bridge`, :mod:`.http2.balanced`)
alike. Instead of each feature hooking both protocol servers, the servers report those
moments once, here, and every feature is a :class:`RequestObserver`.

The moments, in order (each at most once per request):

1. **request** — the request head arrived: :meth:`Observers.begin` builds an
   :class:`ObservedRequest` (direction, peer and local addresses, the client's mesh
   identity, method, scheme, authority, path, the request target as received, HTTP
   version and headers) and asks each observer whether it wants this request.
2. **forwarded** — the request was handed to its upstream: outbound, the endpoint picked,
   the server identity it proved and the endpoint's ``dst_*`` labels are known from here.
   Requests the proxy answers itself are never forwarded.
3. **response** — the response head (status, headers) was sent toward the client. A
   response the proxy made (502, 503, 504, a route filter's answer, ...) counts too.
4. **end** — the response ended: its body byte count, trailers, ``grpc-status``, or the
   HTTP/2 reset code / failure that cut it short.

Cost when nobody observes: each listener's :class:`~.context.ListenerContext` holds
``observers`` — ``None`` unless some observer is registered for that direction — and the
protocol servers test that one attribute per request; nothing is allocated or timed. The
:class:`ObserverHub` recompiles that field on every listener whenever an observer is added
or removed, so a feature that is only sometimes on (tap, while a tap client is connected)
costs nothing the rest of the time. With observers, one :class:`ObservedRequest` is
allocated per request and kept only when some observer wants the request.

Writing an observer: subclass :class:`RequestObserver`. ``on_request`` returns a token (any
object; per-request state such as a span or the list of matching taps) or ``None`` to skip
the request; the later callbacks get the request and that token. Observers run on the
event loop inside the data path: they must not block or await, and must bound whatever they
buffer. Times are loop seconds (``loop.time()``), passed in; observers never read a clock
for durations. An observer reads the request and may add or set headers on it while
``on_request`` runs (:meth:`ObservedRequest.add_request_header`,
:meth:`ObservedRequest.set_request_header`: tracing's ``traceparent``/B3 propagation, which
must replace the caller's context rather than send a second one); both protocol servers
apply them once, through :meth:`ObservedRequest.forward_headers`, before the request is
encoded or sent upstream. It never changes or answers the request otherwise.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "ConnectionFacts",
    "Headers",
    "ObservedRequest",
    "ObserverHub",
    "Observers",
    "RequestObserver",
    "connection_facts",
    "content_length_of",
    "number_connections",
    "sockaddr",
]

Headers = Sequence[tuple[bytes, bytes]]
Address = tuple[str, int]
Clock = Callable[[], float]

_connection_ids = itertools.count(1)


#: Connections one process numbers before its ids reach those of its next restart.
GENERATION_SPAN = 1 << 22


def number_connections(index: int, processes: int, generation: int = 0) -> None:
    """Number this process's connections ``processes * k + index`` from here on.

    The processes of a multi-core proxy (the parent is ``index`` 0) then never give two
    connections the same id, so tap events of every process, merged into one stream, keep
    distinct ``StreamId``s, and ``base % processes`` tells which process served a request.
    A restarted worker keeps its index and counts from a later ``k``, by its restart
    ``generation`` (:data:`GENERATION_SPAN` connections apart), so its ids do not repeat
    those of the worker it replaces (within the 32 bits of a ``StreamId`` base).
    """
    global _connection_ids
    if not 0 <= index < processes:
        raise ValueError(f"process index {index} is not in 0..{processes - 1}")
    if generation < 0:
        raise ValueError(f"restart generation {generation} is negative")
    first = 1 + generation * GENERATION_SPAN
    _connection_ids = itertools.count(processes * first + index, processes)


def sockaddr(value: object) -> Address | None:
    """``(ip, port)`` from a socket address tuple (``None`` for anything else)."""
    if isinstance(value, tuple) and len(value) >= 2 and isinstance(value[1], int):
        return str(value[0]), value[1]
    return None


def content_length_of(headers: Headers) -> int | None:
    """An HTTP/2 head's ``content-length`` (``None`` when absent or not a number)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() and len(value) < 20 else None
    return None


class ConnectionFacts:
    """What every request on one client connection shares; built once, on first need."""

    __slots__ = ("client_id", "connection_id", "destination", "direction", "source")

    def __init__(
        self,
        direction: str,
        source: Address | None,
        destination: Address | None,
        client_id: str | None,
    ) -> None:
        self.direction = direction  # "inbound" | "outbound"
        #: The client's address (inbound: the calling pod; outbound: the local app).
        self.source = source
        #: Where the connection was going (inbound: this pod; outbound: the original dst).
        self.destination = destination
        #: The client's verified mesh identity (inbound mTLS), else ``None``.
        self.client_id = client_id
        #: Unique per proxy process (tap's ``StreamId.base``).
        self.connection_id = next(_connection_ids)


def connection_facts(
    direction: str,
    transport: object,
    destination: Address | None,
    client_id: str | None,
) -> ConnectionFacts:
    """Facts for a connection accepted on ``transport`` (an asyncio transport)."""
    get_extra_info = getattr(transport, "get_extra_info", None)
    peer = sockaddr(get_extra_info("peername")) if get_extra_info is not None else None
    return ConnectionFacts(direction, peer, destination, client_id)


class RequestObserver:
    """Base class for observers; every callback but :meth:`on_request` defaults to nothing."""

    def on_request(self, request: ObservedRequest) -> object | None:
        """The request head arrived: a token to follow this request, or ``None`` to skip."""
        raise NotImplementedError

    def on_forwarded(self, request: ObservedRequest, token: object) -> None:
        """The request went upstream (outbound: ``request.dst_*`` now describe the endpoint)."""

    def on_response(self, request: ObservedRequest, token: object) -> None:
        """The response head is known (``request.status``, ``request.response_headers``)."""

    def on_end(self, request: ObservedRequest, token: object) -> None:
        """The response ended (``response_bytes``, ``grpc_status``, ``reset_code``, ``error``)."""


class ObservedRequest:
    """One observed request: its head, and what happened to it so far.

    The protocol servers fill it in through :meth:`forwarded`, :meth:`response` and
    :meth:`end`, and add response body sizes to :attr:`response_bytes` as DATA passes.
    """

    __slots__ = (
        "added_headers",
        "authority",
        "client_id",
        "clock",
        "connection",
        "content_length",
        "dst_addr",
        "dst_labels",
        "ended_at",
        "error",
        "forwarded_at",
        "grpc_status",
        "headers",
        "method",
        "path",
        "precise_ended",
        "precise_response",
        "precise_started",
        "replaced_names",
        "reset_code",
        "response_at",
        "response_bytes",
        "response_headers",
        "route_labels",
        "scheme",
        "server_id",
        "sinks",
        "started_at",
        "status",
        "stream_id",
        "trailers",
        "uri",
        "version",
    )

    def __init__(
        self,
        connection: ConnectionFacts,
        stream_id: int,
        *,
        method: bytes,
        scheme: bytes,
        authority: bytes,
        path: bytes,
        uri: bytes,
        version: str,
        headers: Headers,
        now: float,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.connection = connection
        #: Per connection: the HTTP/2 stream id, or the HTTP/1 request's ordinal.
        self.stream_id = stream_id
        self.method = method
        self.scheme = scheme
        self.authority = authority
        self.path = path
        #: The request target as received (HTTP/2: ``scheme://authority/path``).
        self.uri = uri
        self.version = version  # "HTTP/1.1", "HTTP/2.0", ...
        self.headers = headers
        self.started_at = now
        #: Durations for tap and spans: the loop's clock (``now``) ticks in milliseconds
        #: under uvloop, so the seam also reads a fine monotonic ``clock`` at each moment.
        self.clock = clock
        self.precise_started = clock()
        self.precise_response: float | None = None
        self.precise_ended: float | None = None
        self.client_id = connection.client_id
        self.forwarded_at: float | None = None
        #: Where the request went: the endpoint (outbound), else the connection's destination.
        self.dst_addr = connection.destination
        #: The server's verified mesh identity (outbound mTLS), else ``None``.
        self.server_id: str | None = None
        #: The endpoint's discovery labels (outbound; ``dst_``-less names).
        self.dst_labels: dict[str, str] = {}
        self.route_labels: dict[str, str] = {}
        self.response_at: float | None = None
        self.status = 0
        self.response_headers: Headers = ()
        #: The response's declared ``content-length`` (``None``: absent or not known).
        self.content_length: int | None = None
        self.response_bytes = 0
        self.ended_at: float | None = None
        self.grpc_status: int | None = None
        #: The HTTP/2 RST_STREAM code that ended the response, if one did.
        self.reset_code: int | None = None
        #: Why the proxy ended the request itself (a ProxyErrorKind name, ...), if it did.
        self.error: str | None = None
        self.trailers: Headers = ()
        self.sinks: tuple[tuple[RequestObserver, object], ...] = ()
        #: Headers observers add to the request as forwarded (see :meth:`add_request_header`).
        self.added_headers: list[tuple[bytes, bytes]] | None = None
        #: Lower-cased names whose received values are not forwarded (set, not added).
        self.replaced_names: set[bytes] | None = None

    def add_request_header(self, name: bytes, value: bytes) -> None:
        """Forward the request with one more header (``on_request`` only; e.g. tracing's
        ``traceparent``). ``name`` must be a valid lowercase field name and ``value`` free of
        CR/LF; the protocol servers append it to the head they send upstream."""
        if self.added_headers is None:
            self.added_headers = []
        self.added_headers.append((name, value))

    def set_request_header(self, name: bytes, value: bytes) -> None:
        """As :meth:`add_request_header`, but every header of that name the request carries
        (in any case) is left out first: the forwarded request has only this value."""
        if self.replaced_names is None:
            self.replaced_names = set()
        self.replaced_names.add(name.lower())
        self.add_request_header(name, value)

    def forward_headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """``headers`` as forwarded: replaced names left out, added headers appended."""
        replaced = self.replaced_names
        if replaced:
            headers = [h for h in headers if h[0].lower() not in replaced]
        return [*headers, *(self.added_headers or ())]

    @property
    def direction(self) -> str:
        return self.connection.direction

    @property
    def source(self) -> Address | None:
        return self.connection.source

    def forwarded(
        self,
        now: float,
        *,
        dst_addr: Address | None = None,
        server_id: str | None = None,
        dst_labels: Iterable[tuple[str, str]] = (),
    ) -> None:
        """The request was handed upstream (the first time only; retries change nothing)."""
        if self.forwarded_at is not None:
            return
        self.forwarded_at = now
        if dst_addr is not None:
            self.dst_addr = dst_addr
        self.server_id = server_id
        for name, value in dst_labels:
            self.dst_labels[name.removeprefix("dst_")] = value
        for observer, token in self.sinks:
            observer.on_forwarded(self, token)

    def response(
        self, status: int, headers: Headers, now: float, content_length: int | None = None
    ) -> None:
        """The final response head (once; informational 1xx heads are not reported)."""
        if self.response_at is not None:
            return
        self.response_at = now
        self.precise_response = self.clock()
        self.status = status
        self.response_headers = headers
        self.content_length = content_length
        for observer, token in self.sinks:
            observer.on_response(self, token)

    def end(
        self,
        now: float,
        *,
        grpc_status: int | None = None,
        reset_code: int | None = None,
        error: str | None = None,
        trailers: Headers = (),
    ) -> None:
        """The response ended, completely or not (once). A missing head is reported first."""
        if self.ended_at is not None:
            return
        if self.response_at is None:
            self.response(self.status, (), now)
        self.ended_at = now
        self.precise_ended = self.clock()
        self.grpc_status = grpc_status
        self.reset_code = reset_code
        self.error = error
        if trailers:
            self.trailers = trailers
        for observer, token in self.sinks:
            observer.on_end(self, token)

    def answered(
        self, status: int, error: str | None, now: float, *, grpc_status: int | None = None
    ) -> None:
        """The proxy answered the request itself (an error or a synthetic response)."""
        if self.response_at is None:
            self.status = status
        self.end(now, grpc_status=grpc_status, error=error)


class Observers:
    """The observers of one listener, compiled once (:class:`ObserverHub` rebuilds it)."""

    __slots__ = ("_clock", "_observers")

    def __init__(
        self, observers: tuple[RequestObserver, ...], clock: Clock = time.perf_counter
    ) -> None:
        self._observers = observers
        self._clock = clock

    def begin(
        self,
        connection: ConnectionFacts,
        stream_id: int,
        *,
        method: bytes,
        scheme: bytes,
        authority: bytes,
        path: bytes,
        uri: bytes,
        version: str,
        headers: Headers,
        now: float,
    ) -> ObservedRequest | None:
        """A request head arrived: its record, or ``None`` when no observer wants it."""
        request = ObservedRequest(
            connection,
            stream_id,
            method=method,
            scheme=scheme,
            authority=authority,
            path=path,
            uri=uri,
            version=version,
            headers=headers,
            now=now,
            clock=self._clock,
        )
        sinks = []
        for observer in self._observers:
            token = observer.on_request(request)
            if token is not None:
                sinks.append((observer, token))
        if not sinks:
            return None
        request.sinks = tuple(sinks)
        return request

    def begin_h2(
        self, connection: ConnectionFacts, stream_id: int, headers: Headers, now: float
    ) -> ObservedRequest | None:
        """:meth:`begin` for an HTTP/2 request (pseudo-headers give the head)."""
        method = path = authority = b""
        scheme = b"http"
        for name, value in headers:
            if name[:1] != b":":
                break
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":scheme":
                scheme = value
        uri = scheme + b"://" + authority + path if authority else path
        return self.begin(
            connection,
            stream_id,
            method=method,
            scheme=scheme,
            authority=authority,
            path=path,
            uri=uri,
            version="HTTP/2.0",
            headers=headers,
            now=now,
        )


Attach = Callable[["Observers | None"], None]


class ObserverHub:
    """The proxy's observers, per direction, compiled into each listener's ``observers``.

    Listeners register a setter with :meth:`attach`; every :meth:`add` / :meth:`remove`
    recompiles the observers of each direction and hands the result to its listeners.
    """

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self._clock = clock
        self._observers: dict[str, list[RequestObserver]] = {"inbound": [], "outbound": []}
        self._listeners: list[tuple[str, Attach]] = []

    def attach(self, direction: str, setter: Attach) -> None:
        """A listener of ``direction`` wants its compiled observers (now and on change)."""
        self._listeners.append((direction, setter))
        setter(self.compiled(direction))

    def add(self, observer: RequestObserver, directions: Iterable[str]) -> None:
        for direction in directions:
            self._observers[direction].append(observer)
        self._recompile()

    def remove(self, observer: RequestObserver) -> None:
        for observers in self._observers.values():
            if observer in observers:
                observers.remove(observer)
        self._recompile()

    def compiled(self, direction: str) -> Observers | None:
        observers = self._observers[direction]
        return Observers(tuple(observers), self._clock) if observers else None

    def _recompile(self) -> None:
        compiled = {d: self.compiled(d) for d in self._observers}
        for direction, setter in self._listeners:
            setter(compiled[direction])
