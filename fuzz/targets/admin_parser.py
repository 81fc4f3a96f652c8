"""The admin server's request parser (:mod:`gossamer_common.http_request_parser`).

Fed the way :mod:`gossamer_common.admin` feeds it: chunk by chunk, taking every complete
request after each chunk, until it raises :class:`BadRequest`.

Contract checked: only :class:`BadRequest` (with a 4xx/5xx status) is raised; chunked
feeding gives the same requests and the same error as feeding everything at once; while it
waits for more bytes, the parser holds at most ``max_header_bytes + 2 * max_body_bytes +
1024`` bytes (a head, a body and its framing: the cap this harness documents, with small
limits so inputs can reach it).
"""

from __future__ import annotations

from gossamer_common.http_request_parser import BadRequest, Request, RequestParser

from ..harness import Finding, Target, Unbounded
from ..ops import Choices

MAX_HEADER = 512
MAX_BODY = 1024
CAP = MAX_HEADER + 2 * MAX_BODY + 1024
STATUSES = {400, 413, 431, 501, 505}


def _drain(parser: RequestParser, out: list[Request]) -> None:
    while (request := parser.next_request()) is not None:
        out.append(request)
        if not request.keep_alive:
            return


def _run(stream: bytes, sizes: list[int]) -> tuple[list[Request], int | None]:
    parser = RequestParser(max_header_bytes=MAX_HEADER, max_body_bytes=MAX_BODY)
    requests: list[Request] = []
    pos, turn = 0, 0
    try:
        while pos < len(stream):
            size = sizes[turn % len(sizes)]
            turn += 1
            parser.feed(stream[pos : pos + size])
            pos += size
            _drain(parser, requests)
            if requests and not requests[-1].keep_alive:
                break
            if parser.buffered > CAP:
                raise Unbounded(f"parser holds {parser.buffered} bytes waiting, cap {CAP}")
    except BadRequest as exc:
        if exc.status not in STATUSES or not exc.reason:
            raise Finding(f"BadRequest with status {exc.status} reason {exc.reason!r}") from exc
        return requests, exc.status
    return requests, None


def one_input(data: bytes) -> None:
    choices = Choices(data)
    sizes = [1 + choices.u8() for _ in range(choices.below(6))] or [len(data) + 1]
    stream = choices.rest()
    chunked = _run(stream, sizes)
    whole = _run(stream, [len(stream) + 1])
    if chunked != whole:
        raise Finding(
            f"chunked feeding gave {chunked!r}, one-shot {whole!r}",
            key=f"chunked feeding answered {chunked[1]}, all at once {whole[1]}",
        )


def seeds() -> list[bytes]:
    streams = [
        b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /metrics HTTP/1.0\r\n\r\nGET /live HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"POST /shutdown HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n0\r\nTrailer: t\r\n\r\n",
        b"\r\n\r\nGET /?q=1 HTTP/1.1\r\nhost:  b \r\nConnection: keep-alive\r\n\r\n",
    ]
    return [bytes([2, 7, 30]) + s for s in streams] + [b"\x00" + s for s in streams]


TARGET = Target(
    name="admin_parser",
    one_input=one_input,
    seeds=seeds,
    max_len=8192,
    dictionary=(
        b"Content-Length: ",
        b"Transfer-Encoding: chunked",
        b"\r\n\r\n",
        b"\r\nHost: a",
        b"HTTP/1.1\r\n",
        b"HTTP/1.0\r\n",
        b"Connection: close",
        b"0\r\n\r\n",
    ),
)
