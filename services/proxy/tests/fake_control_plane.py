"""A fake Linkerd control plane that loopback proxy tests drive message by message.

One real grpcio server on 127.0.0.1 serves ``Destination`` (``Get``, ``GetProfile``) and,
unless asked not to, ``OutboundPolicies`` (``Watch``) and ``InboundServerPolicies``
(``WatchPort``). What each stream answers comes from
the test: ``plane.send(key, message)`` appends to that key's history, every stream opened
for the key replays the history and then follows new messages, and the stream stays open
afterwards, as a real control plane's watch does. Sending a :class:`grpc.StatusCode`
instead of a message ends the stream(s) with that status, so tests can play a control
plane that answers ``NOT_FOUND``, ``INVALID_ARGUMENT``, ...

Keys, as the proxy's requests name them:

* ``get:<path>`` for ``Destination.Get`` (``path`` is the authority, ``host:port``);
* ``profile:<path>`` for ``Destination.GetProfile``;
* ``policy:<ip>:<port>`` for ``OutboundPolicies.Watch`` of a ``TrafficSpec`` address;
* ``inbound:<port>`` for ``InboundServerPolicies.WatchPort`` (any workload).

The plane also records what was asked (``requests`` and ``specs``), so tests can assert
which lookups the proxy made.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from gossamer_api.addresses import AddressError, tcp_address_from_proto
from gossamer_api.proxy import (
    destination_pb2_grpc,
    inbound_pb2,
    inbound_pb2_grpc,
    outbound_pb2,
    outbound_pb2_grpc,
)

__all__ = [
    "ControlPlane",
    "FakeDestination",
    "FakeInboundPolicies",
    "FakeOutboundPolicies",
    "Plane",
    "serve_control_plane",
]


@dataclass
class Plane:
    """Per-key message history; every stream replays it, then follows new messages."""

    history: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    waiters: dict[str, list[asyncio.Queue[Any]]] = field(default_factory=lambda: defaultdict(list))
    #: ``("get" | "profile", path)`` for every ``Destination`` stream opened, in order.
    requests: list[tuple[str, str]] = field(default_factory=list)
    #: Every ``OutboundPolicies.Watch`` request, in order.
    specs: list[outbound_pb2.TrafficSpec] = field(default_factory=list)
    #: Every ``InboundServerPolicies.WatchPort`` request, in order.
    port_specs: list[inbound_pb2.PortSpec] = field(default_factory=list)

    def send(self, key: str, message: Any) -> None:
        """Answer ``key``: open streams get ``message`` now, later streams on replay."""
        self.history[key].append(message)
        for queue in self.waiters[key]:
            queue.put_nowait(message)

    async def stream(self, key: str, context: Any) -> AsyncIterator[Any]:
        """Yield ``key``'s messages until the server stops; a status code aborts the call."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for message in self.history[key]:
            queue.put_nowait(message)
        self.waiters[key].append(queue)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, grpc.StatusCode):
                    await context.abort(item, "answered by the test")
                yield item
        finally:
            self.waiters[key].remove(queue)


class FakeDestination(destination_pb2_grpc.DestinationServicer):
    """``Destination`` answered from a :class:`Plane` (keys ``get:`` and ``profile:``)."""

    def __init__(self, plane: Plane) -> None:
        self.plane = plane

    async def Get(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.plane.requests.append(("get", request.path))
        async for item in self.plane.stream("get:" + request.path, context):
            yield item

    async def GetProfile(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.plane.requests.append(("profile", request.path))
        async for item in self.plane.stream("profile:" + request.path, context):
            yield item


class FakeOutboundPolicies(outbound_pb2_grpc.OutboundPoliciesServicer):
    """``OutboundPolicies`` answered from a :class:`Plane` (key ``policy:<ip>:<port>``).

    Only ``Watch`` is served: the proxy never uses the unary ``Get``, so a call to it is a
    bug the test should see as ``UNIMPLEMENTED``.
    """

    def __init__(self, plane: Plane) -> None:
        self.plane = plane

    async def Get(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the proxy only watches")

    async def Watch(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.plane.specs.append(request)
        try:
            ip, port = tcp_address_from_proto(request.addr)
        except AddressError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad TrafficSpec: {exc}")
        async for item in self.plane.stream(f"policy:{ip}:{port}", context):
            yield item


class FakeInboundPolicies(inbound_pb2_grpc.InboundServerPoliciesServicer):
    """``InboundServerPolicies`` answered from a :class:`Plane` (key ``inbound:<port>``)."""

    def __init__(self, plane: Plane) -> None:
        self.plane = plane

    async def GetPort(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the proxy only watches")

    async def WatchPort(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.plane.port_specs.append(request)
        async for item in self.plane.stream(f"inbound:{request.port}", context):
            yield item


@dataclass
class ControlPlane:
    """A running fake control plane: the plane the test drives and where it listens."""

    plane: Plane
    server: grpc.aio.Server
    port: int

    @property
    def addr(self) -> str:
        """``host:port`` for ``LINKERD2_PROXY_{DESTINATION,POLICY}_SVC_ADDR``."""
        return f"127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def serve_control_plane(*, policies: bool = True) -> AsyncIterator[ControlPlane]:
    """Serve a fresh :class:`Plane` on an ephemeral 127.0.0.1 port until the block exits.

    ``policies=False`` serves ``Destination`` alone, as a control plane without the policy
    API would: an ``OutboundPolicies`` call then fails with ``UNIMPLEMENTED``.
    """
    plane = Plane()
    server = grpc.aio.server()
    destination_pb2_grpc.add_DestinationServicer_to_server(FakeDestination(plane), server)
    if policies:
        outbound_pb2_grpc.add_OutboundPoliciesServicer_to_server(
            FakeOutboundPolicies(plane), server
        )
        inbound_pb2_grpc.add_InboundServerPoliciesServicer_to_server(
            FakeInboundPolicies(plane), server
        )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield ControlPlane(plane, server, port)
    finally:
        await server.stop(None)
