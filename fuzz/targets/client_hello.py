"""Protocol detection on a connection's first bytes: the ClientHello/SNI detector and detect().

Drives :func:`gossamer_proxy.mesh.tls_detect.detect_client_hello` the way the inbound peeker
does (re-reading a growing prefix until the answer is definite), then :func:`classify` and
the plaintext :func:`gossamer_proxy.detect.detect`.

Contract checked: neither function raises; ``NeedMore(at_least)`` always asks for more
than was given (else the peeker spins); an answer given for a prefix is the answer for the
whole input (``None``/``NeedMore`` mean more bytes could change it, so a definite answer
must not change); a ClientHello's SNI is ASCII, lower-case, without a trailing dot.
"""

from __future__ import annotations

import contextlib
import ssl

from gossamer_proxy.detect import DETECT_BUFFER_LIMIT, H2_PREFACE, detect
from gossamer_proxy.inbound_tls import classify
from gossamer_proxy.mesh.tls_detect import ClientHello, NeedMore, detect_client_hello

from ..harness import Finding, Target

LOCAL_NAME = "web.default.serviceaccount.identity.gossamer.cluster.local"


def _hello_prefix_walk(data: bytes) -> None:
    size = 1
    while True:
        result = detect_client_hello(data[:size])
        if not isinstance(result, NeedMore):
            break
        if result.at_least <= min(size, len(data)):
            raise Finding(
                f"NeedMore({result.at_least}) after {size} bytes", key="NeedMore asks for no more"
            )
        if result.at_least > len(data):
            return  # the peeker would wait for bytes this input does not have
        size = result.at_least
    whole = detect_client_hello(data)
    if whole != result:
        raise Finding(
            f"prefix of {size} bytes gave {result!r}, all {len(data)} gave {whole!r}",
            key=f"hello prefix said {type(result).__name__}, the whole {type(whole).__name__}",
        )
    if isinstance(result, ClientHello):
        name = result.server_name
        if name is not None and (name != name.lower() or name.endswith(".") or not name.isascii()):
            raise Finding(f"SNI not normalised: {name!r}")
        mode = classify(result, LOCAL_NAME)
        if mode.terminate != (name == LOCAL_NAME):
            raise Finding(f"classify({name!r}) terminate={mode.terminate}")


def _detect_walk(data: bytes, step: int) -> None:
    final = detect(data, eof=True)
    if final is None:
        raise Finding("detect(eof=True) gave no answer")
    settled = None
    for end in range(0, len(data) + 1, step):
        answer = detect(data[:end])
        if settled is not None and answer != settled:
            raise Finding(
                f"detect changed its mind at {end} bytes: {settled} -> {answer}",
                key=f"detect changed its mind: {settled} -> {answer}",
            )
        if answer is not None:
            settled = answer
    whole = detect(data)
    if settled is not None and whole != settled:
        raise Finding(f"detect of a prefix said {settled}, of all {whole}")
    if whole is not None and final != whole:
        raise Finding(f"detect(eof=True) said {final}, without eof {whole}")


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0], data[1:]
    if mode & 1:
        body = H2_PREFACE[: mode >> 3] + body
    if mode & 2:
        _detect_walk(body[: DETECT_BUFFER_LIMIT + 64], 1 + (mode >> 2) % 61)
    else:
        _hello_prefix_walk(body)


def _client_hello(server_name: str | None, alpn: list[str]) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def seeds() -> list[bytes]:
    hellos = [
        _client_hello(LOCAL_NAME, ["transport.l5d.io/v1", "h2"]),
        _client_hello("example.com", ["http/1.1"]),
        _client_hello(None, []),
    ]
    fragmented = bytearray()
    first = hellos[0]
    body = first[5:]
    for i in range(0, len(body), 100):
        piece = body[i : i + 100]
        fragmented += bytes([0x16, 3, 1]) + len(piece).to_bytes(2, "big") + piece
    plain = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        b"POST /" + b"a" * 1100 + b" HTTP/1.1\r\n",
        b"SSH-2.0-OpenSSH\r\n",
    ]
    return (
        [b"\x00" + h for h in [*hellos, bytes(fragmented)]]
        + [b"\x02" + p for p in plain]
        + [b"\x06" + p for p in plain]
    )


TARGET = Target(
    name="client_hello",
    one_input=one_input,
    seeds=seeds,
    max_len=8192,
    dictionary=(
        b"\x16\x03\x01",
        b"\x16\x03\x03",
        b"\x00\x00",
        b"\x00\x10",
        b"HTTP/1.1\r\n",
        b"PRI * HTTP/2.0",
    ),
)
