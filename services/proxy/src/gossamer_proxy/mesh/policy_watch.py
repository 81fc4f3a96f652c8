"""Policy watches: inbound ``WatchPort`` per served port, outbound ``Watch`` per target.

Inbound (linkerd-wire.md §9 "Inbound default policy", §1.7): each port's policy starts as
the env default (``LINKERD2_PROXY_INBOUND_DEFAULT_POLICY``, opaque for ports whose detection
is disabled) and is replaced by the controller's ``Server`` as it arrives. Ports the pod
declares (``LINKERD2_PROXY_INBOUND_PORTS``, plus the admin port) are watched from start-up
and never evicted; other ports are watched on first use and evicted after 90 s unused.
A ``Server`` that cannot be compiled leaves the previous policy in force.

Outbound (§1.8, §3.3): ``OutboundPolicies.Watch`` per original destination. ``NOT_FOUND`` or
``UNIMPLEMENTED`` means "no policy" (the caller forwards to the original destination, or
follows the profile); the state is then ``None`` and the watch stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import structlog
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import inbound_grpc, inbound_pb2, outbound_grpc, outbound_pb2
from grpclib.client import Channel
from grpclib.const import Status

from gossamer_proxy.mesh.authz import PolicyError, ServerPolicy, compile_server
from gossamer_proxy.mesh.backoff import UniformSource
from gossamer_proxy.mesh.control_stream import StreamConfig, StreamWatch
from gossamer_proxy.mesh.idle import IdleTracker
from gossamer_proxy.mesh.outbound_policy import (
    OutboundPolicyError,
    OutboundPolicyModel,
    compile_outbound_policy,
)
from gossamer_proxy.mesh.rpc import ServerStream
from gossamer_proxy.mesh.watch_state import WatchState

__all__ = ["InboundPolicyClient", "OutboundPolicyClient"]

log = structlog.get_logger("gossamer.proxy.policy")

NO_POLICY = (Status.NOT_FOUND, Status.UNIMPLEMENTED)

M = TypeVar("M")
V = TypeVar("V")


class _CompilingHandler(Generic[M, V]):
    """Compiles each watched message into the state; one that does not compile is logged
    and leaves the previous value in force."""

    event = ""
    target_key = "target"  # the log field naming what is watched
    errors: tuple[type[Exception], ...] = ()

    def __init__(self, state: WatchState[V], compile_message: Callable[[M], V]) -> None:
        self.state = state
        self._compile = compile_message

    def on_message(self, message: M) -> None:
        try:
            value = self._compile(message)
        except self.errors as exc:
            self.state.last_error = str(exc)
            log.warning(self.event, **{self.target_key: self.state.target}, error=str(exc))
            return
        self.state.last_error = None
        if value != self.state.value:
            self.state.set(value)

    def on_reconnect(self) -> None:
        pass

    def on_final(self, code: Status, details: str) -> None:
        self.state.final = f"{code.name}: {details}"


class _ServerHandler(_CompilingHandler[inbound_pb2.Server, ServerPolicy]):
    event = "inbound_policy_rejected"
    target_key = "port"
    errors = (PolicyError,)

    def __init__(self, state: WatchState[ServerPolicy]) -> None:
        super().__init__(state, compile_server)


class InboundPolicyClient:
    """Per-port inbound policies, each starting from the default policy."""

    def __init__(
        self,
        channel: Channel,
        *,
        workload: str,
        default: Callable[[int], ServerPolicy],
        pinned_ports: Iterable[int] = (),
        stream_config: StreamConfig | None = None,
        idle_timeout: float = 90.0,
        rng: UniformSource | None = None,
    ) -> None:
        self._stub = inbound_grpc.InboundServerPoliciesStub(channel)
        self._workload = workload
        self._default = default
        self._config = stream_config or StreamConfig()
        self._rng = rng
        self._idle: IdleTracker[int] = IdleTracker(idle_timeout)
        self._states: dict[int, WatchState[ServerPolicy]] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._pinned = tuple(sorted(set(pinned_ports)))

    def start(self) -> None:
        """Begin the watches of the pinned ports (call from the running loop)."""
        now = asyncio.get_running_loop().time()
        for port in self._pinned:
            self._idle.pin(port, now)
            self._ensure(port)

    def _ensure(self, port: int) -> WatchState[ServerPolicy]:
        state = self._states.get(port)
        if state is None:
            state = self._states[port] = WatchState(str(port), self._default(port))
            spec = inbound_pb2.PortSpec(workload=self._workload, port=port)
            watch: StreamWatch[inbound_pb2.Server] = StreamWatch(
                f"inbound:{port}",
                lambda: ServerStream(self._stub.WatchPort, spec),
                _ServerHandler(state),
                config=self._config,
                rng=self._rng,
            )
            self._tasks[port] = asyncio.create_task(watch.run(), name=f"inbound-policy-{port}")
        return state

    def policy(self, port: int) -> ServerPolicy:
        """The policy in force for ``port`` now (starting a watch on first use)."""
        now = asyncio.get_running_loop().time()
        if port not in self._idle:
            self._idle.acquire(port, now)
            self._idle.release(port, now)
        else:
            self._idle.touch(port, now)
        self._evict(now)
        return self._ensure(port).value

    def state(self, port: int) -> WatchState[ServerPolicy]:
        self.policy(port)
        return self._states[port]

    def _evict(self, now: float) -> None:
        for port in self._idle.expired(now):
            self._states.pop(port, None)
            task = self._tasks.pop(port, None)
            if task is not None:
                task.cancel()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._states.clear()


class _OutboundHandler(_CompilingHandler[outbound_pb2.OutboundPolicy, OutboundPolicyModel | None]):
    event = "outbound_policy_rejected"
    errors = (OutboundPolicyError,)

    def __init__(self, state: WatchState[OutboundPolicyModel | None]) -> None:
        super().__init__(state, compile_outbound_policy)

    def on_final(self, code: Status, details: str) -> None:
        super().on_final(code, details)
        self.state.set(None)  # NOT_FOUND / UNIMPLEMENTED: there is no policy


class OutboundPolicyClient:
    """``OutboundPolicies.Watch`` per original destination ``(ip, port)``."""

    def __init__(
        self,
        channel: Channel,
        *,
        workload: str,
        stream_config: StreamConfig | None = None,
        rng: UniformSource | None = None,
    ) -> None:
        self._stub = outbound_grpc.OutboundPoliciesStub(channel)
        self._workload = workload
        self._config = stream_config or StreamConfig()
        self._rng = rng
        self._entries: dict[tuple[str, int], tuple[WatchState[Any], asyncio.Task[None]]] = {}

    def watch(self, ip: str, port: int) -> WatchState[OutboundPolicyModel | None]:
        key = (str(ipaddress.ip_address(ip)), port)
        entry = self._entries.get(key)
        if entry is None:
            state: WatchState[OutboundPolicyModel | None] = WatchState(f"{key[0]}:{port}", None)
            spec = outbound_pb2.TrafficSpec(
                source_workload=self._workload, addr=tcp_address_to_proto(key[0], port)
            )
            watch: StreamWatch[outbound_pb2.OutboundPolicy] = StreamWatch(
                f"outbound:{key[0]}:{port}",
                lambda: ServerStream(self._stub.Watch, spec),
                _OutboundHandler(state),
                config=self._config,
                final_codes=NO_POLICY,
                rng=self._rng,
            )
            entry = (state, asyncio.create_task(watch.run()))
            self._entries[key] = entry
        return entry[0]

    def watching(self) -> list[tuple[str, int]]:
        """``(ip, port)`` of every live watch (diagnostics, tests)."""
        return sorted(self._entries)

    def forget(self, ip: str, port: int) -> None:
        entry = self._entries.pop((str(ipaddress.ip_address(ip)), port), None)
        if entry is not None:
            entry[1].cancel()

    async def close(self) -> None:
        tasks = [task for _, task in self._entries.values()]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
        self._entries.clear()
