"""Re-dispatch after a failed connect: which failures qualify, and picking another endpoint.

Pure logic and the balancer glue, driven without a network: the balancer passes over the
endpoints a request already failed on while another one is available, a failed pick can be
picked again (with its accrual and response-ejection settings kept), and only connect
failures, up to three connects, are re-dispatched.
"""

from __future__ import annotations

import ipaddress
import random

import pytest
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import destination_pb2
from gossamer_proxy.config import Endpoint
from gossamer_proxy.errors import ProxyError, ProxyErrorKind
from gossamer_proxy.mesh.balancer import Outcome, P2cBalancer
from gossamer_proxy.mesh.endpoints import EndpointTable
from gossamer_proxy.mesh.watch_state import WatchState
from gossamer_proxy.outbound.backend import Backend
from gossamer_proxy.outbound.plan import Pick, forward_pick
from gossamer_proxy.outbound.redispatch import MAX_CONNECT_ATTEMPTS, may_redispatch


def test_only_connect_failures_are_redispatched_and_at_most_three_connects() -> None:
    for kind in (
        ProxyErrorKind.CONNECT_REFUSED,
        ProxyErrorKind.CONNECT_TIMEOUT,
        ProxyErrorKind.CONNECT_FAILED,
    ):
        assert may_redispatch(kind, 1)
        assert may_redispatch(kind, 2)
        assert not may_redispatch(kind, 3)
    assert MAX_CONNECT_ATTEMPTS == 3
    for kind in (
        ProxyErrorKind.IDENTITY_MISMATCH,
        ProxyErrorKind.UPSTREAM_CLOSED,
        ProxyErrorKind.RESPONSE_TIMEOUT,
        ProxyErrorKind.FAIL_FAST,
        ProxyErrorKind.LOAD_SHED,
    ):
        assert not may_redispatch(kind, 1), kind


def test_balancer_passes_over_avoided_endpoints_while_others_are_available() -> None:
    balancer: P2cBalancer[str, None] = P2cBalancer()
    balancer.update({"a": None, "b": None, "c": None}, 0.0)
    rng = random.Random(7)
    for _ in range(50):
        dispatch = balancer.pick(0.0, rng, avoid=("a", "b"))
        assert dispatch is not None
        assert dispatch.key == "c"
        balancer.finish(dispatch, Outcome.CANCELLED, 0.0, rng)
    # Every endpoint avoided: the request still goes somewhere rather than nowhere.
    dispatch = balancer.pick(0.0, rng, avoid=("a", "b", "c"))
    assert dispatch is not None


def test_forward_pick_cannot_be_redispatched() -> None:
    pick = forward_pick(Endpoint("10.0.0.1", 80), mesh_identity=True)
    assert not pick.can_redispatch


def add(*ports: int) -> destination_pb2.Update:
    return destination_pb2.Update(
        add=destination_pb2.WeightedAddrSet(
            addrs=[
                destination_pb2.WeightedAddr(addr=tcp_address_to_proto("10.1.0.1", p), weight=1)
                for p in ports
            ]
        )
    )


def backend_of(*ports: int, failfast: float = 5.0) -> Backend:
    state: WatchState[EndpointTable] = WatchState("svc:80", EndpointTable())
    assert state.value.apply(add(*ports)).changed
    state.changed()
    return Backend("svc:80", state, failfast_timeout=failfast)


async def test_backend_acquire_avoids_failed_endpoints() -> None:
    backend = backend_of(8080, 8081)
    failed = (ipaddress.ip_address("10.1.0.1"), 8080)
    try:
        for _ in range(30):
            dispatch = await backend.acquire((failed,))
            assert dispatch.meta.port == 8081
            backend.finish(dispatch, Outcome.SUCCESS)
    finally:
        await backend.close()


async def test_redispatch_follows_finish_and_keeps_response_ejection() -> None:
    finished: list[Outcome] = []
    second = forward_pick(Endpoint("10.1.0.1", 8081), mesh_identity=True)

    async def repick() -> Pick:
        return second

    pick = Pick(
        forward_pick(Endpoint("10.1.0.1", 8080), mesh_identity=True).plan,
        "svc:80",
        lambda outcome, latency: finished.append(outcome),
        repick,
    )
    pick.responses_eject = True
    assert pick.can_redispatch
    with pytest.raises(RuntimeError, match="finish"):
        await pick.redispatch()  # the failure must be counted first
    pick.finish(Outcome.FAILURE)
    assert await pick.redispatch() is second
    assert second.responses_eject
    assert finished == [Outcome.FAILURE]


async def test_redispatch_reports_when_no_endpoint_is_left() -> None:
    async def repick() -> Pick:
        raise ProxyError(ProxyErrorKind.FAIL_FAST, "svc:80: no endpoints available")

    pick = Pick(
        forward_pick(Endpoint("10.1.0.1", 8080), mesh_identity=True).plan,
        "svc:80",
        lambda outcome, latency: None,
        repick,
    )
    pick.finish(Outcome.FAILURE)
    with pytest.raises(ProxyError) as failed:
        await pick.redispatch()
    assert failed.value.kind is ProxyErrorKind.FAIL_FAST
