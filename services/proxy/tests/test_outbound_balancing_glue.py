"""The outbound glue's own logic: endpoint plans, network parsing, the backend's queue.

The backend is driven through a real :class:`WatchState` fed real ``Update`` messages
(no network): endpoints arriving wake queued requests, a full queue sheds with 503, and
no endpoint for the fail-fast timeout answers 504.
"""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import destination_pb2
from gossamer_api.transport_header import ALPN_PROTOCOL, SessionProtocol
from gossamer_proxy.app import Proxy
from gossamer_proxy.config import Endpoint, load_settings
from gossamer_proxy.errors import ProxyError, ProxyErrorKind
from gossamer_proxy.mesh.balancer import Outcome
from gossamer_proxy.mesh.endpoints import Endpoint as MeshEndpoint
from gossamer_proxy.mesh.endpoints import EndpointTable
from gossamer_proxy.mesh.watch_state import WatchState
from gossamer_proxy.outbound.backend import Backend
from gossamer_proxy.outbound.discovery import parse_networks
from gossamer_proxy.outbound.plan import endpoint_plan, forward_pick

ID = "api.ns.serviceaccount.identity.gossamer.cluster.local"


def meta(**kwargs: object) -> MeshEndpoint:
    return MeshEndpoint(ip=ipaddress.ip_address("10.1.0.5"), port=8080, **kwargs)  # type: ignore[arg-type]


def test_plan_without_identity_is_plaintext_and_labelled_no_identity() -> None:
    plan = endpoint_plan(
        meta(labels=(("pod", "api-0"),)), session_protocol=None, mesh_identity=True
    )
    assert plan.endpoint == Endpoint("10.1.0.5", 8080)
    assert plan.tls is None
    assert plan.tls_labels[:2] == ("no_identity", "not_provided_by_service_discovery")
    assert plan.dst_labels == (("dst_pod", "api-0"),)


def test_plan_with_identity_is_mtls_with_sni_and_server_id() -> None:
    plan = endpoint_plan(meta(identity=ID), session_protocol=None, mesh_identity=True)
    assert plan.tls is not None
    assert (plan.tls.connect_to, plan.tls.sni, plan.tls.server_identity) == (
        Endpoint("10.1.0.5", 8080),
        ID,
        ID,
    )
    assert plan.tls.preamble == b""
    assert plan.tls.alpn == ()
    assert plan.tls_labels == ("true", "", "", ID)


def test_plan_with_opaque_transport_goes_to_the_inbound_port_with_a_header() -> None:
    plan = endpoint_plan(
        meta(identity=ID, opaque_transport_port=4143),
        session_protocol=SessionProtocol.HTTP1,
        mesh_identity=True,
    )
    assert plan.tls is not None
    assert plan.tls.connect_to == Endpoint("10.1.0.5", 4143)
    assert plan.tls.alpn == (ALPN_PROTOCOL,)
    assert plan.tls.preamble  # the framed transport header naming port 8080
    assert plan.endpoint == Endpoint("10.1.0.5", 8080)  # the pool key stays the real port


def test_plan_without_own_identity_is_plaintext_and_disabled() -> None:
    plan = endpoint_plan(meta(identity=ID), session_protocol=None, mesh_identity=False)
    assert plan.tls is None
    assert plan.tls_labels[0] == "disabled"


def test_forward_pick_is_unbalanced_and_finish_is_idempotent() -> None:
    released: list[int] = []
    pick = forward_pick(Endpoint("10.0.0.1", 80), mesh_identity=True)
    pick.on_release(lambda: released.append(1))
    assert not pick.balanced
    pick.finish(Outcome.SUCCESS)
    pick.finish(Outcome.FAILURE)
    assert released == [1]


def test_parse_networks_rejects_bad_entries() -> None:
    assert [str(n) for n in parse_networks(["10.0.0.0/8", " fd00::/8 ", ""])] == [
        "10.0.0.0/8",
        "fd00::/8",
    ]
    with pytest.raises(ValueError, match="not-a-net"):
        parse_networks(["10.0.0.0/8", "not-a-net"])


def add(*ports: int) -> destination_pb2.Update:
    return destination_pb2.Update(
        add=destination_pb2.WeightedAddrSet(
            addrs=[
                destination_pb2.WeightedAddr(addr=tcp_address_to_proto("10.1.0.1", p), weight=1)
                for p in ports
            ]
        )
    )


def feed(state: WatchState[EndpointTable], update: destination_pb2.Update) -> None:
    assert state.value.apply(update).changed
    state.changed()


async def test_queued_request_is_dispatched_when_an_endpoint_arrives() -> None:
    state: WatchState[EndpointTable] = WatchState("svc:80", EndpointTable())
    backend = Backend("svc:80", state, failfast_timeout=5.0)
    try:
        waiting = asyncio.ensure_future(backend.acquire())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        assert len(backend.queue) == 1
        feed(state, add(8080))
        dispatch = await asyncio.wait_for(waiting, 2)
        assert dispatch.meta.port == 8080
        backend.finish(dispatch, Outcome.SUCCESS)
    finally:
        await backend.close()


async def test_full_queue_sheds_with_503() -> None:
    state: WatchState[EndpointTable] = WatchState("svc:80", EndpointTable())
    backend = Backend("svc:80", state, capacity=1, failfast_timeout=5.0)
    try:
        first = asyncio.ensure_future(backend.acquire())
        await asyncio.sleep(0.01)
        with pytest.raises(ProxyError) as shed:
            await backend.acquire()
        assert shed.value.kind is ProxyErrorKind.LOAD_SHED
        assert shed.value.kind.status == 503
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        assert len(backend.queue) == 0  # a cancelled waiter leaves the queue
    finally:
        await backend.close()


async def test_no_endpoint_within_failfast_timeout_gives_504_then_recovers() -> None:
    state: WatchState[EndpointTable] = WatchState("svc:80", EndpointTable())
    backend = Backend("svc:80", state, failfast_timeout=0.1)
    try:
        with pytest.raises(ProxyError) as failed:
            await asyncio.wait_for(backend.acquire(), 2)
        assert failed.value.kind is ProxyErrorKind.FAIL_FAST
        assert failed.value.kind.status == 504
        with pytest.raises(ProxyError):  # in fail-fast: at once
            await asyncio.wait_for(backend.acquire(), 0.05)
        feed(state, add(8080))
        dispatch = await asyncio.wait_for(backend.acquire(), 2)
        backend.finish(dispatch, Outcome.SUCCESS)
        assert backend.counts() == (1, 0)
    finally:
        await backend.close()


async def test_ejected_only_endpoint_is_probed_after_its_backoff() -> None:
    state: WatchState[EndpointTable] = WatchState("svc:80", EndpointTable())
    feed(state, add(8080))
    backend = Backend("svc:80", state, failfast_timeout=30.0)
    try:
        for _ in range(7):
            backend.finish(await backend.acquire(), Outcome.FAILURE)
        assert backend.counts() == (0, 1)
        slot = backend.balancer.slots()[0]
        # Shorten the penalty so the test does not wait for the real 1 s minimum.
        slot.accrual.reopen_at = asyncio.get_running_loop().time() + 0.05
        probe = await asyncio.wait_for(backend.acquire(), 2)
        assert probe.probe
        backend.finish(probe, Outcome.SUCCESS)
        assert backend.counts() == (1, 0)
    finally:
        await backend.close()


def test_bad_profile_network_stops_the_proxy_at_start() -> None:
    settings = load_settings(
        {
            "LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS": "10.0.0.0/8,10.300.0.0/16",
            "LINKERD2_PROXY_IDENTITY_DISABLED": "true",
        }
    )
    with pytest.raises(ValueError, match=r"invalid profile network '10\.300\.0\.0/16'"):
        Proxy(settings, process_metrics=False)
