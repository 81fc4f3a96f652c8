"""The servers every target forwards to: nginx (HTTP/1.1), grpcio (gRPC), iperf3 (bulk TCP)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from bench.procs import ProcGroup, free_port, wait_for_port

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/nginx-body;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{ return 200 "hello from backend\\n"; }}
  }}
}}
"""

# nginx as a reverse proxy (issue 21's "≥ 0.75x nginx" reference): one worker, a keep-alive
# pool to the backend, no access log, as a stock reverse-proxy config. No master process:
# the one process measured (CPU, RSS) is the one doing the work.
NGINX_PROXY_CONF = """
worker_processes 1;
master_process off;
daemon off;
pid {workdir}/nginx-proxy.pid;
error_log {workdir}/nginx-proxy-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/nginx-proxy-body;
  proxy_temp_path {workdir}/nginx-proxy-temp;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  upstream backend {{
    server 127.0.0.1:{upstream};
    keepalive 128;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""

# The gRPC backend echoes each message and counts the calls it answered OK; ``Answered``
# (called on the backend directly, never through a proxy) returns that count as decimal
# ASCII. A call that the load generator counts as done but that the backend never answered
# was answered by something else: a proxy's error (:func:`grpc_answered`).
GRPC_SERVER = textwrap.dedent(
    """
    import sys
    import threading
    from concurrent import futures
    import grpc

    answered = 0
    lock = threading.Lock()

    def echo(request, context):
        global answered
        with lock:
            answered += 1
        return request

    def count(request, context):
        with lock:
            return str(answered).encode()

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(echo),
            "Answered": grpc.unary_unary_rpc_method_handler(count),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    server.start()
    server.wait_for_termination()
    """
)

# One gRPC message: uncompressed flag, big-endian length, then 16 opaque payload bytes.
GRPC_MESSAGE = b"\x00" + (16).to_bytes(4, "big") + b"0123456789abcdef"


def start_nginx(group: ProcGroup) -> int:
    port = free_port()
    conf = group.workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workdir=group.workdir, port=port))
    group.start("nginx", ["nginx", "-c", str(conf), "-p", str(group.workdir)], measured=False)
    wait_for_port(port)
    return port


def start_nginx_proxy(group: ProcGroup, upstream_port: int) -> int:
    """nginx as a proxy in front of ``upstream_port``; measured, since it is the target."""
    port = free_port()
    conf = group.workdir / "nginx-proxy.conf"
    conf.write_text(
        NGINX_PROXY_CONF.format(workdir=group.workdir, port=port, upstream=upstream_port)
    )
    group.start("nginx-proxy", ["nginx", "-c", str(conf), "-p", str(group.workdir)])
    wait_for_port(port)
    return port


def start_grpc_server(group: ProcGroup) -> int:
    port = free_port()
    script = group.workdir / "grpc_server.py"
    script.write_text(GRPC_SERVER)
    group.start("grpc-server", [sys.executable, str(script), str(port)], measured=False)
    wait_for_port(port)
    return port


def parse_answered(reply: bytes) -> int:
    """The backend's ``Answered`` reply: a decimal count, or a clear error."""
    text = reply.decode("ascii", errors="replace")
    if not text.isdigit() or len(text) > 20:
        raise ValueError(f"the gRPC backend's answered count is not a count: {text[:40]!r}")
    return int(text)


def grpc_answered(port: int, timeout: float = 10.0) -> int:
    """How many Echo calls the gRPC backend on ``port`` answered OK since it started."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            "/bench.Echo/Answered",
            request_serializer=bytes,
            response_deserializer=bytes,
        )
        return parse_answered(call(b"", timeout=timeout))


def grpc_body(workdir: Path) -> Path:
    path = workdir / "grpc-body.bin"
    path.write_bytes(GRPC_MESSAGE)
    return path


def start_iperf3(group: ProcGroup) -> int:
    port = free_port()
    group.start("iperf3-server", ["iperf3", "-s", "-p", str(port)], measured=False)
    wait_for_port(port)
    return port
