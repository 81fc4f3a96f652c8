"""The gRPC surface: Destination (Get, GetProfile), InboundServerPolicies, OutboundPolicies.

Handlers are registered generically so streams can send bytes that a topic encoded once
for all its subscribers (see :mod:`gossamer_destination.topics`). Lookup failures become the
gRPC status Linkerd would answer with; a stream that falls too far behind is aborted with
``RESOURCE_EXHAUSTED`` and the proxy re-subscribes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import structlog
from gossamer_api.proxy import destination_pb2, inbound_pb2, outbound_pb2

from gossamer_destination.cluster import Cluster
from gossamer_destination.context import parse_context_token
from gossamer_destination.discovery import Discovery, LookupFailedError
from gossamer_destination.metrics import DestinationMetrics
from gossamer_destination.policy import Policies
from gossamer_destination.settings import DestinationSettings
from gossamer_destination.topics import StreamOverflowError, Topic, TopicRegistry

log = structlog.get_logger(__name__)

Context = grpc.aio.ServicerContext[Any, bytes]

DESTINATION = "io.linkerd.proxy.destination.Destination"
INBOUND = "io.linkerd.proxy.inbound.InboundServerPolicies"
OUTBOUND = "io.linkerd.proxy.outbound.OutboundPolicies"


def _passthrough(message: bytes) -> bytes:
    return message


class DestinationApi:
    """All four services, sharing one topic registry."""

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

    def handlers(self) -> list[grpc.GenericRpcHandler]:  # type: ignore[type-arg]
        def stream(fn: Callable[..., Any], request_type: Any) -> grpc.RpcMethodHandler[Any, Any]:
            return grpc.unary_stream_rpc_method_handler(
                fn,
                request_deserializer=request_type.FromString,
                response_serializer=_passthrough,
            )

        def unary(fn: Callable[..., Any], request_type: Any) -> grpc.RpcMethodHandler[Any, Any]:
            return grpc.unary_unary_rpc_method_handler(
                fn,
                request_deserializer=request_type.FromString,
                response_serializer=_passthrough,
            )

        return [
            grpc.method_handlers_generic_handler(
                DESTINATION,
                {
                    "Get": stream(self.get, destination_pb2.GetDestination),
                    "GetProfile": stream(self.get_profile, destination_pb2.GetDestination),
                },
            ),
            grpc.method_handlers_generic_handler(
                INBOUND,
                {
                    "WatchPort": stream(self.watch_port, inbound_pb2.PortSpec),
                    "GetPort": unary(self.get_port, inbound_pb2.PortSpec),
                },
            ),
            grpc.method_handlers_generic_handler(
                OUTBOUND,
                {
                    "Watch": stream(self.watch_outbound, outbound_pb2.TrafficSpec),
                    "Get": unary(self.get_outbound, outbound_pb2.TrafficSpec),
                },
            ),
        ]

    # -- streaming -------------------------------------------------------------------------------

    async def _serve(
        self, rpc: str, resolve: Callable[[], Topic], context: Context
    ) -> AsyncIterator[bytes]:
        try:
            topic = resolve()
        except LookupFailedError as exc:
            self.metrics.stream_errors.labels(rpc, exc.status.value).inc()
            await context.abort(getattr(grpc.StatusCode, exc.status.value), exc.message)
            return
        sub, initial = self.registry.subscribe(topic, self.settings.stream_queue_capacity)
        gauge = self.metrics.streams.labels(rpc)
        gauge.inc()
        try:
            for message in initial:
                yield message
            while True:
                for message in await sub.next_batch():
                    yield message
        except StreamOverflowError:
            self.metrics.stream_errors.labels(rpc, "RESOURCE_EXHAUSTED").inc()
            log.warning("destination.stream_overflow", rpc=rpc, topic=repr(topic))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "stream queue overflowed")
        finally:
            gauge.dec()
            topic.unsubscribe(sub)

    async def get(
        self, request: destination_pb2.GetDestination, context: Context
    ) -> AsyncIterator[bytes]:
        ctx = parse_context_token(request.context_token)
        async for message in self._serve(
            "Get", lambda: self.discovery.endpoints_topic(request.path, ctx), context
        ):
            yield message

    async def get_profile(
        self, request: destination_pb2.GetDestination, context: Context
    ) -> AsyncIterator[bytes]:
        ctx = parse_context_token(request.context_token)
        async for message in self._serve(
            "GetProfile", lambda: self.discovery.profile_topic(request.path, ctx), context
        ):
            yield message

    async def watch_port(
        self, request: inbound_pb2.PortSpec, context: Context
    ) -> AsyncIterator[bytes]:
        async for message in self._serve(
            "WatchPort", lambda: self.policies.inbound_topic(request), context
        ):
            yield message

    async def watch_outbound(
        self, request: outbound_pb2.TrafficSpec, context: Context
    ) -> AsyncIterator[bytes]:
        async for message in self._serve(
            "OutboundWatch", lambda: self.policies.outbound_topic(request), context
        ):
            yield message

    # -- unary (diagnostics) ---------------------------------------------------------------------

    async def _once(self, rpc: str, resolve: Callable[[], Topic], context: Context) -> bytes:
        try:
            topic = resolve()
        except LookupFailedError as exc:
            self.metrics.stream_errors.labels(rpc, exc.status.value).inc()
            await context.abort(getattr(grpc.StatusCode, exc.status.value), exc.message)
            raise AssertionError("unreachable") from exc
        sub, initial = self.registry.subscribe(topic, 1)
        topic.unsubscribe(sub)
        if not initial:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no policy yet")
        return initial[-1]

    async def get_port(self, request: inbound_pb2.PortSpec, context: Context) -> bytes:
        return await self._once("GetPort", lambda: self.policies.inbound_topic(request), context)

    async def get_outbound(self, request: outbound_pb2.TrafficSpec, context: Context) -> bytes:
        return await self._once(
            "OutboundGet", lambda: self.policies.outbound_topic(request), context
        )
