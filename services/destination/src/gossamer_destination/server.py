"""The gRPC surface: Destination (Get, GetProfile), InboundServerPolicies, OutboundPolicies.

Each RPC maps to a topic (:mod:`gossamer_destination.topics`); the streams themselves are
served by :mod:`gossamer_destination.grpc_server`, which writes each change, encoded and
framed once, to every stream of its topic. Lookup failures become the gRPC status Linkerd
would answer with. A stream whose client reads too slowly is not aborted: it skips the
changes it could not take and later receives one catch-up diff to the current state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gossamer_api.proxy import destination_pb2, inbound_pb2, outbound_pb2
from gossamer_common.grpc_http2 import RequestError, Status

from gossamer_destination.cluster import Cluster
from gossamer_destination.context import parse_context_token
from gossamer_destination.discovery import Discovery, LookupFailedError
from gossamer_destination.grpc_server import Method
from gossamer_destination.metrics import DestinationMetrics
from gossamer_destination.policy import Policies
from gossamer_destination.settings import DestinationSettings
from gossamer_destination.topics import Topic, TopicRegistry

DESTINATION = "io.linkerd.proxy.destination.Destination"
INBOUND = "io.linkerd.proxy.inbound.InboundServerPolicies"
OUTBOUND = "io.linkerd.proxy.outbound.OutboundPolicies"


class DestinationApi:
    """All three services, sharing one topic registry."""

    def __init__(
        self,
        cluster: Cluster,
        settings: DestinationSettings,
        metrics: DestinationMetrics,
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.metrics = metrics
        self.registry = TopicRegistry()
        self.discovery = Discovery(cluster, settings, self.registry)
        self.policies = Policies(cluster, settings, self.registry)

    def methods(self) -> dict[bytes, Method]:
        """The method table, by HTTP/2 ``:path``."""

        def method(
            service: str,
            name: str,
            rpc: str,
            request_type: Any,
            resolve: Callable[[Any], Topic],
            unary: bool = False,
        ) -> tuple[bytes, Method]:
            return f"/{service}/{name}".encode(), Method(
                rpc, request_type.FromString, _lookup(resolve), unary
            )

        return dict(
            [
                method(DESTINATION, "Get", "Get", destination_pb2.GetDestination, self.get),
                method(
                    DESTINATION,
                    "GetProfile",
                    "GetProfile",
                    destination_pb2.GetDestination,
                    self.get_profile,
                ),
                method(INBOUND, "WatchPort", "WatchPort", inbound_pb2.PortSpec, self.inbound),
                method(INBOUND, "GetPort", "GetPort", inbound_pb2.PortSpec, self.inbound, True),
                method(OUTBOUND, "Watch", "OutboundWatch", outbound_pb2.TrafficSpec, self.outbound),
                method(
                    OUTBOUND, "Get", "OutboundGet", outbound_pb2.TrafficSpec, self.outbound, True
                ),
            ]
        )

    def get(self, request: destination_pb2.GetDestination) -> Topic:
        ctx = parse_context_token(request.context_token)
        return self.discovery.endpoints_topic(request.path, ctx)

    def get_profile(self, request: destination_pb2.GetDestination) -> Topic:
        ctx = parse_context_token(request.context_token)
        return self.discovery.profile_topic(request.path, ctx)

    def inbound(self, request: inbound_pb2.PortSpec) -> Topic:
        return self.policies.inbound_topic(request)

    def outbound(self, request: outbound_pb2.TrafficSpec) -> Topic:
        return self.policies.outbound_topic(request)

    # -- metrics (grpc_server.Observer) ----------------------------------------------------

    def opened(self, rpc: str) -> None:
        self.metrics.streams.labels(rpc).inc()

    def closed(self, rpc: str) -> None:
        self.metrics.streams.labels(rpc).dec()

    def failed(self, rpc: str, status: Status) -> None:
        self.metrics.stream_errors.labels(rpc, status.name).inc()


def _lookup(resolve: Callable[[Any], Topic]) -> Callable[[Any], Topic]:
    """``resolve`` with lookup failures as the gRPC status to answer."""

    def wrapped(request: Any) -> Topic:
        try:
            return resolve(request)
        except LookupFailedError as exc:
            raise RequestError(Status[exc.status.value], exc.message) from exc

    return wrapped
