"""Accepted connections: find the target, detect the protocol, hand off to a handler.

Every connection a listener accepts starts here. Its original destination is read once;
connections that would loop back into the proxy are refused. Opaque ports skip detection
entirely, so server-speaks-first protocols (MySQL, SMTP) are connected at once. Otherwise
the first bytes choose HTTP/2, HTTP/1 or opaque (:mod:`gossamer_proxy.detect`); a client that
stays silent for the detect timeout is forwarded as opaque TCP.

Inbound connections that arrive over mesh mTLS (:mod:`.inbound_tls`) carry the client's
identity into the TLS metric labels, authorization and ``l5d-client-id``. When the client
negotiated ALPN ``transport.l5d.io/v1`` a transport header comes first: it names the target
port (and may fix the HTTP version, skipping detection); such connections are only served
for a client that presented a certificate from the mesh trust roots. A direct connection to
the inbound port itself is only served with such a header. Inbound targets are the pod's own
addresses, never loopback and never the proxy's own listeners (:mod:`.inbound_target`).
Opaque connections are authorized once here; HTTP requests one by one in the HTTP servers.

Outbound opaque connections with discovery are balanced per connection: the pick is held
for the connection's lifetime (so P2C sees it as pending load) and finished with the
connect time as its latency sample; a connect failure counts against the endpoint.

Outbound, the target's policy is known before detection (boundedly waited for, with the
profile): an ``opaque`` policy skips detection, and a ``tls`` policy (``TLSRoute``\\s) reads
the client's ClientHello instead, whose SNI chooses the route (:mod:`.mesh.tcp_policy`); the
TLS itself passes through untouched. A client that sends no ClientHello there is refused.
Opaque and TLS routes from resources (``TCPRoute``, ``TLSRoute``, an ``EgressNetwork``'s)
then choose the backend by weight, or refuse the connection (:mod:`.outbound.tcp_routes`).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Final, cast

import structlog
from gossamer_api.transport_header import (
    SessionProtocol,
    TransportHeaderDecoder,
    TransportHeaderError,
)

from .config import Endpoint
from .connect import is_loop, original_destination, set_nodelay
from .context import ListenerContext
from .detect import DETECT_BUFFER_LIMIT, Protocol, detect
from .errors import ProxyError
from .halfclose import can_stay_half_open
from .http1.server import Http1Server
from .http2.balanced import BalancedH2Server
from .http2.bridge import H2Server
from .inbound_authz import InboundPeer, client_ip
from .inbound_target import canonical_host, header_target, refuse_target
from .inbound_tls import PLAINTEXT, InboundMode
from .mesh.authz import ClientInfo
from .mesh.balancer import Outcome
from .mesh.outbound_policy import OutboundPolicyModel
from .mesh.tcp_policy import TcpRoute, route_connection
from .mesh.tls_contexts import peer_identity
from .mesh.tls_detect import ClientHello, NeedMore, detect_client_hello
from .mesh.tls_labels import inbound_tls_labels
from .mesh.transport import ALPN_PROTOCOL, TransportError, inbound_forward
from .metrics import TargetLabels, TcpStats, tls_values
from .opaque import PausedProtocol, SpliceRelay, relay_transports
from .outbound.discovery import TargetHandle
from .outbound.plan import Pick
from .outbound.tcp_routes import policy_tcp_routes

__all__ = ["AcceptedConnection"]

_log = structlog.get_logger("gossamer.proxy")
_DETECT_MAX: Final = DETECT_BUFFER_LIMIT


class AcceptedConnection(asyncio.Protocol):
    """A connection before its protocol is known (then it hands itself over)."""

    __slots__ = (
        "_buffer",
        "_connecting",
        "_discovering",
        "_done",
        "_eof",
        "_header",
        "_local",
        "_release",
        "_sni",
        "_sni_policy",
        "_timer",
        "client_id",
        "ctx",
        "labels",
        "mode",
        "peer",
        "target",
        "tcp",
        "tls",
        "transport",
    )

    def __init__(self, ctx: ListenerContext, mode: InboundMode = PLAINTEXT) -> None:
        self.ctx = ctx
        self.mode = mode
        self.tls: tuple[str, ...] = ()
        self.client_id: str | None = None
        self.peer: InboundPeer | None = None
        self._header: TransportHeaderDecoder | None = None
        self._connecting = False
        self._discovering = False
        self._local = Endpoint("0.0.0.0", 0)  # noqa: S104 - placeholder until connection_made
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None
        self._done = False
        self._eof = False
        self.target = Endpoint("0.0.0.0", 0)  # noqa: S104 - placeholder until connection_made
        self.labels: TargetLabels | None = None
        self.tcp: TcpStats | None = None
        #: Outbound with discovery: ends the balancer pick when the relay closes.
        self._release: Callable[[], None] | None = None
        #: Outbound under a ``tls`` policy: the policy while the ClientHello is awaited.
        self._sni_policy: OutboundPolicyModel | None = None
        #: The ClientHello's server name (``""``: a ClientHello without SNI).
        self._sni: str | None = None

    # -- accept ------------------------------------------------------------------------------

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)  # uvloop transports are not subclasses
        self.transport = transport
        ctx = self.ctx
        set_nodelay(transport)
        if ctx.draining:
            transport.abort()
            return
        sockname = transport.get_extra_info("sockname")
        self._local = Endpoint(str(sockname[0]), int(sockname[1]))
        header_expected = False
        if ctx.inbound and ctx.identity is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            if self.mode.terminate and ssl_object is not None:
                self.client_id = peer_identity(ssl_object)
                labels = inbound_tls_labels(tls=True, client_id=self.client_id)
                header_expected = ssl_object.selected_alpn_protocol() == ALPN_PROTOCOL
            elif self.mode.passthrough_sni is not None:
                labels = inbound_tls_labels(tls=False, passthrough_sni=self.mode.passthrough_sni)
            else:
                labels = inbound_tls_labels(tls=False)
            self.tls = tls_values(labels)
        elif not ctx.inbound:
            self.tls = ctx.outbound_tls
        if header_expected:
            if self.client_id is None:
                # A transport header lets the client choose the port: only a mutually
                # authenticated peer (a certificate from the mesh trust roots) may send one.
                _log.info("transport_header_refused", error="client presented no identity")
                transport.abort()
                return
            # The target port is in the transport header; nothing else is decided before it.
            self._header = TransportHeaderDecoder()
            self._timer = asyncio.get_running_loop().call_later(
                ctx.detect_timeout, self._header_timed_out
            )
            return
        target = original_destination(transport)
        if ctx.fixed_target is not None:
            target = ctx.fixed_target
        elif is_loop(target, ctx.listen, self._local):
            # Either nobody redirected this connection (a client dialled the listener
            # directly without a transport header) or the target is the proxy itself:
            # forwarding would loop.
            _log.info("connection_refused_loop", direction=ctx.direction, target=str(target))
            transport.abort()
            return
        elif ctx.inbound:
            target = Endpoint(canonical_host(target.host), target.port)
            refusal = refuse_target(
                target, redirected=True, own_ports=ctx.own_ports, pod_ips=ctx.allowed_ips
            )
            if refusal is not None:
                _log.info("connection_refused_target", target=str(target), error=refusal)
                transport.abort()
                return
        self._serve(target)

    def _serve(self, target: Endpoint, session: SessionProtocol | None = None) -> None:
        """The target is known: set up metrics and policy, then detect (or skip it)."""
        ctx = self.ctx
        transport = self.transport
        assert transport is not None
        self.target = target
        opaque = target.port in ctx.opaque_ports or self.mode.passthrough_sni is not None
        srv = None
        if ctx.inbound and ctx.policies is not None:
            policy = ctx.policies.policy(target.port)
            srv = (policy.meta.group, policy.meta.kind, policy.meta.name)
            opaque = opaque or policy.protocol in ("opaque", "tls")
            client = ClientInfo(
                ip=client_ip(transport.get_extra_info("peername")),
                tls=self.mode.terminate,
                identity=self.client_id,
            )
            self.peer = InboundPeer(
                client=client,
                policy=policy,
                port=target.port,
                target_addr=str(target),
                metrics=ctx.authz_metrics,
                # Fixed policies (no policy service) never change: nothing to look up again.
                current=ctx.policies.policy if ctx.policies.watched else None,
            )
        if srv is None:
            self.labels = TargetLabels(
                ctx.direction, target.host, target.port, ctx.inbound, self.tls
            )
        else:
            self.labels = TargetLabels(
                ctx.direction, target.host, target.port, ctx.inbound, self.tls, srv
            )
        self.tcp = ctx.metrics.tcp(self.labels, "src")
        self.tcp.open()
        ctx.connections.add(self)
        if session is not None:
            initial, self._buffer = self._buffer, b""
            if initial and self.tcp is not None:
                self.tcp.read.value += len(initial)
            self._buffer = initial
            protocol = Protocol.HTTP2 if session is SessionProtocol.HTTP2 else Protocol.HTTP1
            self._decide(protocol)
            return
        if opaque:
            self._go_opaque(self._take_buffer())
            return
        if not ctx.inbound and ctx.discovery is not None and ctx.discovery.resolves(target):
            # Discovery comes before detection: the profile or the policy may say the port
            # is opaque (server-speaks-first protocols would otherwise wait out the detect
            # timeout), or TLS (routed by SNI).
            self._discovering = True
            transport.pause_reading()
            ctx.spawn(self._discover(target))
            return
        self._start_detect()

    async def _discover(self, target: Endpoint) -> None:
        ctx = self.ctx
        assert ctx.discovery is not None
        handle = ctx.discovery.target(target)
        try:
            # Both watches were started together: the waits overlap.
            profile, policy = await asyncio.gather(handle.profile(), handle.policy())
        finally:
            handle.close()  # the watches stay cached for the handler that comes next
        self._discovering = False
        transport = self.transport
        if self._done or transport is None or transport.is_closing():
            return
        if policy is not None and policy.protocol == "tls":
            self._sni_policy = policy
            transport.resume_reading()
            self._start_sni_detect()
            return
        opaque_policy = policy is not None and policy.protocol == "opaque"
        if opaque_policy or (profile is not None and profile.opaque_protocol):
            self._go_opaque(self._take_buffer())
            return
        transport.resume_reading()
        self._start_detect()

    def _start_sni_detect(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(
            self.ctx.detect_timeout, self._timed_out
        )
        if self._buffer or self._eof:
            if self.tcp is not None:
                self.tcp.read.value += len(self._buffer)
            self._check_client_hello()

    def _check_client_hello(self) -> None:
        """A ``tls`` policy's port: wait for the whole ClientHello, then route by its SNI."""
        found = detect_client_hello(self._buffer)
        if isinstance(found, NeedMore) and not self._eof:
            return
        if isinstance(found, ClientHello):
            self._sni = found.server_name or ""
            initial, self._buffer = self._buffer, b""
            self._go_opaque(initial)  # its bytes are counted already
            return
        reason = (
            "connection closed in the ClientHello" if isinstance(found, NeedMore) else found.reason
        )
        self._refuse_not_tls(reason)

    def _refuse_not_tls(self, reason: str) -> None:
        policy = self._sni_policy
        _log.info("tls_route_refused", target=str(self.target), error="not_tls", reason=reason)
        discovery = self.ctx.discovery
        if policy is not None and discovery is not None and discovery.tcp_route_metrics:
            discovery.tcp_route_metrics.refused(policy, None, self.target.port, "not_tls", tls=True)
        if self.tcp is not None:
            self.tcp.close(0)
        self._refuse()

    def _start_detect(self) -> None:
        ctx = self.ctx
        self._timer = asyncio.get_running_loop().call_later(ctx.detect_timeout, self._timed_out)
        if self._buffer or self._eof:
            if self.tcp is not None:
                self.tcp.read.value += len(self._buffer)
            self._decide(detect(self._buffer, eof=self._eof))

    def _take_buffer(self) -> bytes:
        initial, self._buffer = self._buffer, b""
        if initial and self.tcp is not None:
            self.tcp.read.value += len(initial)
        return initial

    def _header_timed_out(self) -> None:
        self._timer = None
        if self._header is not None and not self._done:
            _log.info("transport_header_timeout")
            self._refuse()

    def _refuse(self) -> None:
        self._done = True
        self._cancel_timer()
        self.ctx.connections.discard(self)
        if self.transport is not None:
            self.transport.abort()

    def _header_data(self, data: bytes, *, eof: bool = False) -> None:
        decoder = self._header
        assert decoder is not None
        try:
            decoded = decoder.receive_data(data)
            if decoded is None and eof:
                decoder.receive_eof()
            if decoded is None:
                return
            forward = inbound_forward(decoded.header, gateway_suffixes=self.ctx.gateway_suffixes)
        except (TransportHeaderError, TransportError) as exc:
            _log.info("transport_header_refused", error=str(exc))
            self._refuse()
            return
        self._header = None
        self._cancel_timer()
        self._buffer = decoded.remainder
        ctx = self.ctx
        if ctx.fixed_target is not None:
            target = ctx.fixed_target
        else:
            target = header_target(self._local, forward.port)
            refusal = refuse_target(
                target, redirected=False, own_ports=ctx.own_ports, pod_ips=ctx.allowed_ips
            )
            if refusal is not None:
                _log.info("transport_header_refused", target=str(target), error=refusal)
                self._refuse()
                return
        self._serve(target, forward.session_protocol)

    def data_received(self, data: bytes) -> None:
        if self._done:
            if self._connecting and self.transport is not None:
                # uvloop may deliver bytes read before pause_reading() took effect (a
                # pause inside connection_made): keep them for the upstream.
                self._buffer += data
                self.transport.pause_reading()
            return
        if self._header is not None:
            self._header_data(data)
            return
        if self.tcp is None or self._discovering:
            self._buffer += data
            return
        self.tcp.read.value += len(data)
        self._buffer += data
        if self._sni_policy is not None:
            self._check_client_hello()
            return
        self._decide(detect(self._buffer))

    def eof_received(self) -> bool:
        self._eof = True
        if self._header is not None and not self._done:
            self._header_data(b"", eof=True)
        elif not self._done and self.tcp is not None and not self._discovering:
            if self._sni_policy is not None:
                self._check_client_hello()
            else:
                self._decide(detect(self._buffer, eof=True))
        # Plain TCP: the handler decides when to close. TLS closes now (see halfclose); what
        # the client sent still goes upstream (see _opaque).
        return can_stay_half_open(self.transport)

    # -- housekeeping (while detecting) -----------------------------------------------------------

    def tick(self, now: float) -> None:
        pass  # the detect timer bounds this phase

    def is_idle(self) -> bool:
        return True

    def drain(self) -> None:
        """Shutting down: a connection that has not sent a request yet is simply closed."""
        if not self._done and self.transport is not None:
            self._cancel_timer()
            self.transport.close()  # connection_lost settles the metrics

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.connections.discard(self)
        if not self._done:
            self._done = True
            self._cancel_timer()
            if self.tcp is not None:
                self.tcp.close(getattr(exc, "errno", 0) or 0 if exc else 0)

    def _timed_out(self) -> None:
        self._timer = None
        if not self._done:
            if self._sni_policy is not None:
                self._refuse_not_tls("no ClientHello before the detect timeout")
                return
            self._decide(Protocol.OPAQUE)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- hand-off ----------------------------------------------------------------------------

    def _decide(self, protocol: Protocol | None) -> None:
        if protocol is None:
            if len(self._buffer) < _DETECT_MAX:
                return
            protocol = Protocol.OPAQUE
        self.ctx.connections.discard(self)
        self._done = True
        self._cancel_timer()
        transport = self.transport
        assert transport is not None
        assert self.labels is not None
        assert self.tcp is not None
        transport.pause_reading()
        # Bytes were counted here already; the handler counts from now on.
        initial, self._buffer = self._buffer, b""
        self.tcp.read.value -= len(initial)
        if protocol is Protocol.HTTP1:
            server = Http1Server(self.ctx, self.target, self.labels, self.tcp, self.peer)
            server.start(transport, initial, eof=self._eof)
        elif protocol is Protocol.HTTP2:
            # Outbound with discovery, each stream is routed and balanced on its own.
            h2_class = (
                BalancedH2Server
                if self.ctx.discovery is not None and not self.ctx.inbound
                else H2Server
            )
            h2_server = h2_class(self.ctx, self.target, self.labels, self.tcp, self.peer)
            h2_server.start(transport, initial, eof=self._eof)
        else:
            self.tcp.read.value += len(initial)
            self._go_opaque(initial)

    def _endpoint(self) -> Endpoint:
        ctx = self.ctx
        if ctx.fixed_target is not None:
            return ctx.fixed_target
        if ctx.inbound:
            return self.target  # the pod address checked in connection_made
        return ctx.resolver.resolve(self.target, None)[0]

    def _go_opaque(self, initial: bytes = b"") -> None:
        self.ctx.connections.discard(self)
        self._done = True
        self._cancel_timer()
        transport = self.transport
        assert transport is not None
        transport.pause_reading()
        if self.peer is not None and not self.peer.allow_tcp():
            if self.tcp is not None:
                self.tcp.close(0)
            transport.abort()  # an unauthorized TCP connection is refused
            return
        self._connecting = True
        self.ctx.spawn(self._opaque(transport, initial))

    async def _pick(self, initial: bytes) -> Pick | None:
        """Outbound with discovery: where this connection goes (``None``: refused, closed)."""
        ctx = self.ctx
        assert ctx.discovery is not None
        assert self.tcp is not None
        handle = ctx.discovery.target(self.target)
        try:
            profile = await handle.profile()
            policy = await handle.policy()
            routed = policy_tcp_routes(policy)
            if routed is None:
                pick = await handle.pick(profile, handle.default_authority(profile), None)
            else:
                assert policy is not None
                routes, tls = routed
                routed_pick = await self._route(handle, policy, routes, tls, initial)
                if routed_pick is None:
                    handle.close()
                    self.tcp.close(0)
                    if self.transport is not None:
                        self.transport.abort()  # refused, as Linkerd refuses a forbidden route
                    return None
                pick = routed_pick
        except ProxyError as exc:
            handle.close()
            _log.info("opaque_dispatch_failed", target=str(self.target), error=str(exc))
            self.tcp.close(0)
            if self.transport is not None:
                self.transport.abort()
            return None
        pick.on_release(handle.close)
        return pick

    async def _route(
        self,
        handle: TargetHandle,
        policy: OutboundPolicyModel,
        routes: tuple[TcpRoute, ...],
        tls: bool,
        initial: bytes,
    ) -> Pick | None:
        """The policy's opaque/TLS route and backend for this connection (``None``: refused;
        counted either way)."""
        discovery = self.ctx.discovery
        assert discovery is not None
        sni = self._sni
        if tls and sni is None:
            # Detected as opaque before the policy arrived: the ClientHello may be at hand.
            hello = detect_client_hello(initial)
            sni = (hello.server_name or "") if isinstance(hello, ClientHello) else None
        decision = route_connection(routes, discovery.rng, tls=tls, server_name=sni or None)
        metrics = discovery.tcp_route_metrics
        port = self.target.port
        if metrics is not None and decision.route is not None:
            metrics.opened(policy, decision.route, port, tls=tls)
        if decision.error is None and decision.backend is not None:
            return await handle.pick_backend(decision.backend, None, None)
        error = decision.error or "no_backend"
        _log.info(
            "tls_route_refused" if tls else "tcp_route_refused",
            target=str(self.target),
            sni=(sni or "")[:253] if tls else None,
            route=decision.route.meta.name if decision.route is not None else None,
            error=error,
            message=decision.message or None,
        )
        if metrics is not None:
            metrics.refused(policy, decision.route, port, error, tls=tls)
        return None

    async def _opaque(self, transport: asyncio.Transport, initial: bytes) -> None:
        ctx = self.ctx
        assert self.labels is not None
        assert self.tcp is not None
        pick: Pick | None = None
        labels = self.labels
        if ctx.discovery is not None and not ctx.inbound:
            pick = await self._pick(initial)
            if pick is None:
                return
            endpoint, tls = pick.endpoint, pick.tls
            labels = TargetLabels(
                ctx.direction,
                endpoint.host,
                endpoint.port,
                False,
                pick.plan.tls_labels,
                dst=pick.plan.dst_labels,
            )
        else:
            endpoint = self._endpoint()
            tls = ctx.connector.tls_plan(endpoint)
        dst = ctx.metrics.tcp(labels, "dst")
        src = self.tcp
        sock = transport.get_extra_info("socket")
        use_splice = (
            ctx.splice
            and sock is not None
            and hasattr(os, "splice")
            and transport.get_extra_info("ssl_object") is None
            and tls is None
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if use_splice:
                upstream_sock = await ctx.connector.open_socket(endpoint)
            else:
                up_transport, paused = await ctx.connector.open(endpoint, PausedProtocol, tls=tls)
        except ProxyError as exc:
            _log.info("opaque_connect_failed", target=str(endpoint), error=str(exc))
            if pick is not None:
                pick.finish(Outcome.CONNECT_FAILURE, latency=loop.time() - started)
            src.close(0)
            transport.abort()
            return
        except BaseException:
            if pick is not None:
                pick.finish(Outcome.CANCELLED)
            raise
        connect_time = loop.time() - started
        if transport.is_closing():
            # A TLS client that sent everything and closed while we connected (it cannot
            # stay half-open) still has what it sent delivered, then its end; no answer can
            # go back. Any other client that went away is given up.
            delivered = self._eof and not use_splice
            if use_splice:
                upstream_sock.close()
            elif delivered:
                self._deliver_and_close(up_transport, initial, src, dst)
            else:
                up_transport.abort()
            if pick is not None:
                outcome = Outcome.SUCCESS if delivered else Outcome.CANCELLED
                pick.finish(outcome, latency=connect_time)
            src.close(0)
            return
        if pick is not None:
            # Held until the connection ends: an open connection is load on the endpoint.
            finished = pick
            self._release = lambda: finished.finish(Outcome.SUCCESS, latency=connect_time)
        dst.open()
        self._connecting = False
        if self._buffer:
            late, self._buffer = self._buffer, b""
            src.read.value += len(late)
            initial += late
        if use_splice:
            await self._splice(transport, upstream_sock, initial, src, dst)
            return
        down, up = relay_transports(
            transport,
            up_transport,
            to_upstream=initial,
            downstream_stats=src,
            upstream_stats=dst,
            on_closed=lambda: self._relay_closed(src, dst),
        )
        if self._eof:
            down.eof_received()  # the client half-closed during detection
        if initial:
            dst.written.value += len(initial)
        up.replay(paused)  # a server that spoke first

    def _deliver_and_close(
        self, upstream: asyncio.Transport, initial: bytes, src: TcpStats, dst: TcpStats
    ) -> None:
        late, self._buffer = self._buffer, b""
        src.read.value += len(late)
        data = initial + late
        dst.open()
        if data:
            upstream.write(data)
            dst.written.value += len(data)
        upstream.close()  # after the write buffer is flushed: the upstream reads, then EOF
        dst.close(0)

    async def _splice(
        self,
        transport: asyncio.Transport,
        upstream: socket.socket,
        initial: bytes,
        src: TcpStats,
        dst: TcpStats,
    ) -> None:
        """Take the client socket from its transport and splice it to ``upstream``."""
        loop = asyncio.get_running_loop()
        pseudo = transport.get_extra_info("socket")
        client = socket.socket(fileno=os.dup(pseudo.fileno()))
        client.setblocking(False)
        transport.abort()  # closes the transport's descriptor; our duplicate keeps the socket
        try:
            if initial:
                await loop.sock_sendall(upstream, initial)
                dst.written.value += len(initial)
            relay = SpliceRelay(client, upstream, a_stats=src, b_stats=dst)
            relay.start(a_eof=self._eof)
            self.ctx.opaque_relays.add(relay)
            try:
                await relay.done
            except asyncio.CancelledError:
                relay.close(abort=True)
                raise
            finally:
                self.ctx.opaque_relays.discard(relay)
                errno_ = relay.error
                src.close(errno_)
                dst.close(errno_)
                self._release_pick()
        except OSError:
            client.close()
            upstream.close()
            src.close(0)
            dst.close(0)
            self._release_pick()

    def _relay_closed(self, src: TcpStats, dst: TcpStats) -> None:
        _close_both(src, dst)
        self._release_pick()

    def _release_pick(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


def _close_both(src: TcpStats, dst: TcpStats) -> None:
    src.close(0)
    dst.close(0)
