"""``python -m bench.instructions``'s pure parts: dump parsing, the fixed-count client, the row.

No valgrind runs here: a callgrind dump is written by hand, and the client talks to a
loopback server thread that answers the way the bench's nginx backend does.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root holds bench/

from bench.instructions import Count, callgrind_total, parse_args, ratio_line, send_requests

OK = b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 19\r\n\r\nhello from backend\n"


def test_callgrind_total_reads_the_summary_line(tmp_path: Path) -> None:
    dump = tmp_path / "cg.123.1"
    dump.write_bytes(
        b"# callgrind format\nversion: 1\npid: 123\ncmd:  python -m gossamer_proxy\n"
        b"part: 1\n\nevents: Ir\nsummary: 332711418\n\nfn=(1) main\n0 5\ntotals: 333552328\n"
    )
    assert callgrind_total(dump) == 332711418


def test_callgrind_total_refuses_a_file_without_a_summary(tmp_path: Path) -> None:
    dump = tmp_path / "cg.1.1"
    dump.write_bytes(b"events: Ir\nfn=(1) main\n")
    with pytest.raises(ValueError, match="no 'summary:' line"):
        callgrind_total(dump)


@contextmanager
def backend(replies: list[bytes]) -> Iterator[tuple[int, list[bytes]]]:
    """A one-connection server: for each request head it reads, it sends the next reply
    (in two writes, so the client must reassemble). Yields its port and the heads read."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    heads: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            pending = b""
            for reply in replies:
                while b"\r\n\r\n" not in pending:
                    data = conn.recv(4096)
                    if not data:
                        return
                    pending += data
                head, pending = pending.split(b"\r\n\r\n", 1)
                heads.append(head)
                conn.sendall(reply[:10])
                conn.sendall(reply[10:])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port, heads
    finally:
        listener.close()
        thread.join(timeout=10)


def test_send_requests_sends_the_count_over_one_connection() -> None:
    with backend([OK] * 5) as (port, heads):
        send_requests(port, 5, timeout=10)
    assert heads == [b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d" % port] * 5


def test_send_requests_stops_on_an_error_status() -> None:
    failure = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"
    with (
        backend([OK, failure]) as (port, _),
        pytest.raises(RuntimeError, match="unexpected response"),
    ):
        send_requests(port, 3, timeout=10)


def test_send_requests_stops_when_the_connection_closes_early() -> None:
    with (
        backend([OK]) as (port, _),
        pytest.raises(RuntimeError, match="connection closed"),
    ):
        send_requests(port, 2, timeout=10)


def test_send_requests_refuses_a_response_without_length() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    with (
        backend([chunked]) as (port, _),
        pytest.raises(RuntimeError, match="without Content-Length"),
    ):
        send_requests(port, 1, timeout=10)


def test_ratio_line_compares_instructions_per_request() -> None:
    mine = Count("http1", "gossamer", 1000, 122_000_000)
    reference = Count("http1", "baseline", 2000, 236_000_000)
    assert mine.per_request == 122_000
    assert ratio_line(mine, reference) == "| http1 | 122,000 | 118,000 | 1.034x (+3.4%) |"


def test_arguments_need_a_baseline_and_a_positive_request_count() -> None:
    args = parse_args(["--baseline-rev", "e01e59f", "--only", "http1"])
    assert (args.baseline_rev, args.only, args.requests) == ("e01e59f", ["http1"], 2000)
    with pytest.raises(SystemExit):
        parse_args([])
    with pytest.raises(SystemExit):
        parse_args(["--baseline-rev", "e01e59f", "--requests", "0"])


@contextmanager
def grpc_backend(status: bytes = b"0") -> Iterator[tuple[int, list[int]]]:
    """A one-connection h2 server echoing each call with ``grpc-status: status``; yields
    its port and the size of each batch of calls it saw open at once."""
    import h2.config
    import h2.connection
    import h2.events

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    batches: list[int] = []

    def serve() -> None:
        conn, _ = listener.accept()
        h2conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        h2conn.initiate_connection()
        with conn:
            conn.sendall(h2conn.data_to_send())
            while data := conn.recv(65536):
                ended = []
                for event in h2conn.receive_data(data):
                    if isinstance(event, h2.events.StreamEnded):
                        ended.append(event.stream_id)
                if ended:
                    batches.append(len(ended))
                for sid in ended:
                    h2conn.send_headers(sid, [(b":status", b"200")])
                    h2conn.send_data(sid, b"\x00\x00\x00\x00\x00")
                    h2conn.send_headers(sid, [(b"grpc-status", status)], end_stream=True)
                conn.sendall(h2conn.data_to_send())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port, batches
    finally:
        listener.close()
        thread.join(timeout=10)


def test_grpc_client_sends_calls_in_batches_over_one_connection() -> None:
    from bench.grpc_client import UnaryClient

    with grpc_backend() as (port, batches):
        client = UnaryClient(port, streams=4, timeout=10)
        try:
            client.send(10)
            client.send(3)
        finally:
            client.close()
    assert sum(batches) == 13
    assert max(batches) <= 4


def test_grpc_client_stops_on_a_failed_call() -> None:
    from bench.grpc_client import UnaryClient

    with grpc_backend(status=b"14") as (port, _):
        client = UnaryClient(port, streams=2, timeout=10)
        try:
            with pytest.raises(RuntimeError, match="grpc-status"):
                client.send(2)
        finally:
            client.close()


def test_arguments_without_a_baseline_and_streams() -> None:
    args = parse_args(["--no-baseline", "--only", "grpc-mtls", "--streams", "4"])
    assert (args.baseline_rev, args.only, args.streams) == (None, ["grpc-mtls"], 4)
    with pytest.raises(SystemExit):
        parse_args(["--no-baseline", "--streams", "0"])
