"""A blocking gRPC unary client over one HTTP/2 connection, for counted (not timed) runs.

:mod:`bench.instructions` needs load that does not depend on timing: calls go out in
batches of ``streams`` (all HEADERS and DATA of a batch in one write), and the next batch
starts only once every answer of this one is in. The connection stays open across
:meth:`UnaryClient.send` calls, so a warm-up and a measured run share it.
"""

from __future__ import annotations

import socket

import h2.config
import h2.connection
import h2.events

from bench.backends import GRPC_MESSAGE

__all__ = ["UnaryClient"]

_HEADERS = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/bench.Echo/Unary"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
]


class UnaryClient:
    """``bench.Echo/Unary`` calls through ``127.0.0.1:port``; every one must answer OK."""

    def __init__(self, port: int, *, streams: int = 1, timeout: float = 120.0) -> None:
        self.streams = streams
        self._authority = [(b":authority", b"127.0.0.1:%d" % port)]
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self._conn = h2.connection.H2Connection(config)
        self._conn.initiate_connection()
        self._sock.sendall(self._conn.data_to_send())

    def send(self, count: int) -> None:
        """``count`` calls, ``streams`` at a time."""
        left = count
        while left:
            batch = min(left, self.streams)
            self._batch(batch)
            left -= batch

    def _batch(self, size: int) -> None:
        conn = self._conn
        headers = _HEADERS[:3] + self._authority + _HEADERS[3:]
        open_ids: set[int] = set()
        for _ in range(size):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, headers)
            conn.send_data(sid, GRPC_MESSAGE, end_stream=True)
            open_ids.add(sid)
        self._sock.sendall(conn.data_to_send())
        while open_ids:
            data = self._sock.recv(65536)
            if not data:
                raise RuntimeError("the proxy closed the connection mid-batch")
            for event in conn.receive_data(data):
                self._check(event, open_ids)
            out = conn.data_to_send()
            if out:
                self._sock.sendall(out)

    def _check(self, event: h2.events.Event, open_ids: set[int]) -> None:
        if isinstance(event, h2.events.DataReceived):
            conn = self._conn
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            status = dict(event.headers).get(b"grpc-status")
            if status != b"0":
                raise RuntimeError(f"call ended with grpc-status {status!r}: {event.headers}")
        elif isinstance(event, h2.events.StreamEnded):
            open_ids.discard(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            raise RuntimeError(f"stream {event.stream_id} reset ({event.error_code})")
        elif isinstance(event, h2.events.ConnectionTerminated):
            raise RuntimeError(f"GOAWAY from the proxy: {event.error_code}")

    def close(self) -> None:
        try:
            self._conn.close_connection()
            self._sock.sendall(self._conn.data_to_send())
        except OSError:
            pass
        self._sock.close()
