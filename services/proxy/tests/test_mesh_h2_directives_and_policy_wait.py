"""HTTP/2 policy routes under ``l5d-*`` directives, retry backoff, and the shared policy wait.

Pure logic (:func:`~gossamer_proxy.mesh.policy_router.direct`,
:meth:`~gossamer_proxy.mesh.stream_retry.StreamRetry.delay`) plus
:meth:`~gossamer_proxy.outbound.discovery.TargetHandle.policy` with concurrent callers on
a real event loop (the owner is a stand-in: the handle only reads its wait bound).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration
from gossamer_api.proxy import http_route_pb2, outbound_pb2
from gossamer_proxy.config import Endpoint
from gossamer_proxy.mesh.backoff import Backoff
from gossamer_proxy.mesh.l5d_headers import OutboundDirectives, outbound_request_headers
from gossamer_proxy.mesh.outbound_policy import OutboundPolicyModel, compile_outbound_policy
from gossamer_proxy.mesh.policy_router import PolicyRoute, direct, directed_retry, route_request
from gossamer_proxy.mesh.request import RequestView
from gossamer_proxy.mesh.retry import RetryCondition
from gossamer_proxy.mesh.stream_retry import StreamRetry
from gossamer_proxy.mesh.watch_state import WatchState
from gossamer_proxy.outbound.discovery import TargetHandle


def _seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


def _policy(
    *,
    prefix: str = "/api",
    request: float | None = None,
    response: float | None = None,
    retries: int | None = None,
    backoff: tuple[float, float] | None = None,
    allow_l5d: bool = False,
) -> OutboundPolicyModel:
    route = outbound_pb2.HttpRoute()
    route.metadata.resource.kind = "HTTPRoute"
    route.metadata.resource.name = "r"
    rule = route.rules.add()
    rule.matches.append(http_route_pb2.HttpRouteMatch(path=http_route_pb2.PathMatch(prefix=prefix)))
    entry = rule.backends.random_available.backends.add(weight=1)
    entry.backend.backend.balancer.discovery.dst.path = "a:80"
    if request is not None:
        rule.timeouts.request.CopyFrom(_seconds(request))
    if response is not None:
        rule.timeouts.response.CopyFrom(_seconds(response))
    if retries is not None:
        rule.retry.max_retries = retries
        rule.retry.conditions.status_ranges.add(start=500, end=599)
        if backoff is not None:
            rule.retry.backoff.min_backoff.CopyFrom(_seconds(backoff[0]))
            rule.retry.backoff.max_backoff.CopyFrom(_seconds(backoff[1]))
    rule.allow_l5d_request_headers = allow_l5d
    message = outbound_pb2.OutboundPolicy()
    message.protocol.detect.timeout.CopyFrom(_seconds(10))
    message.protocol.detect.http1.routes.append(route)
    message.protocol.detect.http2.routes.append(route)
    return compile_outbound_policy(message)


def _route(policy: OutboundPolicyModel, path: str = "/api/users") -> PolicyRoute:
    view = RequestView.from_target("GET", path, authority="web:80")
    return route_request(policy, view, random.Random(1), http2=True)


def _directives(*headers: tuple[bytes, bytes]) -> OutboundDirectives:
    return outbound_request_headers(list(headers), allow_overrides=True)[1]


# -- routing fills what filters and timeouts need ------------------------------------------


def test_h2_route_carries_the_matched_prefix_and_request_vs_attempt_timeouts() -> None:
    decision = _route(_policy(request=5, response=1))
    assert decision.matched_prefix == "/api"
    assert (decision.request_timeout, decision.attempt_timeout) == (5.0, 1.0)
    directed = direct(decision, None)
    assert (directed.request_timeout, directed.attempt_timeout, directed.retry) == (5.0, 1.0, None)


# -- l5d directives ----------------------------------------------------------------------


def test_l5d_timeouts_override_the_route_and_the_attempt_bound_takes_the_shortest() -> None:
    decision = _route(_policy(request=5, response=2, allow_l5d=True))
    directives = _directives((b"l5d-timeout", b"300ms"), (b"l5d-response-timeout", b"1s"))
    directed = direct(decision, directives)
    assert directed.request_timeout == pytest.approx(0.3)
    assert directed.attempt_timeout == 1.0
    # Without the directives (a route that does not allow them) the route's own limits hold.
    assert direct(decision, None).request_timeout == 5.0


def test_l5d_retry_headers_turn_retries_on_and_override_the_route() -> None:
    plain = _route(_policy())
    directed = direct(
        plain, _directives((b"l5d-retry-limit", b"2"), (b"l5d-retry-grpc", b"unavailable"))
    )
    assert directed.retry is not None
    assert directed.retry.max_retries == 2
    assert directed.retry.grpc_codes == frozenset({14})
    # A retry timeout alone does not make a route retry.
    assert direct(plain, _directives((b"l5d-retry-timeout", b"1s"))).retry is None
    # On a retrying route it bounds each attempt.
    retrying = _route(_policy(retries=1, backoff=(0.1, 1)))
    directed = direct(retrying, _directives((b"l5d-retry-timeout", b"250ms")))
    assert directed.attempt_timeout == pytest.approx(0.25)
    assert directed.backoff == Backoff(0.1, 1.0)


def test_a_zero_retry_limit_sends_one_attempt_and_drops_the_backoff() -> None:
    decision = _route(_policy(retries=3, backoff=(0.1, 1)))
    directed = direct(decision, _directives((b"l5d-retry-limit", b"0")))
    assert (directed.retry, directed.backoff) == (None, None)


def test_malformed_directives_are_ignored_not_fatal() -> None:
    directives = _directives((b"l5d-timeout", b"soon"), (b"l5d-retry-limit", b"-1"))
    assert len(directives.errors) == 2
    decision = _route(_policy(request=5))
    assert direct(decision, directives).request_timeout == 5.0
    assert directed_retry(None, directives) is None


# -- retry backoff -----------------------------------------------------------------------


def test_stream_retry_delay_follows_the_backoff_from_the_first_retry() -> None:
    retry = StreamRetry(condition=RetryCondition(max_retries=3), backoff=Backoff(0.1, 0.3))
    rng = random.Random(1)
    assert retry.delay(1, rng) == 0.0  # the original request is not delayed
    assert [retry.delay(n, rng) for n in (2, 3, 4)] == pytest.approx([0.1, 0.2, 0.3])
    assert StreamRetry(condition=RetryCondition()).delay(2, rng) == 0.0


def test_only_policy_retries_back_off() -> None:
    from gossamer_proxy.mesh.profile import ProfileRoute

    route: Any = object.__new__(ProfileRoute)
    with pytest.raises(ValueError, match="only policy retries back off"):
        StreamRetry(route=route, backoff=Backoff(0.1, 1))


# -- the shared first policy wait --------------------------------------------------------


class _Owner:
    """What a :class:`TargetHandle` reads of its :class:`OutboundDiscovery` here."""

    def __init__(self, wait: float) -> None:
        self.profile_wait = wait
        self.released: list[Endpoint] = []

    def release_policy(self, target: Endpoint, now: float) -> None:
        self.released.append(target)


def _handle(wait: float) -> tuple[TargetHandle, WatchState[OutboundPolicyModel | None]]:
    state: WatchState[OutboundPolicyModel | None] = WatchState("10.0.0.1:80", None)
    owner: Any = _Owner(wait)
    return TargetHandle(owner, Endpoint("10.0.0.1", 80), None, state), state


async def test_concurrent_callers_all_wait_for_the_first_policy_answer() -> None:
    handle, state = _handle(wait=30)
    callers = [asyncio.ensure_future(handle.policy()) for _ in range(8)]
    await asyncio.sleep(0)
    assert not any(c.done() for c in callers)
    policy = _policy()
    state.set(policy)
    assert await asyncio.gather(*callers) == [policy] * 8


async def test_after_an_unanswered_wait_nobody_waits_again() -> None:
    handle, _ = _handle(wait=0.01)
    assert await asyncio.gather(*(handle.policy() for _ in range(4))) == [None] * 4
    later = handle.policy()
    with pytest.raises(StopIteration) as done:
        later.send(None)  # completes without suspending: no second wait
    assert done.value.value is None


async def test_a_cancelled_caller_does_not_cancel_the_others_wait() -> None:
    handle, state = _handle(wait=30)
    first, second = asyncio.ensure_future(handle.policy()), asyncio.ensure_future(handle.policy())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    policy = _policy()
    state.set(policy)
    assert await second == policy
    assert first.cancelled()


async def test_closing_the_handle_ends_the_wait_without_failing_its_callers() -> None:
    handle, _ = _handle(wait=30)
    callers = [asyncio.ensure_future(handle.policy()) for _ in range(3)]
    await asyncio.sleep(0)
    handle.close()
    assert await asyncio.gather(*callers) == [None] * 3
