"""Multi-core proxy, the I/O: the parent's worker supervisor and the worker's side of the link.

Imported only when the core count (:func:`.cores.cores_from_env`) is above 1. The parent is
an ordinary :class:`~.app.Proxy` whose listeners use ``SO_REUSEPORT``; once it listens (and,
with identity, holds its first certificate) it starts ``cores - 1`` workers, each
``python -m gossamer_proxy.worker`` with one end of a private socket pair. Over it (frames of
:mod:`.cores`):

* parent → worker: ``start`` (identity name, trust anchors, the key and chain, and how to
  number connections), then ``credentials`` at each renewal, ``metrics`` requests, and
  ``tap_start`` / ``tap_limit`` / ``tap_stop`` for the parent's tap calls;
* worker → parent: ``ready`` once it accepts, ``metrics`` answers (its rendered families),
  and ``tap_started`` / ``tap_events`` / ``tap_done`` for the taps it runs.

Workers load their settings as the parent did (same environment and flags), then bind the
ports the parent bound (port 0 included, from the ``start`` message), so the kernel spreads new
connections over every process. The admin server stays in the parent: ``/metrics`` merges
every process's families, ``/ready`` waits for every worker, and ``/shutdown`` or SIGTERM
sends SIGTERM to each worker, which drains as a single proxy does. A worker that exits while
the proxy serves is restarted within a :class:`~.cores.RestartBudget`; past it the proxy shuts
down so that Kubernetes restarts the container.

Tap spans every process. Only the parent listens on the control port, where the tap
identity is authorized over mTLS; each ``Observe`` call there also starts the same tap in
every serving worker over its private link (:class:`Supervisor` is the tap service's
:class:`~.tap.remote.RemoteTaps`), and the workers' events come back over the links and join
the call's stream. This was chosen over a tap port per worker that the parent would call as
a gRPC client: the links already exist, reach only the parent, and need no second listener,
certificate check or port excluded from the inbound redirect. Every hop is bounded: a
worker's tap queue drops what its link cannot take, the call's queue of worker events drops
what the client cannot take. Connections are numbered per process and per restart
(:func:`~.observe.number_connections`), so events of different processes, or of a worker
and the one it replaced, never share a ``StreamId``; a worker started or restarted while a
call is open joins it.

Not shared: control-plane streams (each process watches its own destinations and policies,
as separate proxies would).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from .app import Proxy
from .cores import (
    FrameDecoder,
    FrameError,
    RestartBudget,
    encode_frame,
    family_total,
    merge_expositions,
)
from .mesh.tls_contexts import Credentials

if TYPE_CHECKING:  # tap's modules load only when a tap call comes
    from gossamer_api.proxy import tap_pb2

    from .tap.remote import RemoteTap
    from .tap.taps import Wake

__all__ = ["WORKER_FD_ENV", "Supervisor", "credentials_from_wire", "credentials_to_wire"]

_log = structlog.get_logger("gossamer.proxy.multicore")

WORKER_FD_ENV = "GOSSAMER_PROXY_WORKER_FD"
WORKER_INDEX_ENV = "GOSSAMER_PROXY_WORKER_INDEX"
_METRICS_TIMEOUT = 5.0  # seconds a worker has to answer a metrics request
_CREDENTIAL_CHECK = 1.0  # seconds between looks for a renewed certificate
_READ_CHUNK = 1 << 16


def credentials_to_wire(credentials: Credentials) -> dict[str, Any]:
    return {
        "identity": credentials.identity,
        "key_pem": base64.b64encode(credentials.key_pem).decode("ascii"),
        "chain_pem": base64.b64encode(credentials.chain_pem).decode("ascii"),
        "leaf_der": base64.b64encode(credentials.leaf_der).decode("ascii"),
        "not_before": credentials.not_before,
        "not_after": credentials.not_after,
    }


def credentials_from_wire(data: Mapping[str, Any]) -> Credentials:
    """Raises ``ValueError`` (or ``KeyError``/``TypeError``) on a malformed message."""
    return Credentials(
        identity=str(data["identity"]),
        key_pem=base64.b64decode(data["key_pem"], validate=True),
        chain_pem=base64.b64decode(data["chain_pem"], validate=True),
        leaf_der=base64.b64decode(data["leaf_der"], validate=True),
        not_before=float(data["not_before"]),
        not_after=float(data["not_after"]),
    )


async def read_frames(reader: asyncio.StreamReader, decoder: FrameDecoder) -> list[dict[str, Any]]:
    """The next messages; ``[]`` at end of stream."""
    while True:
        data = await reader.read(_READ_CHUNK)
        if not data:
            return []
        messages = decoder.feed(data)
        if messages:
            return messages


@dataclass
class _Worker:
    index: int
    budget: RestartBudget = field(default_factory=RestartBudget)
    process: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    ready: bool = False
    pushed: Credentials | None = None
    pending: dict[int, asyncio.Future[str]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    #: Times this worker was started, less one: its restart generation.
    generation: int = -1

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Supervisor:
    """Starts, feeds, watches and drains the workers of one parent :class:`Proxy`."""

    def __init__(self, proxy: Proxy, cores: int) -> None:
        if cores < 2:
            raise ValueError("a supervisor needs at least two cores")
        self.proxy = proxy
        self.workers = [_Worker(index) for index in range(1, cores)]
        self.stopping = False
        self.cores = cores
        self._request_ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._tap_ids = itertools.count(1)
        #: The tap calls open on the parent's control port, by id.
        self.taps: dict[int, RemoteTap] = {}
        proxy.admin.ready = lambda: proxy.ready and self.ready
        proxy.admin.render_metrics = self.render_metrics
        if proxy.tap_server is not None:
            proxy.tap_server.service.remote = self

    @property
    def ready(self) -> bool:
        return all(worker.ready for worker in self.workers)

    def start(self) -> None:
        """Begin (the parent listens already): workers start once the parent is certified."""
        self._tasks.append(asyncio.create_task(self._run(), name="multicore-supervisor"))

    async def _run(self) -> None:
        # The identity client offers no event to wait on: look every 50 ms.
        while not self._certified() and not self.stopping:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for worker in self.workers:
            if self.stopping:
                return
            await self._spawn(worker)
        while not self.stopping:
            await asyncio.sleep(_CREDENTIAL_CHECK)
            await self._push_credentials()

    def _certified(self) -> bool:
        identity = self.proxy.identity
        return identity is None or identity.credentials is not None

    def _worker_env(self, index: int, fd: int) -> dict[str, str]:
        return {**os.environ, WORKER_FD_ENV: str(fd), WORKER_INDEX_ENV: str(index)}

    def _start_message(self, generation: int = 0) -> dict[str, Any]:
        """The ports the parent bound (port 0 resolved), the pod's identity, if any, and the
        worker's restart ``generation`` (its connections are numbered apart by it)."""
        inbound = self.proxy.inbound_addr
        message: dict[str, Any] = {
            "type": "start",
            "inbound": [inbound.host, inbound.port],
            "outbound": [
                [c.listen.host, c.listen.port] for c in self.proxy.contexts if not c.inbound
            ],
            "admin": [self.proxy.settings.admin_listen.host, self.proxy.admin.port],
            "identity": None,
            "processes": self.cores,
            "generation": generation,
        }
        identity = self.proxy.identity
        if identity is not None and identity.credentials is not None:
            message["identity"] = {
                "name": identity.name,
                "server_name": identity.server_name,
                "trust_anchors_pem": identity.trust_anchors_pem,
                "credentials": credentials_to_wire(identity.credentials),
            }
        return message

    async def _spawn(self, worker: _Worker) -> None:
        try:
            await self._start_worker(worker)
        except OSError as exc:  # no fork, no fds, no interpreter: the proxy cannot run its cores
            _log.error("proxy_worker_spawn_failed", worker=worker.index, error=str(exc))
            self.proxy.shutdown_control.request("worker could not be started")

    async def _start_worker(self, worker: _Worker) -> None:
        parent_end, child_end = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gossamer_proxy.worker",
                *sys.argv[1:],  # the parent's settings flags, if any (environment too)
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(child_end.fileno(),),
                env=self._worker_env(worker.index, child_end.fileno()),
            )
        finally:
            child_end.close()
        if self.stopping:  # the drain began while this worker was being started
            process.send_signal(signal.SIGTERM)
        reader, writer = await asyncio.open_unix_connection(sock=parent_end)
        worker.process, worker.writer, worker.ready = process, writer, False
        worker.pushed = self.proxy.identity.credentials if self.proxy.identity else None
        worker.generation += 1
        writer.write(encode_frame(self._start_message(worker.generation)))
        _log.info("proxy_worker_spawned", worker=worker.index, pid=process.pid)
        worker.task = asyncio.create_task(
            self._watch(worker, reader, process), name=f"multicore-worker-{worker.index}"
        )

    async def _watch(
        self, worker: _Worker, reader: asyncio.StreamReader, process: asyncio.subprocess.Process
    ) -> None:
        decoder = FrameDecoder()
        try:
            while messages := await read_frames(reader, decoder):
                for message in messages:
                    self._on_message(worker, message)
        except (FrameError, ConnectionError) as exc:
            _log.warning("proxy_worker_link_broken", worker=worker.index, error=str(exc))
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        code = await process.wait()
        worker.ready = False
        for remote in self.taps.values():
            remote.finished(worker.index)
        if worker.writer is not None:
            worker.writer.close()
            worker.writer = None
        for future in worker.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("worker exited"))
        worker.pending.clear()
        if self.stopping:
            return
        loop = asyncio.get_running_loop()
        if worker.budget.allow(loop.time()):
            _log.warning("proxy_worker_restarting", worker=worker.index, exit_code=code)
            await self._spawn(worker)
        else:
            _log.error(
                "proxy_worker_restart_budget_exhausted",
                worker=worker.index,
                exit_code=code,
                max_restarts=worker.budget.max_restarts,
                window_seconds=worker.budget.window,
            )
            self.proxy.shutdown_control.request("worker restart budget exhausted")

    def _on_message(self, worker: _Worker, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "ready":
            worker.ready = True
            _log.info("proxy_worker_ready", worker=worker.index, pid=worker.pid)
            for remote in self.taps.values():
                if not remote.limited:
                    self._start_tap(worker, remote)
        elif kind in ("tap_events", "tap_done", "tap_started"):
            self._on_tap_message(worker, kind, message)
        elif kind == "metrics":
            request_id = message.get("id")
            if not isinstance(request_id, int):
                return
            future = worker.pending.pop(request_id, None)
            text = message.get("text")
            if future is not None and not future.done() and isinstance(text, str):
                future.set_result(text)

    # -- tap across processes (RemoteTaps) ---------------------------------------------------

    def open(self, request: tap_pb2.ObserveRequest, wake: Wake) -> RemoteTap:
        """Start a tap call's tap on every serving worker; the rest join once ready."""
        from .tap.remote import RemoteTap
        from .tap.taps import QUEUE_CAPACITY

        tap_id = next(self._tap_ids)
        remote = RemoteTap(
            tap_id,
            request.SerializeToString(),
            wake,
            window=QUEUE_CAPACITY // len(self.workers),
            grant=lambda index, events: self._grant_credit(tap_id, index, events),
        )
        self.taps[remote.tap_id] = remote
        for worker in self.workers:
            if worker.ready:
                self._start_tap(worker, remote)
        return remote

    def limit(self, remote: RemoteTap) -> None:
        remote.limited = True
        self._tell_tapping(remote, "tap_limit")

    def close(self, remote: RemoteTap) -> None:
        self.taps.pop(remote.tap_id, None)
        self._tell_tapping(remote, "tap_stop")
        remote.pending.clear()

    def _start_tap(self, worker: _Worker, remote: RemoteTap) -> None:
        if worker.writer is None:
            return
        request = base64.b64encode(remote.request).decode("ascii")
        start = {
            "type": "tap_start",
            "tap": remote.tap_id,
            "request": request,
            "credit": remote.window,
        }
        worker.writer.write(encode_frame(start))
        remote.asked(worker.index)

    def _grant_credit(self, tap_id: int, index: int, events: int) -> None:
        """Let worker ``index`` send ``events`` more of tap ``tap_id``'s (its client took as
        many)."""
        worker = self.workers[index - 1]
        if worker.writer is not None:
            worker.writer.write(
                encode_frame({"type": "tap_credit", "tap": tap_id, "credit": events})
            )

    def _tell_tapping(self, remote: RemoteTap, kind: str) -> None:
        frame = encode_frame({"type": kind, "tap": remote.tap_id})
        for worker in self.workers:
            if worker.index in remote.pending and worker.writer is not None:
                worker.writer.write(frame)

    def _on_tap_message(self, worker: _Worker, kind: str, message: dict[str, Any]) -> None:
        tap_id = message.get("tap")
        remote = self.taps.get(tap_id) if isinstance(tap_id, int) else None
        if remote is None:
            return  # the call has ended: late events are dropped
        if kind == "tap_started":
            remote.started(worker.index)
            return
        if kind == "tap_done":
            dropped = message.get("dropped")
            remote.finished(worker.index, dropped if isinstance(dropped, int) else 0)
            return
        events = message.get("events")
        if not isinstance(events, list):
            return
        # Only what the worker had credit for is decoded; a worker sends no more unless it
        # misbehaves, and then the rest is dropped undecoded.
        room = remote.room(worker.index)
        if len(events) > room:
            remote.dropped += len(events) - room
            events = events[:room]
        decoded: list[bytes] = []
        for event in events:
            if not isinstance(event, str):
                continue
            try:
                decoded.append(base64.b64decode(event, validate=True))
            except ValueError:
                remote.dropped += 1
        remote.offer(worker.index, decoded)

    async def _push_credentials(self) -> None:
        identity = self.proxy.identity
        credentials = identity.credentials if identity is not None else None
        if credentials is None:
            return
        frame = encode_frame({"type": "credentials", **credentials_to_wire(credentials)})
        for worker in self.workers:
            if worker.writer is not None and worker.pushed is not credentials:
                worker.writer.write(frame)
                worker.pushed = credentials
                _log.info("proxy_worker_credentials_pushed", worker=worker.index)

    async def _worker_metrics(self, worker: _Worker) -> str | None:
        if worker.writer is None or not worker.ready:
            return None
        request_id = next(self._request_ids)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        worker.pending[request_id] = future
        worker.writer.write(encode_frame({"type": "metrics", "id": request_id}))
        try:
            return await asyncio.wait_for(future, _METRICS_TIMEOUT)
        except (TimeoutError, ConnectionError):
            _log.warning("proxy_worker_metrics_missing", worker=worker.index)
            return None
        finally:
            worker.pending.pop(request_id, None)

    async def render_metrics(self) -> bytes:
        """Every process's families merged, plus HTTP requests served by each process."""
        own = self.proxy.metrics.registry.render().decode()
        answers = await asyncio.gather(*(self._worker_metrics(w) for w in self.workers))
        per_process: list[tuple[int, int | None, str]] = [(0, os.getpid(), own)]
        per_process += [
            (w.index, w.pid, text)
            for w, text in zip(self.workers, answers, strict=True)
            if text is not None
        ]
        lines = [
            "# HELP gossamer_proxy_worker_requests_total HTTP requests each serving process of "
            "a multi-core proxy received (worker 0 is the parent).",
            "# TYPE gossamer_proxy_worker_requests_total counter",
        ]
        for index, pid, text in per_process:
            total = int(family_total(text, "request_total"))
            lines.append(
                f'gossamer_proxy_worker_requests_total{{worker="{index}",pid="{pid}"}} {total}'
            )
        merged = merge_expositions(text for _, _, text in per_process)
        return (merged + "\n".join(lines) + "\n").encode()

    async def drain(self) -> None:
        """SIGTERM every worker (each drains its own connections) and wait for them to exit."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        grace = self.proxy.settings.shutdown_grace_period + 5.0
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                await asyncio.wait_for(worker.process.wait(), grace)
            except TimeoutError:
                _log.warning("proxy_worker_killed", worker=worker.index, pid=worker.pid)
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
        for worker in self.workers:
            if worker.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await worker.task
