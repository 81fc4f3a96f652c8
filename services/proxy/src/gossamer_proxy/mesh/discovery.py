"""The destination client: per-target ``Get`` and ``GetProfile`` watches, shared and evicted.

For each outbound target the proxy watches its ServiceProfile (``GetProfile``, by
``IP:port`` of the original destination or by name) and, for services, its endpoints
(``Get`` on ``<fqn>:<port>``), so a ClusterIP is resolved by the proxy itself, without
kube-proxy: GetProfile on the ClusterIP yields the service's fully qualified name
(:func:`service_authority`), and Get on that name yields the pod endpoints.

Each watch is one :class:`~.control_stream.StreamWatch` (reconnects, backoff, timeouts);
the last known state is kept while the control plane is away, and a re-opened ``Get``
stream replaces the endpoint set with its first update (:meth:`EndpointTable.begin_resync`).
``INVALID_ARGUMENT``/``FAILED_PRECONDITION`` end a watch for good ("discovery rejected": no
profile, no endpoints). Watches are shared by all users of a target and dropped after
``LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT`` (5 s) without users.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import structlog
from gossamer_api.proxy import destination_grpc, destination_pb2
from grpclib.client import Channel, UnaryStreamMethod
from grpclib.const import Status

from gossamer_proxy.mesh.backoff import UniformSource
from gossamer_proxy.mesh.control_stream import StreamConfig, StreamWatch
from gossamer_proxy.mesh.endpoints import EndpointTable
from gossamer_proxy.mesh.idle import IdleTracker
from gossamer_proxy.mesh.profile import Profile, ProfileError, compile_profile, service_authority
from gossamer_proxy.mesh.rpc import ServerStream
from gossamer_proxy.mesh.watch_state import WatchState

__all__ = ["DestinationClient", "service_authority"]

log = structlog.get_logger("gossamer.proxy.discovery")

REJECTED = (Status.INVALID_ARGUMENT, Status.FAILED_PRECONDITION)

S = TypeVar("S")


class _EndpointsHandler:
    def __init__(self, state: WatchState[EndpointTable]) -> None:
        self.state = state

    def on_message(self, message: destination_pb2.Update) -> None:
        result = self.state.value.apply(message)
        for error in result.errors:
            log.warning("destination_update_skipped", target=self.state.target, error=error)
        if result.errors:
            self.state.last_error = "; ".join(result.errors)
        if result.changed:
            self.state.changed()

    def on_reconnect(self) -> None:
        self.state.value.begin_resync()

    def on_final(self, code: Status, details: str) -> None:
        self.state.final = f"{code.name}: {details}"
        self.state.changed()


class _ProfileHandler:
    def __init__(self, state: WatchState[Profile | None]) -> None:
        self.state = state

    def on_message(self, message: destination_pb2.DestinationProfile) -> None:
        try:
            profile = compile_profile(message)
        except ProfileError as exc:
            self.state.last_error = str(exc)
            log.warning("profile_rejected", target=self.state.target, error=str(exc))
            return
        self.state.last_error = None
        if profile != self.state.value:
            self.state.set(profile)

    def on_reconnect(self) -> None:
        pass

    def on_final(self, code: Status, details: str) -> None:
        # Discovery rejected: the target has no profile (the proxy forwards as is).
        self.state.final = f"{code.name}: {details}"
        self.state.set(None)


class _Entry:
    def __init__(self, state: WatchState[Any], watch: StreamWatch[Any]) -> None:
        self.state = state
        self.watch = watch
        self.task: asyncio.Task[None] = asyncio.create_task(watch.run(), name=watch.name)


class DestinationClient:
    """Shared ``Get``/``GetProfile`` watches over one channel to the destination service."""

    def __init__(
        self,
        channel: Channel,
        *,
        context_token: str = "",
        stream_config: StreamConfig | None = None,
        idle_timeout: float = 5.0,
        rng: UniformSource | None = None,
    ) -> None:
        self._stub = destination_grpc.DestinationStub(channel)
        self._context = context_token
        self._config = stream_config or StreamConfig()
        self._rng = rng
        self._idle: IdleTracker[tuple[str, str]] = IdleTracker(idle_timeout)
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._evictor: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()

    def _request(self, target: str) -> destination_pb2.GetDestination:
        return destination_pb2.GetDestination(path=target, context_token=self._context)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _start(
        self,
        key: tuple[str, str],
        initial: Callable[[], Any],
        handler: Callable[[WatchState[Any]], Any],
        rpc: UnaryStreamMethod[destination_pb2.GetDestination, Any],
    ) -> WatchState[Any]:
        if self._idle.acquire(key, self._now()) or key not in self._entries:
            state: WatchState[Any] = WatchState(key[1], initial())
            request = self._request(key[1])
            watch: StreamWatch[Any] = StreamWatch(
                f"{key[0]}:{key[1]}",
                lambda: ServerStream(rpc, request),
                handler(state),
                config=self._config,
                final_codes=REJECTED,
                rng=self._rng,
            )
            self._entries[key] = _Entry(state, watch)
        if self._evictor is None:
            self._evictor = asyncio.create_task(self._evict_loop(), name="discovery-evictor")
        return self._entries[key].state

    def acquire_endpoints(self, authority: str) -> WatchState[EndpointTable]:
        """Start using the endpoints of ``authority`` (``name:port``); pair with release."""
        return self._start(("get", authority), EndpointTable, _EndpointsHandler, self._stub.Get)

    def acquire_profile(self, target: str) -> WatchState[Profile | None]:
        """Start using the profile of ``target`` (``IP:port`` or ``name:port``)."""
        return self._start(
            ("profile", target), lambda: None, _ProfileHandler, self._stub.GetProfile
        )

    def release_endpoints(self, authority: str) -> None:
        self._idle.release(("get", authority), self._now())
        self._wakeup.set()

    def release_profile(self, target: str) -> None:
        self._idle.release(("profile", target), self._now())
        self._wakeup.set()

    @contextlib.asynccontextmanager
    async def endpoints(self, authority: str) -> AsyncIterator[WatchState[EndpointTable]]:
        state = self.acquire_endpoints(authority)
        try:
            yield state
        finally:
            self.release_endpoints(authority)

    @contextlib.asynccontextmanager
    async def profile(self, target: str) -> AsyncIterator[WatchState[Profile | None]]:
        state = self.acquire_profile(target)
        try:
            yield state
        finally:
            self.release_profile(target)

    def watching(self) -> list[tuple[str, str]]:
        """``(kind, target)`` of every live watch (diagnostics, tests)."""
        return sorted(self._entries)

    async def _evict_loop(self) -> None:
        while True:
            for key in self._idle.expired(self._now()):
                entry = self._entries.pop(key, None)
                if entry is not None:
                    log.debug("discovery_evicted", kind=key[0], target=key[1])
                    entry.task.cancel()
            next_expiry = self._idle.next_expiry()
            timeout = None if next_expiry is None else max(0.0, next_expiry - self._now())
            self._wakeup.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that races with the event being set, and close() would hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()

    async def close(self) -> None:
        tasks = [e.task for e in self._entries.values()]
        if self._evictor is not None:
            tasks.append(self._evictor)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._entries.clear()
        self._evictor = None
