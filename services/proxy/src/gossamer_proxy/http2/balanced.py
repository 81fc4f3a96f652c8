"""Outbound HTTP/2 and gRPC with discovery: every stream routed, balanced, timed and retried.

Linkerd's outbound HTTP stack works per request whatever the protocol (linkerd-wire.md §9
outbound steps 3-8), so a gRPC client's one long-lived connection is spread over every
endpoint of the service. :class:`BalancedH2Server` does that on top of
:class:`~.bridge.H2Server`'s stream bridging:

* **route** (first attempt): a ServiceProfile with routes routes by them (timeout, retries,
  ``route_*`` metrics); otherwise an ``OutboundPolicy`` with ``HTTPRoute``/``GRPCRoute``
  resources picks a rule and a weighted backend (:mod:`..mesh.policy_router`), its
  timeouts, ``Retry`` and backoff, and its filters (:mod:`..mesh.route_filters`: request
  and response header modifiers rewrite the heads, redirects and injected failures are
  answered by the proxy — trailers-only for gRPC); otherwise the profile's
  ``dst_overrides`` or the service itself. The ``l5d-retry-*``/``l5d-*-timeout`` request
  directives are never forwarded, and override the policy route's settings only where the
  route allows them (``allow_l5d_request_headers``), as for HTTP/1;
* **pick** an endpoint per attempt (P2C peak-EWMA behind the fail-fast queue), and open a
  stream on a pooled connection to it (:mod:`.upstream_pool`), connecting when none is
  usable; a failed connect sent nothing, so it is re-dispatched to another pick (up to three
  connects) before the stream gets an error;
* **finish** the pick when the stream ends: its latency is the time to the response head,
  its outcome the response's classification (transport failures always; failed responses
  when the Service opted in to response-based failure accrual, as for HTTP/1), CANCELLED
  when the client reset the stream;
* **time out** by the route's request timeout (retries included): 504 /
  ``DEADLINE_EXCEEDED`` before the response started, RST_STREAM toward the client after;
  and each attempt by the attempt timeout until its response head (then retried, or 504);
  the upstream stream is reset with CANCEL either way;
* **retry** a failed attempt on retryable routes when nothing reached the client yet: a
  failed head that ends the stream (a trailers-only gRPC error, a bare 5xx), or a stream
  reset, refused or lost before any response byte (:mod:`..mesh.stream_retry`). The request
  body is kept for replay up to 64 KiB (a policy route's ``max_request_bytes``); a larger
  one streams through and is not retried. Profile routes retry within the profile's retry
  budget, policy routes up to their ``max_retries``, after their backoff.

Streams are counted in the request metrics once, under the first endpoint they were sent to
(with its ``dst_*`` labels), or the listener's labels when the proxy answered them itself;
``route_request_total`` per request and ``route_actual_request_total`` per attempt, as for
HTTP/1.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

import structlog
from gossamer_api.transport_header import SessionProtocol

from ..config import Endpoint
from ..context import ListenerContext
from ..errors import ProxyError, ProxyErrorKind
from ..h2codec import h2
from ..http1.server import RESPONSE_FAILURES_EJECT
from ..inbound_authz import InboundPeer
from ..mesh.balancer import Outcome
from ..mesh.classify import Classification, classify_for_accrual
from ..mesh.l5d_headers import OutboundDirectives, outbound_request_headers
from ..mesh.policy_router import PolicyRoute, direct, policy_applies, route_request
from ..mesh.profile import Profile, ProfileRoute
from ..mesh.request import RequestView
from ..mesh.retry import DEFAULT_MAX_REQUEST_BYTES, RetryVerdict
from ..mesh.route_filters import RequestTarget, RouteFilters, SyntheticResponse
from ..mesh.stream_retry import StreamRetry, response_head_status
from ..metrics import TargetLabels, TcpStats
from ..outbound.discovery import TargetHandle
from ..outbound.plan import EndpointPlan, Pick
from ..outbound.policy_route_metrics import (
    BackendSeries,
    RouteSeries,
    default_route_series,
    error_label,
    record_end,
)
from ..outbound.redispatch import may_redispatch
from ..outbound.route_metrics import RouteStats
from .authority import AuthorityError, settle_authority
from .bridge import _STRIP_REQUEST, H2Server, Headers, _Flow, _H2Upstream, _Pair
from .upstream_pool import PoolKey, UpstreamPool

__all__ = ["BalancedH2Server"]

_log = structlog.get_logger("gossamer.proxy")

_MAX_CONNECTS = 3
"""Connections tried for one attempt before its stream gets the last error."""


class _RoutedPair(_Pair):
    """A client stream with its route, its current pick and its retry state."""

    __slots__ = (
        "attempt",
        "attempt_started",
        "attempt_timeout",
        "attempt_timer",
        "awaiting_connect",
        "backend_series",
        "head_latency",
        "pick",
        "policy_route",
        "profile",
        "response_filters",
        "retry_timer",
        "route",
        "route_series",
        "route_stats",
        "task",
        "timer",
    )

    def __init__(self, down_id: int, headers: Headers) -> None:
        super().__init__(down_id, headers)
        #: Attempts sent so far (1 = the original request); 0 until routed.
        self.attempt = 0
        self.attempt_started = 0.0
        self.attempt_timeout: float | None = None
        self.attempt_timer: asyncio.TimerHandle | None = None
        self.head_latency: float | None = None
        self.pick: Pick | None = None
        self.profile: Profile | None = None
        self.route: ProfileRoute | None = None
        self.policy_route: PolicyRoute | None = None
        self.route_stats: RouteStats | None = None
        #: Policy-routed: the route's (and its backend's) ``outbound_*_route_*`` series.
        self.route_series: RouteSeries | None = None
        self.backend_series: BackendSeries | None = None
        #: The request timeout (the whole exchange).
        self.timer: asyncio.TimerHandle | None = None
        #: A retry waiting out its backoff.
        self.retry_timer: asyncio.TimerHandle | None = None
        #: The policy route's filters that rewrite the response head.
        self.response_filters: tuple[RouteFilters, ...] = ()
        #: The task routing, picking and sending the current attempt.
        self.task: asyncio.Task[None] | None = None
        #: Whether that task waits for a connection (and may be cancelled there).
        self.awaiting_connect = False

    def finish_pick(self, outcome: Outcome, latency: float | None = None) -> None:
        pick, self.pick = self.pick, None
        if pick is not None:
            pick.finish(outcome, latency=latency)

    def cancel_timers(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.attempt_timer is not None:
            self.attempt_timer.cancel()
            self.attempt_timer = None
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None


def _routed(pair: _Pair) -> _RoutedPair:
    return cast(_RoutedPair, pair)


class BalancedH2Server(H2Server):
    """A client HTTP/2 connection whose streams are each routed and balanced."""

    _pair_class = _RoutedPair
    #: The ``l5d-*`` directives stay in the head until :meth:`_route` has read them.
    _outbound_strip = _STRIP_REQUEST

    def __init__(
        self,
        ctx: ListenerContext,
        target: Endpoint,
        labels: TargetLabels,
        tcp: TcpStats,
        peer: InboundPeer | None = None,
    ) -> None:
        super().__init__(ctx, target, labels, tcp, peer)
        self.pool: UpstreamPool[_H2Upstream] = UpstreamPool()

    # -- lifecycle ---------------------------------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        for pair in self.pairs.values():
            routed = _routed(pair)
            routed.cancel_timers()
            routed.finish_pick(Outcome.CANCELLED)
        try:
            super().connection_lost(exc)
        finally:  # even if the codec's release failed
            for up in self.pool.connections():
                up.flush_out()
            self.pool.close_all()

    def tick(self, now: float) -> None:
        super().tick(now)
        self.pool.sweep(now, self.ctx.limits.idle_timeout)

    def _flush_upstreams(self) -> None:
        for up in self.pool.connections():
            up.flush_out()

    def _client_reset(self, pair: _Pair, code: int) -> None:
        routed = _routed(pair)
        routed.cancel_timers()
        routed.finish_pick(Outcome.CANCELLED)
        if routed.awaiting_connect and routed.task is not None:
            routed.task.cancel()  # its wait only: the connect goes on for the pool
        super()._client_reset(pair, code)

    def _alive(self, pair: _Pair) -> bool:
        return not self._closed and self.pairs.get(pair.down_id) is pair

    def _target_handle(self) -> TargetHandle:
        handle = self._handle
        if handle is None:
            assert self.ctx.discovery is not None
            handle = self._handle = self.ctx.discovery.target(self.target)
        return handle

    # -- routing and picking -----------------------------------------------------------------

    def _forward(self, pair: _Pair) -> None:
        routed = _routed(pair)
        routed.task = self.ctx.spawn(self._dispatch(routed))

    async def _dispatch(self, pair: _RoutedPair) -> None:
        """Route (first attempt), pick an endpoint, then open the stream on a connection."""
        handle = self._target_handle()
        try:
            if pair.attempt == 0:
                pair.attempt = 1
                answer = await self._route(pair, handle)
                if not self._alive(pair):
                    return
                if answer is not None:
                    self._synthesize(pair, answer)
                    self._flush_out()
                    return
            pick = await self._pick(pair, handle)
        except ProxyError as exc:
            if self._alive(pair):
                self.respond_error(pair, exc.kind, exc.detail)
                self._flush_out()
            return
        if not self._alive(pair):
            pick.finish(Outcome.CANCELLED)
            return
        if pair.route_stats is not None:
            pair.route_stats.actual.value += 1
        await self._send(pair, pick)

    async def _route(self, pair: _RoutedPair, handle: TargetHandle) -> SyntheticResponse | None:
        """Find the stream's route; arm its timeout; keep its body when it may be retried.

        The ``l5d-*`` directives leave the forwarded head here, whatever the route. Returns
        the response a policy filter answers with instead of forwarding, else ``None``.
        """
        discovery = self.ctx.discovery
        assert discovery is not None
        original = pair.request_headers
        pair.request_headers, directives = outbound_request_headers(original, allow_overrides=True)
        profile = pair.profile = await handle.profile()
        if profile is None or not profile.routes:
            if profile is not None and len(profile.dst_overrides) > 0:
                return None
            policy = await handle.policy()
            if not self._alive(pair):
                return None
            if not policy_applies(profile, policy, http2=True):
                if discovery.policy_route_metrics is not None:
                    grpc = policy is not None and policy.protocol == "grpc"
                    default = handle.default_route(http2=True)
                    pair.route_series, pair.backend_series = default_route_series(
                        discovery.policy_route_metrics, default, _authority_of(original), grpc=grpc
                    )
                return None
            assert policy is not None
            view = _request_view(original)
            decision = pair.policy_route = route_request(policy, view, discovery.rng, http2=True)
            if decision.action is None:
                return None
            if discovery.policy_route_metrics is not None:
                pair.route_series = discovery.policy_route_metrics.route(
                    decision.parent, decision.action, _authority_of(original), grpc=decision.grpc
                )
            return self._apply_policy(pair, decision, view, directives)
        route = pair.route = profile.route_for(_request_view(original))
        if route is None:
            return None
        if discovery.route_metrics is not None:
            dst = f"{profile.fully_qualified_name}:{self.target.port}"
            pair.route_stats = discovery.route_metrics.stats(dst, route)
            pair.route_stats.requests.value += 1
        if route.timeout is not None:
            pair.timer = self.loop.call_later(route.timeout, self._route_timeout, pair)
        if profile.may_retry(route):
            now = self.loop.time()
            budget = discovery.budget(profile, now)
            if budget is not None:
                budget.deposit(now)
            self._keep_for_replay(pair, StreamRetry(route=route, budget=budget))
        return None

    def _apply_policy(
        self,
        pair: _RoutedPair,
        decision: PolicyRoute,
        view: RequestView,
        directives: OutboundDirectives,
    ) -> SyntheticResponse | None:
        """Set up a policy-routed stream: timeouts, retry and backoff, then the filters.

        The request's ``l5d-*`` directives count only where the route allows them. The
        request filters (the rule's, then the backend's) rewrite the head sent upstream, or
        answer in its place.
        """
        action = decision.action
        assert action is not None
        allowed = action.allow_l5d_request_headers
        if allowed:
            for problem in directives.errors:
                _log.info("l5d_header_ignored", problem=problem)
        directed = direct(decision, directives if allowed else None)
        if directed.request_timeout is not None:
            pair.timer = self.loop.call_later(directed.request_timeout, self._route_timeout, pair)
        pair.attempt_timeout = directed.attempt_timeout
        backend = decision.backend
        if directed.retry is not None and backend is not None:
            limit = action.max_request_bytes or DEFAULT_MAX_REQUEST_BYTES
            retry = StreamRetry(condition=directed.retry, limit=limit, backoff=directed.backoff)
            self._keep_for_replay(pair, retry)
        chain = [f for f in (action.filters, backend and backend.filters) if f and not f.empty]
        if not chain:
            return None
        assert self.ctx.discovery is not None
        rng = self.ctx.discovery.rng
        target = RequestTarget(
            _scheme(pair.request_headers),
            view.authority,
            view.path,
            view.query,
            decision.matched_prefix,
        )
        # Filters cannot name a pseudo-header (not a token), and what they add or set goes
        # after the others, so the pseudo-headers stay first and untouched.
        headers = pair.request_headers
        for filters in chain:
            result = filters.apply_request(headers, rng, target)
            if isinstance(result, SyntheticResponse):
                return result
            headers = result
        pair.request_headers = headers
        pair.response_filters = tuple(f for f in chain if f.response_modifiers)
        return None

    def _synthesize(self, pair: _RoutedPair, answer: SyntheticResponse) -> None:
        """Answer ``pair`` with a response a route filter made (redirect, injected failure).

        gRPC routes answer trailers-only (``:status 200`` and the filter's gRPC status), as
        a gRPC server failing a call would; HTTP routes with the filter's status and headers.
        Counted under the listener's labels, like the proxy's other answers.
        """
        pair.cancel_timers()
        self.pairs.pop(pair.down_id, None)
        self.count(pair, self.labels)
        headers: Headers = [(b":status", b"%d" % answer.status)]
        if answer.grpc_status is not None:
            headers += [
                (b"content-type", b"application/grpc"),
                (b"grpc-status", b"%d" % answer.grpc_status),
                (b"grpc-message", _grpc_message(answer.grpc_message or "")),
            ]
        headers += answer.headers
        if answer.grpc_status is None:
            headers.append((b"content-length", b"0"))
        if pair.stats is not None:
            elapsed = (self.loop.time() - pair.started_at) * 1000.0
            pair.stats.observe_latency(answer.status, elapsed)
            pair.stats.response(answer.status, answer.grpc_status)
        self._route_ended(pair, answer.status, answer.grpc_status, "")
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.conn.send_headers(pair.down_id, headers, end_stream=True)
        self._maybe_finish()

    @staticmethod
    def _keep_for_replay(pair: _RoutedPair, retry: StreamRetry) -> None:
        """Start the replay copy with what arrived before routing; the bridge feeds the rest."""
        for data, _ in pair.to_up.pending:
            retry.body.feed(bytes(data))  # the last chunk may still grow (_Flow.add)
        if pair.to_up.trailers is not None:
            retry.trailers = pair.to_up.trailers
        if pair.request_ended:
            retry.body.end()
        pair.retry = retry

    async def _pick(self, pair: _RoutedPair, handle: TargetHandle) -> Pick:
        decision = pair.policy_route
        if decision is not None:
            if decision.backend is None:
                raise ProxyError(
                    ProxyErrorKind.ROUTE_NOT_FOUND
                    if decision.verdict == "no_route"
                    else ProxyErrorKind.NO_BACKENDS
                )
            if pair.route_series is not None:
                pair.backend_series = pair.route_series.backend(decision.backend)
                pair.backend_series.requests.value += 1
            return await handle.pick_backend(
                decision.backend, decision.accrual, SessionProtocol.HTTP2
            )
        authority = handle.choose_authority(pair.profile)
        return await handle.pick(pair.profile, authority, SessionProtocol.HTTP2)

    # -- connections -------------------------------------------------------------------------

    def _labels(self, plan: EndpointPlan) -> TargetLabels:
        endpoint = plan.endpoint
        return TargetLabels(
            self.ctx.direction,
            endpoint.host,
            endpoint.port,
            False,
            plan.tls_labels,
            dst=plan.dst_labels,
        )

    async def _send(self, pair: _RoutedPair, pick: Pick) -> None:
        """Open ``pair``'s stream to the picked endpoint, re-dispatching failed connects.

        The route timeout keeps running meanwhile and answers the client when it expires
        first (finishing the pick then).
        """
        connects = 0
        while True:
            pair.pick = pick
            key: PoolKey = (pick.plan.endpoint, pick.plan.tls)
            up = self.pool.usable(key)
            if up is None:
                connects += 1
                started = self.loop.time()
                pair.awaiting_connect = True
                try:
                    up = await self._connection(key, pick.plan)
                except ProxyError as exc:
                    pair.awaiting_connect = False
                    if not self._alive(pair):
                        return
                    pick.finish(Outcome.CONNECT_FAILURE, latency=self.loop.time() - started)
                    if pick.can_redispatch and may_redispatch(exc.kind, connects):
                        _log.debug(
                            "connect_failed_redispatching",
                            endpoint=str(key[0]),
                            error=str(exc),
                            attempt=connects,
                        )
                        try:
                            pick = await pick.redispatch()
                        except ProxyError as no_pick:
                            if self._alive(pair):
                                self.respond_error(pair, no_pick.kind, no_pick.detail)
                                self._flush_out()
                            return
                        if not self._alive(pair):
                            pick.finish(Outcome.CANCELLED)
                            return
                        continue
                    self.count(pair, self._labels(pick.plan))
                    if not self._retry_after_error(pair):
                        self.respond_error(pair, exc.kind, exc.detail)
                    self._flush_out()
                    return
                pair.awaiting_connect = False
                if not self._alive(pair):
                    pick.finish(Outcome.CANCELLED)
                    return
                if not up.usable():
                    # Full (another stream took the last slot) or already going away.
                    if connects < _MAX_CONNECTS:
                        continue
                    pick.finish(Outcome.FAILURE)
                    self.respond_error(pair, ProxyErrorKind.UPSTREAM_CLOSED)
                    self._flush_out()
                    return
            self._open(pair, up)
            return

    async def _connection(self, key: PoolKey, plan: EndpointPlan) -> _H2Upstream:
        """A new connection to ``key``, shared with the streams that need it meanwhile.

        The connect runs in its own task, one per endpoint at a time: a stream that stops
        waiting (its client reset it) leaves it to finish into the pool for the others.
        """
        pending = self.pool.connecting.get(key)
        if pending is None:
            pending = self.loop.create_future()
            self.pool.connecting[key] = pending
            self.ctx.spawn(self._connect_pooled(key, plan, pending))
        return await asyncio.shield(pending)

    async def _connect_pooled(
        self, key: PoolKey, plan: EndpointPlan, future: asyncio.Future[_H2Upstream]
    ) -> None:
        factory = self._upstream_for(self._labels(plan))
        try:
            try:
                _, up = await self.ctx.connector.open(plan.endpoint, factory, tls=plan.tls)
            except BaseException:
                factory.abandon()
                raise
        except ProxyError as exc:
            future.set_exception(exc)
            future.exception()  # the waiters (if any) see it; none may be left
            return
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:  # a bug of ours must cost this connect only
            _log.error("h2_connect_error", endpoint=str(key[0]), error=repr(exc))
            future.set_exception(ProxyError(ProxyErrorKind.CONNECT_FAILED, str(exc)))
            future.exception()
            return
        finally:
            self.pool.connecting.pop(key, None)
        if self._closed:
            up.close_when_idle()
        else:
            self.pool.add(key, up)
        future.set_result(up)

    def _open(self, pair: _RoutedPair, up: _H2Upstream) -> None:
        pair.attempt_started = self.loop.time()
        if not up.open_stream(pair):
            up.flush_out()
            self._flush_out()
            return
        if pair.attempt_timeout is not None:
            pair.attempt_timer = self.loop.call_later(
                pair.attempt_timeout, self._attempt_timeout, pair
            )
        up.flush_out()
        self._flush_out()

    # -- responses ---------------------------------------------------------------------------

    def response_headers(self, pair: _Pair, headers: Headers, end: bool) -> None:
        routed = _routed(pair)
        status, grpc = response_head_status(headers)
        if 100 <= status < 200:
            super().response_headers(pair, headers, end)
            return
        now = self.loop.time()
        latency = now - routed.attempt_started
        retry = routed.retry
        if retry is not None and not routed.response_started and not self._closed:
            verdict = retry.on_head(
                attempt=routed.attempt, status=status, grpc=grpc, end_stream=end, now=now
            )
            if verdict is RetryVerdict.RETRY:
                routed.finish_pick(self._response_outcome(routed, status, grpc), latency)
                self._resend(routed)
                return
            if end and verdict is not RetryVerdict.NOT_RETRYABLE:
                _log.debug("retry_skipped", reason=verdict.value, attempt=routed.attempt)
        routed.head_latency = latency
        if routed.attempt_timer is not None:
            routed.attempt_timer.cancel()
            routed.attempt_timer = None
        for filters in routed.response_filters:
            headers = filters.apply_response(headers)
        if routed.route_stats is not None and routed.route is not None:
            routed.route_stats.response(
                status,
                routed.route.classify(status, grpc=grpc),
                (now - routed.started_at) * 1000.0,
            )
        super().response_headers(pair, headers, end)

    def _complete(self, pair: _Pair) -> None:
        routed = _routed(pair)
        if self.pairs.get(pair.down_id) is pair:
            routed.cancel_timers()
            outcome = self._response_outcome(routed, routed.status, routed.grpc_status)
            routed.finish_pick(outcome, routed.head_latency)
            self._route_ended(routed, routed.status, routed.grpc_status, "")
        super()._complete(pair)

    def _route_ended(self, pair: _RoutedPair, status: int, grpc: int | None, error: str) -> None:
        """Count a policy-routed stream on its route and backend series (once)."""
        route, pair.route_series = pair.route_series, None
        if route is not None:
            elapsed = self.loop.time() - pair.started_at
            record_end(route, pair.backend_series, status, grpc, error, elapsed)

    @staticmethod
    def _response_outcome(pair: _RoutedPair, status: int, grpc: int | None) -> Outcome:
        """How a complete response counts for the endpoint (failure accrual, as HTTP/1).

        The endpoint answered, so it succeeded, unless the Service opted in to counting
        failed responses (5xx, gRPC codes that mean the server is unwell).
        """
        pick = pair.pick
        if pick is None or not (RESPONSE_FAILURES_EJECT or pick.responses_eject):
            return Outcome.SUCCESS
        failed = classify_for_accrual(status, grpc=grpc) is Classification.FAILURE
        return Outcome.FAILURE if failed else Outcome.SUCCESS

    def identity_refused(self, pair: _Pair, detail: str) -> None:
        # Nothing was sent: the endpoint did no wrong, the request just cannot go there.
        _routed(pair).finish_pick(Outcome.CANCELLED)
        super().identity_refused(pair, detail)

    def respond_error(self, pair: _Pair, kind: ProxyErrorKind, detail: str | None = None) -> None:
        routed = _routed(pair)
        routed.cancel_timers()
        routed.finish_pick(Outcome.FAILURE)
        self._route_ended(routed, 0, None, error_label(kind))
        if routed.route_stats is not None and not routed.response_started:
            routed.route_stats.response(
                kind.status,
                Classification.FAILURE,
                (self.loop.time() - routed.started_at) * 1000.0,
            )
        super().respond_error(pair, kind, detail)

    def reset_stream(self, pair: _Pair, code: int, *, refused: bool = False) -> None:
        """The upstream reset (or refused) the stream: retry it when nothing was shown yet."""
        if self.pairs.get(pair.down_id) is not pair:
            return
        routed = _routed(pair)
        routed.finish_pick(Outcome.CANCELLED if refused else Outcome.FAILURE)
        if not routed.response_started and self._retry_after_error(routed):
            return
        routed.cancel_timers()
        if routed.response_started:
            self._route_ended(routed, 0, None, "RESET")
        super().reset_stream(pair, code, refused=refused)

    def upstream_lost(self, up: _H2Upstream, pairs: list[_Pair]) -> None:
        self.pool.discard(up)
        for pair in pairs:
            if self.pairs.get(pair.down_id) is not pair:
                continue
            routed = _routed(pair)
            if routed.response_started:
                self.reset_stream(pair, h2.errors.ErrorCodes.INTERNAL_ERROR)
                continue
            routed.finish_pick(Outcome.FAILURE)
            if not self._retry_after_error(routed):
                self.respond_error(pair, ProxyErrorKind.UPSTREAM_CLOSED)
        self._flush_out()

    # -- timeouts and retries ----------------------------------------------------------------

    def _route_timeout(self, pair: _RoutedPair) -> None:
        """The route's time is up: answer 504 / DEADLINE_EXCEEDED, or cut a started response."""
        pair.timer = None
        if not self._alive(pair):
            return
        pair.finish_pick(Outcome.FAILURE)
        self._cancel_upstream(pair)
        if pair.response_started:
            # A response cut short must not look complete: reset it toward the client.
            pair.cancel_timers()
            self.pairs.pop(pair.down_id, None)
            if pair.stats is not None:
                pair.stats.response(pair.status, pair.grpc_status, "response timed out")
            self._route_ended(pair, 0, None, "REQUEST_TIMEOUT")
            with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.conn.reset_stream(pair.down_id, h2.errors.ErrorCodes.CANCEL)
            self._maybe_finish()
        else:
            self.respond_error(pair, ProxyErrorKind.RESPONSE_TIMEOUT)
        self._flush_out()

    def _attempt_timeout(self, pair: _RoutedPair) -> None:
        """One attempt waited too long for its response head: try again, or give up with 504."""
        pair.attempt_timer = None
        if not self._alive(pair) or pair.response_started:
            return
        pair.finish_pick(Outcome.FAILURE)
        self._cancel_upstream(pair)
        if not self._retry_after_error(pair):
            self.respond_error(pair, ProxyErrorKind.RESPONSE_TIMEOUT)
        self._flush_out()

    def _cancel_upstream(self, pair: _RoutedPair) -> None:
        up = pair.upstream
        if up is not None:
            up.reset(pair, h2.errors.ErrorCodes.CANCEL)
            up.flush_out()

    def _retry_after_error(self, pair: _RoutedPair) -> bool:
        """Send ``pair`` again after a failure before any response byte, if its route may."""
        retry = pair.retry
        if retry is None or pair.response_started or self._closed:
            return False
        verdict = retry.on_error(attempt=pair.attempt, now=self.loop.time())
        if verdict is not RetryVerdict.RETRY:
            _log.debug("retry_skipped", reason=verdict.value, attempt=pair.attempt)
            return False
        self._resend(pair)
        return True

    def _resend(self, pair: _RoutedPair) -> None:
        """Send the request again, from the replay copy, to a fresh pick."""
        retry = pair.retry
        assert retry is not None
        pair.attempt += 1
        if pair.attempt_timer is not None:
            pair.attempt_timer.cancel()
            pair.attempt_timer = None
        old = pair.upstream
        if old is not None and old.streams.get(pair.up_id) is pair:
            old.reset(pair, h2.errors.ErrorCodes.CANCEL)
            old.flush_out()
        pair.upstream = None
        pair.up_id = 0
        flow = pair.to_up
        # What the last attempt had not sent yet was never acknowledged to the client.
        unacked = sum(length for _, length in flow.pending)
        if unacked:
            with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.conn.acknowledge_received_data(unacked, pair.down_id)
        flow.pending = []
        for chunk in retry.body.chunks():
            flow.add(chunk, 0)
        flow.trailers = list(retry.trailers) if retry.trailers is not None else None
        flow.ended = flow.trailers is None
        pair.to_down = _Flow()
        pair.status = 0
        pair.grpc_status = None
        assert self.ctx.discovery is not None
        delay = retry.delay(pair.attempt, self.ctx.discovery.rng)
        if delay > 0:
            pair.retry_timer = self.loop.call_later(delay, self._resend_now, pair, pair.attempt)
            return
        pair.task = self.ctx.spawn(self._dispatch(pair))

    def _resend_now(self, pair: _RoutedPair, attempt: int) -> None:
        """The backoff is over: send attempt ``attempt`` unless the stream ended meanwhile."""
        pair.retry_timer = None
        if self._alive(pair) and pair.attempt == attempt and not pair.response_started:
            pair.task = self.ctx.spawn(self._dispatch(pair))


def _request_view(headers: Headers) -> RequestView:
    method = path = b""
    for name, value in headers:
        if name == b":method":
            method = value
        elif name == b":path":
            path = value
    # The bridge settled the authority already (:mod:`.authority`); this reads it the same way.
    authority = _authority_of(headers)
    return RequestView.from_target(method, path, authority=authority or b"", headers=headers)


def _authority_of(headers: Headers) -> bytes | None:
    try:
        return settle_authority(headers)[0]
    except AuthorityError:
        return None


def _scheme(headers: Headers) -> str:
    for name, value in headers:
        if name == b":scheme":
            return value.decode("latin-1").lower() or "http"
    return "http"


def _grpc_message(text: str) -> bytes:
    """``grpc-message``: percent-encoded outside printable ASCII (and ``%``), per gRPC."""
    out = bytearray()
    for byte in text.encode("utf-8"):
        if 0x20 <= byte < 0x7F and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)
