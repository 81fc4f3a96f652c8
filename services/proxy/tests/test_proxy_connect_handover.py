"""The mTLS connect placeholder: nothing the peer sends before hand-over is lost or misordered."""

from __future__ import annotations

import asyncio
from typing import Any

from gossamer_proxy.connect import _Handshake


class FakeTransport:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.protocol: Any = None
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default  # a plain TCP transport: no ssl_object

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def set_protocol(self, protocol: Any) -> None:
        self.calls.append("set_protocol")
        self.protocol = protocol

    def close(self) -> None:
        self.closed = True


class Recorder(asyncio.Protocol):
    def __init__(self, eof_keeps_open: bool = False) -> None:
        self.events: list[object] = []
        self.eof_keeps_open = eof_keeps_open

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.events.append(data)

    def eof_received(self) -> bool:
        self.events.append("eof")
        return self.eof_keeps_open


def test_held_bytes_and_eof_are_replayed_after_connection_made() -> None:
    transport = FakeTransport()
    holder = _Handshake()
    holder.connection_made(transport)  # type: ignore[arg-type]
    holder.data_received(b"server ")
    holder.data_received(b"speaks first")
    assert holder.eof_received() is True  # plain TCP: the real protocol decides on half-close
    protocol = Recorder()

    assert holder.hand_over(transport, protocol) is protocol  # type: ignore[arg-type]

    assert protocol.events == ["made", b"server ", b"speaks first", "eof"]
    assert transport.calls == ["pause", "set_protocol", "resume"]
    assert transport.protocol is protocol
    assert transport.closed  # the protocol's eof_received said close
    assert not holder.lost


def test_eof_kept_open_when_the_protocol_asks() -> None:
    transport = FakeTransport()
    holder = _Handshake()
    holder.eof_received()
    holder.hand_over(transport, Recorder(eof_keeps_open=True))  # type: ignore[arg-type]
    assert not transport.closed


def test_a_connection_lost_before_hand_over_is_remembered() -> None:
    holder = _Handshake()
    holder.connection_lost(ConnectionResetError())
    assert holder.lost
