"""The lean keep-alive POST path: the sans-io response reader and the pool over loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from gossamer_kube.client import KubeClient
from gossamer_kube.config import KubeConfig
from gossamer_kube.errors import KubeApiError, KubeConnectionError, KubeProtocolError
from gossamer_kube.keepalive import (
    PostPool,
    ResponseError,
    ResponseReader,
    build_post,
    request_head,
)

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"a": true}'


def test_reader_assembles_a_response_fed_byte_by_byte() -> None:
    reader = ResponseReader()
    results = [reader.feed(OK[i : i + 1]) for i in range(len(OK))]
    assert all(r is None for r in results[:-1])
    response = results[-1]
    assert response is not None
    assert (response.status, response.body, response.keep_alive) == (200, b'{"a": true}', True)


def test_reader_decodes_chunked_bodies() -> None:
    reader = ResponseReader()
    response = reader.feed(
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'3\r\n{"a\r\n5\r\n": 1}\r\n0\r\n\r\n'
    )
    assert response is not None
    assert (response.status, response.body) == (201, b'{"a": 1}')


def test_reader_reports_connection_close() -> None:
    response = ResponseReader().feed(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    assert response is not None
    assert not response.keep_alive


def test_reader_never_completes_a_close_delimited_body() -> None:
    reader = ResponseReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\n\r\n{}") is None
    assert reader.feed_eof() is None


def test_reader_incomplete_at_eof_is_no_response() -> None:
    reader = ResponseReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}") is None
    assert reader.feed_eof() is None


@pytest.mark.parametrize(
    "data",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        OK + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",  # a second, unasked-for response
    ],
)
def test_reader_rejects_malformed_or_unexpected_responses(data: bytes) -> None:
    with pytest.raises(ResponseError):
        ResponseReader().feed(data)


def test_reader_bounds_the_body() -> None:
    reader = ResponseReader(max_body=10)
    with pytest.raises(ResponseError, match="body larger"):
        reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n" + b"x" * 11)


def test_reader_bounds_a_chunked_body_too() -> None:
    reader = ResponseReader(max_body=10)
    reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(10):
        reader.feed(b"1\r\nx\r\n")
    with pytest.raises(ResponseError, match="body larger"):
        reader.feed(b"1\r\nx\r\n")


def test_reader_bounds_the_head() -> None:
    reader = ResponseReader(max_head=100)
    reader.feed(b"HTTP/1.1 200 OK\r\n")
    for _ in range(2):
        reader.feed(b"X-Filler: " + b"y" * 20 + b"\r\n")
    with pytest.raises(ResponseError, match="head larger"):
        reader.feed(b"X-Filler: " + b"y" * 80 + b"\r\n")


def test_post_is_one_write_with_content_length() -> None:
    head = request_head("api:6443", [("Authorization", "Bearer t"), ("Content-Type", "a/b")])
    assert build_post("/x", head, b"{}") == (
        b"POST /x HTTP/1.1\r\nHost: api:6443\r\nAuthorization: Bearer t\r\n"
        b"Content-Type: a/b\r\nContent-Length: 2\r\n\r\n{}"
    )


@pytest.mark.parametrize(
    "headers", [[("Authorization", "Bearer t\r\nX-Evil: 1")], [("Bad Name", "v")], [("N\n", "v")]]
)
def test_header_injection_is_refused(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError, match="invalid request header"):
        request_head("api", headers)


@pytest.mark.parametrize("path", ["x", "/a b", "/a\r\nHost: evil"])
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="invalid request path"):
        build_post(path, "", b"")


# -- the pool over loopback ------------------------------------------------------------------------


class Server:
    """A loopback HTTP server whose per-request behaviour the test chooses."""

    def __init__(self, respond: Callable[[int], bytes | None]) -> None:
        self.respond = respond
        self.connections = 0
        self.requests = 0
        self.last_request = b""
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.last_request = head + await reader.readexactly(length)
                self.requests += 1
                answer = self.respond(self.requests)
                if answer is None:  # hang up without answering
                    break
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


Respond = Callable[[int], bytes | None]
StartServer = Callable[[Respond], Awaitable[Server]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    servers: list[asyncio.Server] = []

    async def start(respond: Respond) -> Server:
        server = Server(respond)
        server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        servers.append(server.server)
        return server

    yield start
    for s in servers:
        s.close()
        await s.wait_closed()


async def test_pool_reuses_one_connection(start_server: StartServer) -> None:
    server = await start_server(lambda n: OK)
    pool = PostPool(server.url, ssl_context=None)
    try:
        for _ in range(5):
            response = await pool.post("/r", b"{}", [("Content-Type", "application/json")])
            assert response.status == 200
            assert response.body == b'{"a": true}'
    finally:
        pool.close()
    assert (server.connections, server.requests) == (1, 5)


async def test_pool_retries_once_when_an_idle_connection_was_closed(
    start_server: StartServer,
) -> None:
    # The server answers the first request and hangs up on the second, like an idle timeout
    # racing a reuse: the request goes out again on a new connection and succeeds.
    server = await start_server(lambda n: None if n == 2 else OK)
    pool = PostPool(server.url, ssl_context=None)
    try:
        assert (await pool.post("/r", b"{}", [])).status == 200
        assert (await pool.post("/r", b"{}", [])).status == 200
    finally:
        pool.close()
    assert (server.connections, server.requests) == (2, 3)


async def test_pool_does_not_retry_a_response_cut_short(start_server: StartServer) -> None:
    server = await start_server(
        lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{"
    )
    pool = PostPool(server.url, ssl_context=None)
    try:
        with pytest.raises(ConnectionResetError):
            await pool.post("/r", b"{}", [])
    finally:
        pool.close()
    assert server.requests == 1


async def test_pool_drops_a_connection_the_server_marks_close(start_server: StartServer) -> None:
    server = await start_server(
        lambda n: b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
    )
    pool = PostPool(server.url, ssl_context=None)
    try:
        for _ in range(3):
            assert (await pool.post("/r", b"{}", [])).body == b"{}"
    finally:
        pool.close()
    assert server.connections == 3


def test_pool_refuses_https_without_a_context() -> None:
    with pytest.raises(ValueError, match="SSL context"):
        PostPool("https://api:6443", ssl_context=None)


# -- KubeClient.token_review on the pool ---------------------------------------------------------


def _json_response(status: int, body: bytes) -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


async def test_token_review_posts_the_review_with_the_client_credentials(
    start_server: StartServer,
) -> None:
    status = (
        b'{"status":{"authenticated":true,"user":{"username":"system:serviceaccount:ns:sa"},'
        b'"audiences":["identity.l5d.io"]}}'
    )
    server = await start_server(lambda n: _json_response(201, status))
    async with KubeClient(KubeConfig(server=server.url, token="sekret")) as kube:
        result = await kube.token_review("the-token", ["identity.l5d.io"])
        again = await kube.token_review("the-token", ["identity.l5d.io"])
    assert result == again
    assert result.authenticated
    assert result.username == "system:serviceaccount:ns:sa"
    head, body = server.last_request.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /apis/authentication.k8s.io/v1/tokenreviews HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer sekret\r\n" in head
    assert json.loads(body)["spec"] == {"token": "the-token", "audiences": ["identity.l5d.io"]}
    assert server.connections == 1


async def test_token_review_errors_keep_their_kinds(start_server: StartServer) -> None:
    answers = {
        1: _json_response(403, b'{"kind":"Status","code":403,"message":"forbidden"}'),
        2: _json_response(200, b"not json"),
        3: _json_response(200, b"[1]"),
        4: None,
    }
    server = await start_server(answers.get)
    async with KubeClient(KubeConfig(server=server.url)) as kube:
        with pytest.raises(KubeApiError) as denied:
            await kube.token_review("t")
        assert denied.value.status == 403
        with pytest.raises(KubeProtocolError, match="not JSON"):
            await kube.token_review("t")
        with pytest.raises(KubeProtocolError, match="not a JSON object"):
            await kube.token_review("t")
        with pytest.raises(KubeConnectionError):
            await kube.token_review("t")


async def test_subject_access_review_posts_the_review_and_returns_its_status(
    start_server: StartServer,
) -> None:
    server = await start_server(
        lambda n: _json_response(201, b'{"status":{"allowed":false,"reason":"no binding"}}')
    )
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": "alice", "resourceAttributes": {"verb": "watch"}},
    }
    async with KubeClient(KubeConfig(server=server.url, token="sekret")) as kube:
        status = await kube.subject_access_review(review)
        assert kube.authorization_headers() == {"Authorization": "Bearer sekret"}
    assert status == {"allowed": False, "reason": "no binding"}
    head, body = server.last_request.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /apis/authorization.k8s.io/v1/subjectaccessreviews HTTP/1.1\r\n")
    assert json.loads(body) == review
