"""The proxy as a real sidecar: network namespaces, proxy-init iptables, uid 2102.

Topology, built fresh for this module (nothing outside these namespaces is touched):

    pod  eth0 10.78.0.1/24  <-- veth -->  peer  eth0 10.78.0.2/24

In the pod, proxy-init redirects outbound TCP to 4140 and inbound TCP to 4143, and the proxy
runs as uid 2102 from Debian's python3.11 (exactly as in production). Clients run as an app
user (uid 5000), so their traffic is intercepted. The peer runs the servers: an aiohttp app
(HTTP/1.1, WebSocket), grpcio, nginx (h2c for h2load), a TCP echo and a server-speaks-first
banner on 3306 (an opaque port by default).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gossamer_common.netns import NetNamespace, add_veth, network_namespace

pytestmark = [pytest.mark.netns, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python")  # Debian's python3.11: usable by any uid
APP_UID = 5000
PROXY_UID = 2102
POD_IP = "10.78.0.1"
PEER_IP = "10.78.0.2"

SERVERS = r"""
import asyncio, sys, grpc
from aiohttp import web

async def echo(request):
    size = 0
    async for piece in request.content.iter_any():
        size += len(piece)
    client_id = request.headers.get("l5d-client-id", "-")
    return web.Response(text=f"{request.method} {request.path} {size} {client_id}")

async def stream(request):
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(5):
        await resp.write(b"part%d;" % i)
    await resp.write_eof()
    return resp

async def ws(request):
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        await sock.send_str("echo:" + msg.data)
    return sock

async def unary(request, context):
    if request == b"fail":
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "refused on purpose")
    context.set_trailing_metadata((("x-trailer", "t1"),))
    return b"echo:" + request

async def bidi(requests, context):
    async for message in requests:
        yield b"re:" + message

async def tcp_echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()

async def banner(reader, writer):
    writer.write(b"220 banner\r\n")
    await writer.drain()
    line = await reader.readline()
    writer.write(b"250 " + line)
    await writer.drain()
    writer.close()

async def main(host):
    app = web.Application(client_max_size=1 << 31)
    app.router.add_get("/stream", stream)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, 8080).start()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi)})])
    server.add_insecure_port(f"{host}:50051")
    await server.start()
    await asyncio.start_server(tcp_echo, host, 7000)
    await asyncio.start_server(banner, host, 3306)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1]))
"""

#: A service the pod keeps to itself: bound to 127.0.0.1 only.
LOOPBACK_ONLY_PORT = 9099
LOOPBACK_ONLY_SERVER = rf"""
from http.server import BaseHTTPRequestHandler, HTTPServer

class Secret(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"localhost-only secret"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

server = HTTPServer(("127.0.0.1", {LOOPBACK_ONLY_PORT}), Secret)
print("ready", flush=True)
server.serve_forever()
"""

GRPC_CLIENT = r"""
import asyncio, sys, grpc
async def main(target):
    async with grpc.aio.insecure_channel(target) as channel:
        unary = channel.unary_unary("/test.Echo/Unary")
        call = unary(b"hello")
        assert await call == b"echo:hello"
        assert ("x-trailer", "t1") in tuple(await call.trailing_metadata())
        try:
            await unary(b"fail")
            raise SystemExit("expected FAILED_PRECONDITION")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() is grpc.StatusCode.FAILED_PRECONDITION, exc
            assert exc.details() == "refused on purpose"
        bidi = channel.stream_stream("/test.Echo/Bidi")()
        for i in range(100):
            await bidi.write(b"m%d" % i)
            assert await bidi.read() == b"re:m%d" % i
        await bidi.done_writing()
        assert await bidi.code() is grpc.StatusCode.OK
    print("grpc ok", flush=True)
asyncio.run(main(sys.argv[1]))
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{ listen {ip}:8443 http2; location / {{ return 200 "h2 hello\\n"; }} }}
}}
"""


def _wait_ready(proc: subprocess.Popen[str], what: str, timeout: float = 30) -> None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready or proc.stdout.readline().strip() != "ready":
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"{what} did not start: {err}")


def _as_user(uid: int, argv: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]


@dataclass
class Sidecar:
    pod: NetNamespace
    peer: NetNamespace
    proxy: subprocess.Popen[str]
    workdir: Path

    def app(self, argv: list[str], *, timeout: float = 120, stdin: bytes | None = None) -> str:
        """Run a client command in the pod as the app user (intercepted by iptables)."""
        done = subprocess.run(
            self.pod.exec_argv(_as_user(APP_UID, argv)),
            capture_output=True,
            timeout=timeout,
            input=stdin,
            check=False,
        )
        assert done.returncode == 0, (argv, done.stdout[-2000:], done.stderr[-2000:])
        return done.stdout.decode("utf-8", "replace")

    def metrics(self) -> str:
        return self.pod.call(_fetch, "http://127.0.0.1:4191/metrics")

    def proxy_rss_peak_kb(self) -> int:
        status = Path(f"/proc/{self.proxy.pid}/status").read_text()
        # setpriv execs the proxy in place, so the pid is the proxy's own.
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1])


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        body: bytes = resp.read()
        return body.decode()


def _ready(url: str) -> bool:
    try:
        return _fetch(url) == "ready\n"
    except OSError:
        return False


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    workdir = tmp_path_factory.mktemp("proxy-netns")
    os.chmod(workdir, 0o777)
    procs: list[subprocess.Popen[str]] = []
    with network_namespace("gsm-ppod-") as pod, network_namespace("gsm-ppeer-") as peer:
        add_veth(pod, peer, a_addresses=[f"{POD_IP}/24"], b_addresses=[f"{PEER_IP}/24"])
        try:
            servers = peer.popen(
                [PYTHON, "-c", SERVERS, PEER_IP], stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            procs.append(servers)
            _wait_ready(servers, "peer servers")
            # The pod's own app, for inbound traffic.
            app = pod.popen(
                _as_user(APP_UID, [PYTHON, "-c", SERVERS, "0.0.0.0"]),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            procs.append(app)
            _wait_ready(app, "pod app")
            secret = pod.popen(
                _as_user(APP_UID, [PYTHON, "-c", LOOPBACK_ONLY_SERVER]),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            procs.append(secret)
            _wait_ready(secret, "pod's loopback-only service")
            init = subprocess.run(
                [
                    PYTHON, "-m", "gossamer_proxy_init", "--netns", pod.path,
                    "--incoming-proxy-port", "4143", "--outgoing-proxy-port", "4140",
                    "--proxy-uid", str(PROXY_UID), "--inbound-ports-to-ignore", "4190,4191",
                    "--ipv6=false",
                ],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert init.returncode == 0, init.stderr
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "0.0.0.0:4143",
                "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS": "127.0.0.1:4140",
                "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "127.0.0.1:4191",
                "LINKERD2_PROXY_INBOUND_IPS": POD_IP,
                "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD": "10s",
                "LINKERD2_PROXY_LOG": "warn",
            }
            proxy = subprocess.Popen(
                pod.exec_argv(_as_user(PROXY_UID, [PYTHON, "-m", "gossamer_proxy"])),
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd="/",
            )
            procs.append(proxy)
            deadline = time.monotonic() + 30
            while not pod.call(_ready, "http://127.0.0.1:4191/ready"):
                assert proxy.poll() is None, proxy.communicate(timeout=5)
                assert time.monotonic() < deadline, "proxy never became ready"
                time.sleep(0.2)
            yield Sidecar(pod, peer, proxy, workdir)
        finally:
            for proc in reversed(procs):
                _stop(proc)


def _listening(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def h2c_server(sidecar: Sidecar, require_program: Callable[[str], str]) -> Iterator[str]:
    """nginx serving h2c on the peer's 8443 (for h2load); its URL once it accepts connections.

    A missing nginx skips (fails under GOSSAMER_REQUIRE_E2E=1) instead of leaving the proxy to
    answer every request with 502, and an nginx that dies is reported with its error log.
    """
    nginx = require_program("nginx")
    conf = sidecar.workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=sidecar.workdir, ip=PEER_IP))
    error_log = sidecar.workdir / "nginx-error.log"
    proc = sidecar.peer.popen(
        [nginx, "-c", str(conf), "-e", str(error_log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not sidecar.peer.call(_listening, (PEER_IP, 8443)):
            if proc.poll() is not None:
                log = error_log.read_text() if error_log.exists() else ""
                pytest.fail(f"nginx exited {proc.returncode}: {proc.communicate()[1]} {log}")
            assert time.monotonic() < deadline, "nginx never listened on 8443"
            time.sleep(0.1)
        yield f"http://{PEER_IP}:8443/"
    finally:
        _stop(proc)


def _sum(text: str, name: str, *needles: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(n in line for n in needles)
    )


def test_proxy_runs_as_uid_2102(sidecar: Sidecar) -> None:
    status = Path(f"/proc/{sidecar.proxy.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1] == str(PROXY_UID)


def test_curl_keepalive_and_streaming(sidecar: Sidecar) -> None:
    url = f"http://{PEER_IP}:8080"
    out = sidecar.app(["curl", "-sS", f"{url}/a", f"{url}/b", f"{url}/stream"])
    assert out == "GET /a 0 -GET /b 0 -part0;part1;part2;part3;part4;"
    text = sidecar.metrics()
    assert _sum(text, "request_total", 'direction="outbound"', f'target_addr="{PEER_IP}:8080"') >= 3


def test_chunked_100mb_upload_streams_with_flat_memory(sidecar: Sidecar) -> None:
    before = sidecar.proxy_rss_peak_kb()
    out = sidecar.app(
        [
            "sh", "-c",
            f"head -c 104857600 /dev/zero | curl -sS -T - -H 'Transfer-Encoding: chunked' "
            f"http://{PEER_IP}:8080/upload",
        ],
        timeout=300,
    )  # fmt: skip
    assert out == "PUT /upload 104857600 -"
    growth_mb = (sidecar.proxy_rss_peak_kb() - before) / 1024
    assert growth_mb < 40, f"proxy peak RSS grew {growth_mb:.1f} MB for a 100 MB upload"


def test_httpx_and_websocket(sidecar: Sidecar) -> None:
    script = textwrap.dedent(
        f"""
        import httpx
        from websockets.sync.client import connect
        with httpx.Client(base_url="http://{PEER_IP}:8080") as c:
            for i in range(10):
                assert c.get(f"/k{{i}}").text == f"GET /k{{i}} 0 -"
            assert c.post("/p", content=b"x" * 300000).text == "POST /p 300000 -"
        with connect("ws://{PEER_IP}:8080/ws") as ws:
            for i in range(20):
                ws.send(f"m{{i}}")
                assert ws.recv() == f"echo:m{{i}}"
        print("ok")
        """
    )
    assert sidecar.app([PYTHON, "-c", script]).strip() == "ok"


def test_grpc_unary_bidi_trailers_and_errors(sidecar: Sidecar) -> None:
    out = sidecar.app([PYTHON, "-c", GRPC_CLIENT, f"{PEER_IP}:50051"])
    assert "grpc ok" in out
    text = sidecar.metrics()
    assert _sum(text, "response_total", 'grpc_status="9"', 'classification="failure"') >= 1
    assert _sum(text, "response_total", 'grpc_status="0"', 'classification="success"') >= 2


def test_h2load(sidecar: Sidecar, h2c_server: str, require_program: Callable[[str], str]) -> None:
    h2load = require_program("h2load")
    out = sidecar.app([h2load, "-n", "2000", "-c", "4", "-m", "10", h2c_server])
    assert "requests: 2000 total, 2000 started, 2000 done, 2000 succeeded" in out, out
    assert "status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx" in out, out


def test_raw_tcp_echo_and_server_first_opaque_port(sidecar: Sidecar) -> None:
    script = textwrap.dedent(
        f"""
        import socket
        s = socket.create_connection(("{PEER_IP}", 7000), timeout=10)
        payload = bytes(range(256)) * 4000
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        assert got == payload, len(got)
        # 3306 is opaque by default: the banner must not wait for the 10s detect timeout.
        s = socket.create_connection(("{PEER_IP}", 3306), timeout=5)
        assert s.recv(100) == b"220 banner\\r\\n"
        s.sendall(b"HELO\\r\\n")
        assert s.recv(100) == b"250 HELO\\r\\n"
        print("ok")
        """
    )
    assert sidecar.app([PYTHON, "-c", script]).strip() == "ok"


def test_inbound_forwards_to_the_app_and_strips_client_id(sidecar: Sidecar) -> None:
    done = subprocess.run(
        sidecar.peer.exec_argv(
            ["curl", "-sS", "-H", "l5d-client-id: spoofed", f"http://{POD_IP}:8080/in"]
        ),
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "GET /in 0 -"
    text = sidecar.metrics()
    assert _sum(text, "request_total", 'direction="inbound"', 'srv_port="8080"') >= 1
    assert _sum(text, "tcp_open_total", 'direction="inbound"', 'peer="src"') >= 1


def test_inbound_never_reaches_a_loopback_only_service(sidecar: Sidecar) -> None:
    """The proxy forwards to the pod IP, so a service bound to 127.0.0.1 stays private."""
    assert (
        sidecar.app(["curl", "-sS", f"http://127.0.0.1:{LOOPBACK_ONLY_PORT}/"])
        == "localhost-only secret"
    )  # it is there, for the pod itself
    done = subprocess.run(
        sidecar.peer.exec_argv(
            [
                "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                f"http://{POD_IP}:{LOOPBACK_ONLY_PORT}/",
            ]
        ),
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.stdout == "502", (done.stdout, done.stderr)
    text = sidecar.metrics()
    assert (
        _sum(
            text,
            "response_total",
            'direction="inbound"',
            f'target_addr="{POD_IP}:{LOOPBACK_ONLY_PORT}"',
            'status_code="502"',
        )
        >= 1
    )


def _app_bytes_read(sidecar: Sidecar) -> float:
    """Bytes the proxy has read from app connections it accepted on its outbound side."""
    return _sum(sidecar.metrics(), "tcp_read_bytes_total", 'direction="outbound"', 'peer="src"')


def _curl_in_pod(sidecar: Sidecar, *args: str) -> str:
    done = subprocess.run(
        sidecar.pod.exec_argv(["curl", "-sS", *args]),
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_admin_log_level_and_env_json_on_the_running_proxy(sidecar: Sidecar) -> None:
    admin = "http://127.0.0.1:4191"
    assert _curl_in_pod(sidecar, f"{admin}/proxy-log-level") == "warn"
    put = ["-X", "PUT", "-o", "/dev/null", "-w", "%{http_code}"]
    code = _curl_in_pod(sidecar, *put, "--data", "warn,linkerd=debug", f"{admin}/proxy-log-level")
    assert code == "204"
    assert _curl_in_pod(sidecar, f"{admin}/proxy-log-level") == "warn,linkerd=debug"
    bad = _curl_in_pod(sidecar, *put, "--data", "linkerd=loud", f"{admin}/proxy-log-level")
    assert bad == "400"
    assert _curl_in_pod(sidecar, *put, "--data", "warn", f"{admin}/proxy-log-level") == "204"
    env = json.loads(_curl_in_pod(sidecar, f"{admin}/env.json"))
    assert env["LINKERD2_PROXY_INBOUND_IPS"] == POD_IP
    assert "PATH" not in env


def test_zz_sigterm_drains_and_exits(sidecar: Sidecar) -> None:
    """Runs last in this module: stops the shared proxy.

    SIGTERM is sent once the proxy has read a megabyte of the upload (so it is in flight,
    whatever the machine's speed) and long before its 20 MB at 10 MB/s can have finished.
    """
    before = _app_bytes_read(sidecar)
    slow = subprocess.Popen(
        sidecar.pod.exec_argv(
            _as_user(
                APP_UID,
                [
                    "sh", "-c",
                    f"head -c 20000000 /dev/zero | curl -sS --limit-rate 10M -T - "
                    f"http://{PEER_IP}:8080/slow",
                ],
            )
        ),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while _app_bytes_read(sidecar) - before < 1_000_000:
        assert slow.poll() is None, slow.communicate(timeout=10)
        assert time.monotonic() < deadline, "the upload never reached the proxy"
        time.sleep(0.05)
    assert slow.poll() is None, "the upload finished before SIGTERM"
    sidecar.proxy.send_signal(signal.SIGTERM)
    out, err = slow.communicate(timeout=60)
    assert slow.returncode == 0, err
    assert out == "PUT /slow 20000000 -"  # the in-flight upload finished
    assert sidecar.proxy.wait(timeout=30) == 0
