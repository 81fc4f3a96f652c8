"""gRPC services: exact method paths and shapes, and a real grpc.aio round trip on loopback."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from gossamer_api import grpc_paths
from gossamer_api.addresses import tcp_address_from_proto, tcp_address_to_proto
from gossamer_api.proxy import (
    destination_pb2,
    destination_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    inbound_pb2,
    outbound_pb2,
    tap_pb2,
)

# path -> (request type, response type, server streaming), from linkerd-wire.md §1.
EXPECTED: dict[str, tuple[str, str, bool]] = {
    "/io.linkerd.proxy.destination.Destination/Get": (
        "io.linkerd.proxy.destination.GetDestination",
        "io.linkerd.proxy.destination.Update",
        True,
    ),
    "/io.linkerd.proxy.destination.Destination/GetProfile": (
        "io.linkerd.proxy.destination.GetDestination",
        "io.linkerd.proxy.destination.DestinationProfile",
        True,
    ),
    "/io.linkerd.proxy.identity.Identity/Certify": (
        "io.linkerd.proxy.identity.CertifyRequest",
        "io.linkerd.proxy.identity.CertifyResponse",
        False,
    ),
    "/io.linkerd.proxy.inbound.InboundServerPolicies/GetPort": (
        "io.linkerd.proxy.inbound.PortSpec",
        "io.linkerd.proxy.inbound.Server",
        False,
    ),
    "/io.linkerd.proxy.inbound.InboundServerPolicies/WatchPort": (
        "io.linkerd.proxy.inbound.PortSpec",
        "io.linkerd.proxy.inbound.Server",
        True,
    ),
    "/io.linkerd.proxy.outbound.OutboundPolicies/Get": (
        "io.linkerd.proxy.outbound.TrafficSpec",
        "io.linkerd.proxy.outbound.OutboundPolicy",
        False,
    ),
    "/io.linkerd.proxy.outbound.OutboundPolicies/Watch": (
        "io.linkerd.proxy.outbound.TrafficSpec",
        "io.linkerd.proxy.outbound.OutboundPolicy",
        True,
    ),
    "/io.linkerd.proxy.tap.Tap/Observe": (
        "io.linkerd.proxy.tap.ObserveRequest",
        "io.linkerd.proxy.tap.TapEvent",
        True,
    ),
}


def test_service_paths_from_descriptors() -> None:
    found: dict[str, tuple[str, str, bool]] = {}
    for module in (destination_pb2, identity_pb2, inbound_pb2, outbound_pb2, tap_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                assert not method.client_streaming, method.full_name
                found[f"/{service.full_name}/{method.name}"] = (
                    method.input_type.full_name,
                    method.output_type.full_name,
                    method.server_streaming,
                )
    assert found == EXPECTED


def test_path_constants_match_descriptors() -> None:
    assert set(EXPECTED) == grpc_paths.ALL_METHOD_PATHS
    assert grpc_paths.DESTINATION_GET == "/io.linkerd.proxy.destination.Destination/Get"
    assert grpc_paths.IDENTITY_CERTIFY == "/io.linkerd.proxy.identity.Identity/Certify"
    assert grpc_paths.INBOUND_WATCH_PORT.startswith(f"/{grpc_paths.INBOUND_SERVICE}/")
    assert grpc_paths.OUTBOUND_WATCH.startswith(f"/{grpc_paths.OUTBOUND_SERVICE}/")
    assert grpc_paths.TAP_OBSERVE.startswith(f"/{grpc_paths.TAP_SERVICE}/")
    assert grpc_paths.DESTINATION_GET_PROFILE.startswith(f"/{grpc_paths.DESTINATION_SERVICE}/")
    assert grpc_paths.IDENTITY_CERTIFY.startswith(f"/{grpc_paths.IDENTITY_SERVICE}/")


if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor
    _Handler = grpc.RpcMethodHandler


class _RecordPaths(_Interceptor):
    """Records the :path of every call the server receives."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        self.paths.append(handler_call_details.method)
        return await continuation(handler_call_details)


class _Destination(destination_pb2_grpc.DestinationServicer):
    async def Get(
        self, request: destination_pb2.GetDestination, context: Any
    ) -> AsyncIterator[destination_pb2.Update]:
        assert request.path == "web.emojivoto.svc.cluster.local:80"
        addr = destination_pb2.WeightedAddr(addr=tcp_address_to_proto("10.1.2.3", 8080), weight=1)
        yield destination_pb2.Update(add=destination_pb2.WeightedAddrSet(addrs=[addr]))
        yield destination_pb2.Update(no_endpoints=destination_pb2.NoEndpoints(exists=True))

    async def GetProfile(
        self, request: destination_pb2.GetDestination, context: Any
    ) -> AsyncIterator[destination_pb2.DestinationProfile]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "profiles are not part of this test")
        yield destination_pb2.DestinationProfile()  # pragma: no cover (abort raises)


class _Identity(identity_pb2_grpc.IdentityServicer):
    async def Certify(
        self, request: identity_pb2.CertifyRequest, context: Any
    ) -> identity_pb2.CertifyResponse:
        return identity_pb2.CertifyResponse(
            leaf_certificate=b"leaf:" + request.certificate_signing_request,
            intermediate_certificates=[b"issuer"],
            valid_until=Timestamp(seconds=1_700_000_000),
        )


@pytest.mark.timeout(60)
async def test_generated_stubs_round_trip_over_loopback() -> None:
    recorder = _RecordPaths()
    server = grpc.aio.server(interceptors=[recorder])
    destination_pb2_grpc.add_DestinationServicer_to_server(_Destination(), server)
    identity_pb2_grpc.add_IdentityServicer_to_server(_Identity(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            destination = destination_pb2_grpc.DestinationStub(channel)
            call = destination.Get(
                destination_pb2.GetDestination(path="web.emojivoto.svc.cluster.local:80"),
                timeout=30,
            )
            updates = [update async for update in call]
            identity = identity_pb2_grpc.IdentityStub(channel)
            response = await identity.Certify(
                identity_pb2.CertifyRequest(
                    identity="default.emojivoto.serviceaccount.identity.gossamer.cluster.local",
                    token=b"token",
                    certificate_signing_request=b"csr",
                ),
                timeout=30,
            )
    finally:
        await server.stop(grace=None)

    assert [u.WhichOneof("update") for u in updates] == ["add", "no_endpoints"]
    (addr,) = updates[0].add.addrs
    assert tcp_address_from_proto(addr.addr) == (ipaddress.ip_address("10.1.2.3"), 8080)
    assert response.leaf_certificate == b"leaf:csr"
    assert list(response.intermediate_certificates) == [b"issuer"]
    assert recorder.paths == [grpc_paths.DESTINATION_GET, grpc_paths.IDENTITY_CERTIFY]
