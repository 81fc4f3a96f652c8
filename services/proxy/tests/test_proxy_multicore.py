"""A proxy with LINKERD2_PROXY_CORES=2 on loopback: two processes serve, one admin, one drain,
and one tap (on the parent's control port) that sees the requests of both.

Runs ``python -m gossamer_proxy`` as a real process tree (the parent and one worker sharing
the inbound port through SO_REUSEPORT) in front of a small HTTP backend in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from gossamer_api.proxy import tap_pb2
from gossamer_api.proxy.tap_grpc import TapStub
from gossamer_tls import TrustMaterial
from grpclib.client import Channel
from grpclib.config import Configuration
from mesh_pki import anchors_pem, issue

_DEADLINE = 60.0  # seconds any wait below may take before the test fails


@dataclass
class Backend:
    server: ThreadingHTTPServer
    release: threading.Event = field(default_factory=threading.Event)
    hold: bool = False
    received: int = 0
    lock: threading.Condition = field(default_factory=threading.Condition)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def wait_received(self, count: int) -> None:
        with self.lock:
            assert self.lock.wait_for(lambda: self.received >= count, _DEADLINE)


def _backend() -> Backend:
    backend: Backend

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with backend.lock:
                backend.received += 1
                backend.lock.notify_all()
            if backend.hold:
                backend.release.wait(_DEADLINE)
            body = b"ok\n"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # the default 5 drops SYNs past the proxy's connect timeout

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    backend = Backend(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return backend


@dataclass
class MultiCoreProxy:
    proc: subprocess.Popen[str]
    inbound: int
    admin: int
    log: list[dict[str, object]]

    def get(self, port: int, path: str, host: str = "app") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=_DEADLINE)
        try:
            conn.request("GET", path, headers={"host": host, "connection": "close"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def metrics(self) -> str:
        status, body = self.get(self.admin, "/metrics")
        assert status == 200
        return body.decode()

    def per_worker_requests(self) -> dict[str, int]:
        found = re.findall(
            r'^gossamer_proxy_worker_requests_total\{worker="(\d+)",pid="(\d+)"\} (\d+)$',
            self.metrics(),
            flags=re.M,
        )
        return {pid: int(count) for _, pid, count in found}


def _wait_until(predicate: object, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + _DEADLINE
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def backend() -> Iterator[Backend]:
    backend = _backend()
    yield backend
    backend.release.set()
    backend.server.shutdown()


SERVER = "api.emojivoto.serviceaccount.identity.gossamer.cluster.local"
CLIENT = "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"


@contextlib.contextmanager
def _running_proxy(backend: Backend, extra_env: dict[str, str]) -> Iterator[MultiCoreProxy]:
    env = {
        **os.environ,
        **extra_env,
        "LINKERD2_PROXY_CORES": "2",
        "LINKERD2_PROXY_LOG": "warn,linkerd=info",
        "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "127.0.0.1:0",
        "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS": "127.0.0.1:0",
        "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "127.0.0.1:0",
        "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD": "30s",
        "GOSSAMER_PROXY_INBOUND_FIXED_TARGET": f"127.0.0.1:{backend.port}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gossamer_proxy"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log: list[dict[str, object]] = []
    started = threading.Event()

    def read_log() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "unparsed", "line": line}
            log.append(event)
            if event.get("event") == "proxy_started":
                started.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        assert started.wait(_DEADLINE), f"the proxy did not start: {log}"
        first = next(e for e in log if e.get("event") == "proxy_started")
        inbound = int(str(first["inbound"]).rsplit(":", 1)[1])
        admin = int(str(first["admin"]).rsplit(":", 1)[1])
        running = MultiCoreProxy(proc, inbound, admin, log)
        _wait_until(lambda: running.get(admin, "/ready")[0] == 200, "/ready")
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=_DEADLINE)
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.join(timeout=10)


@pytest.fixture
def proxy(backend: Backend) -> Iterator[MultiCoreProxy]:
    with _running_proxy(backend, {}) as running:
        yield running


def test_two_processes_share_the_inbound_port_and_the_metrics(
    proxy: MultiCoreProxy, backend: Backend
) -> None:
    requests = 40  # one per connection: the kernel spreads connections, not requests
    for i in range(requests):
        assert proxy.get(proxy.inbound, f"/r{i}") == (200, b"ok\n")
    per_worker = proxy.per_worker_requests()
    assert len(per_worker) == 2
    assert str(proxy.proc.pid) in per_worker
    assert all(count > 0 for count in per_worker.values()), per_worker
    assert sum(per_worker.values()) == requests
    merged = proxy.metrics()
    inbound_requests = sum(
        int(value)
        for value in re.findall(r'^request_total\{direction="inbound"[^\n]*\} (\d+)$', merged, re.M)
    )
    assert inbound_requests == requests
    # One TYPE line per family: the workers' families are merged, not listed twice.
    assert merged.count("# TYPE request_total counter") == 1
    (start,) = re.findall(r"^process_start_time_seconds (\S+)$", merged, re.M)
    assert float(start) < time.time()  # the parent's, not a sum over processes


def test_sigterm_drains_in_flight_requests_in_every_process(
    proxy: MultiCoreProxy, backend: Backend
) -> None:
    backend.hold = True
    connections = 16
    results: list[tuple[int, bytes]] = []
    clients = [
        threading.Thread(target=lambda i=i: results.append(proxy.get(proxy.inbound, f"/s{i}")))
        for i in range(connections)
    ]
    for client in clients:
        client.start()
    backend.wait_received(connections)
    per_worker = proxy.per_worker_requests()
    assert all(count > 0 for count in per_worker.values()), per_worker  # both hold requests
    worker_pids = [int(pid) for pid in per_worker if int(pid) != proxy.proc.pid]
    assert len(worker_pids) == 1

    proxy.proc.send_signal(signal.SIGTERM)
    _wait_until(lambda: proxy.get(proxy.admin, "/ready")[0] == 503, "draining")
    backend.release.set()
    for client in clients:
        client.join(_DEADLINE)
    assert results == [(200, b"ok\n")] * connections
    assert proxy.proc.wait(timeout=_DEADLINE) == 0
    stopped = [e for e in proxy.log if e.get("event") == "proxy_stopped"]
    assert len(stopped) == 2
    assert all(e.get("drained") is True for e in stopped)
    for pid in worker_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.fixture
def mesh(trust: TrustMaterial, tmp_path: Path) -> dict[str, object]:
    cert_file, key_file = issue(trust, tmp_path, SERVER)
    client_cert = issue(trust, tmp_path, CLIENT)
    return {
        "env": {
            "LINKERD2_PROXY_IDENTITY_LOCAL_NAME": SERVER,
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": anchors_pem(trust),
            "GOSSAMER_PROXY_IDENTITY_CERT_FILE": str(cert_file),
            "GOSSAMER_PROXY_IDENTITY_KEY_FILE": str(key_file),
        },
        "client": client_cert,
    }


@pytest.fixture
def meshed_proxy(backend: Backend, mesh: dict[str, object]) -> Iterator[MultiCoreProxy]:
    env = mesh["env"]
    assert isinstance(env, dict)
    with _running_proxy(backend, env) as running:
        yield running


def _mtls_get(port: int, context: ssl.SSLContext, path: str) -> tuple[bytes, bytes]:
    """One request over mTLS to the inbound port: (the server's leaf DER, the response)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=_DEADLINE) as raw,
        context.wrap_socket(raw, server_hostname=SERVER) as tls,
    ):
        leaf = tls.getpeercert(binary_form=True)
        assert leaf is not None
        tls.sendall(f"GET {path} HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    return leaf, b"".join(chunks)


def test_every_process_serves_mtls_with_the_one_pod_identity(
    meshed_proxy: MultiCoreProxy, trust: TrustMaterial, mesh: dict[str, object]
) -> None:
    client = mesh["client"]
    assert isinstance(client, tuple)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=anchors_pem(trust))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(str(client[0]), str(client[1]))
    requests = 30
    leaves = set()
    for i in range(requests):
        leaf, response = _mtls_get(meshed_proxy.inbound, context, f"/m{i}")
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        assert response.endswith(b"ok\n")
        leaves.add(leaf)
    assert len(leaves) == 1  # one certificate (one key) for the whole pod
    per_worker = meshed_proxy.per_worker_requests()
    assert len(per_worker) == 2
    assert all(count > 0 for count in per_worker.values()), per_worker
    assert sum(per_worker.values()) == requests


def _worker_pid(proxy: MultiCoreProxy) -> int:
    pids = [int(pid) for pid in proxy.per_worker_requests() if int(pid) != proxy.proc.pid]
    assert len(pids) == 1
    return pids[0]


def test_a_worker_that_dies_is_restarted(proxy: MultiCoreProxy, backend: Backend) -> None:
    first = _worker_pid(proxy)
    os.kill(first, signal.SIGKILL)
    others = {first, proxy.proc.pid}
    _wait_until(
        lambda: bool({int(pid) for pid in proxy.per_worker_requests()} - others),
        "a new worker serving",
    )
    assert proxy.get(proxy.admin, "/ready")[0] == 200
    second = _worker_pid(proxy)
    assert second != first
    assert any(e.get("event") == "proxy_worker_restarting" for e in proxy.log)
    for i in range(20):
        assert proxy.get(proxy.inbound, f"/after{i}") == (200, b"ok\n")


def test_workers_leave_when_the_parent_is_killed(proxy: MultiCoreProxy) -> None:
    worker = _worker_pid(proxy)
    proxy.proc.kill()
    proxy.proc.wait(timeout=_DEADLINE)

    def gone() -> bool:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return True
        # Orphaned, it is reparented; a zombie left for init still answers kill(0).
        status = Path(f"/proc/{worker}/status").read_text()
        return "\nState:\tZ" in status

    _wait_until(gone, "the orphaned worker to exit")


TAP = "tap.gossamer-viz.serviceaccount.identity.gossamer.cluster.local"


@pytest.fixture
def tapped_proxy(backend: Backend, mesh: dict[str, object]) -> Iterator[MultiCoreProxy]:
    env = mesh["env"]
    assert isinstance(env, dict)
    tap_env = {
        "LINKERD2_PROXY_TAP_SVC_NAME": TAP,
        "LINKERD2_PROXY_CONTROL_LISTEN_ADDR": "127.0.0.1:0",
    }
    with _running_proxy(backend, {**env, **tap_env}) as running:
        yield running


def _tap_port(proxy: MultiCoreProxy) -> int:
    _wait_until(
        lambda: any(e.get("event") == "tap_listening" for e in proxy.log), "the tap listener"
    )
    event = next(e for e in proxy.log if e.get("event") == "tap_listening")
    return int(str(event["addr"]).rsplit(":", 1)[1])


async def _observe(
    port: int, context: ssl.SSLContext, limit: int, tapping: threading.Event
) -> list[tap_pb2.TapEvent]:
    """One ``Observe`` call read to its end (the proxy ends it once ``limit`` is used up)."""
    channel = Channel(
        "127.0.0.1", port, ssl=context, config=Configuration(ssl_target_name_override=SERVER)
    )
    events = []
    try:
        async with asyncio.timeout(_DEADLINE), TapStub(channel).Observe.open() as stream:
            await stream.send_message(tap_pb2.ObserveRequest(limit=limit), end=True)
            await stream.recv_initial_metadata()
            tapping.set()  # accepted: every process taps from here on
            while (event := await stream.recv_message()) is not None:
                events.append(event)
    finally:
        channel.close()
    return events


def _tap_while(
    proxy: MultiCoreProxy, tap_context: ssl.SSLContext, limit: int, send: Callable[[], None]
) -> list[tap_pb2.TapEvent]:
    """Tap ``proxy`` with ``limit``, run ``send`` once tapping, return the call's events."""
    port = _tap_port(proxy)
    tapping = threading.Event()
    found: list[list[tap_pb2.TapEvent]] = []
    failed: list[BaseException] = []

    def observe() -> None:
        try:
            found.append(asyncio.run(_observe(port, tap_context, limit, tapping)))
        except BaseException as exc:  # reported by the test's thread
            failed.append(exc)
            tapping.set()

    thread = threading.Thread(target=observe, daemon=True)
    thread.start()
    assert tapping.wait(_DEADLINE)
    assert not failed, failed
    send()
    thread.join(_DEADLINE)
    assert not thread.is_alive(), "the tap call did not end after its limit"
    assert not failed, failed
    return found[0]


def _kinds(events: list[tap_pb2.TapEvent], kind: str) -> list[tap_pb2.TapEvent]:
    return [e for e in events if e.http.WhichOneof("event") == kind]


def test_one_tap_sees_the_requests_of_every_process(
    tapped_proxy: MultiCoreProxy, trust: TrustMaterial, mesh: dict[str, object], tmp_path: Path
) -> None:
    client = mesh["client"]
    assert isinstance(client, tuple)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=anchors_pem(trust))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(str(client[0]), str(client[1]))
    tap_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=anchors_pem(trust))
    tap_context.minimum_version = ssl.TLSVersion.TLSv1_3
    tap_context.set_alpn_protocols(["h2"])
    tap_context.load_cert_chain(*map(str, issue(trust, tmp_path, TAP)))
    requests = 40  # one per connection: the kernel spreads them over both processes

    def send(count: int, prefix: str) -> None:
        for i in range(count):
            _, response = _mtls_get(tapped_proxy.inbound, context, f"/{prefix}{i}")
            assert response.startswith(b"HTTP/1.1 200"), response[:200]

    events = _tap_while(tapped_proxy, tap_context, requests, lambda: send(requests, "t"))
    per_worker = tapped_proxy.per_worker_requests()
    assert len(per_worker) == 2
    assert all(count > 0 for count in per_worker.values()), per_worker
    inits = _kinds(events, "request_init")
    assert sorted(e.http.request_init.path for e in inits) == sorted(
        f"/t{i}" for i in range(requests)
    )
    ids = {(e.http.request_init.id.base, e.http.request_init.id.stream) for e in inits}
    assert len(ids) == requests  # no two processes' requests share an id
    # Connections are numbered per process (base % processes): both processes' requests.
    assert {base % 2 for base, _ in ids} == {0, 1}
    ends = _kinds(events, "response_end")
    assert {(e.http.response_end.id.base, e.http.response_end.id.stream) for e in ends} == ids
    assert all(e.source_meta.labels["client_id"] == CLIENT for e in inits)

    # The limit holds across processes: 10 of 30 requests, then the call ends.
    events = _tap_while(tapped_proxy, tap_context, 10, lambda: send(30, "l"))
    inits = _kinds(events, "request_init")
    assert len(inits) == 10
    taken = {(e.http.request_init.id.base, e.http.request_init.id.stream) for e in inits}
    for event in events:  # nothing of a request taken past the limit
        http = event.http
        ident = getattr(http, http.WhichOneof("event")).id
        assert (ident.base, ident.stream) in taken
