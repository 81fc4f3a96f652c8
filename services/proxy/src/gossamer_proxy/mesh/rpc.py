"""The proxy's gRPC calls to the control plane, on grpclib, with one error type.

The proxy is only ever a gRPC *client* (identity ``Certify``; the ``Destination``, inbound
and outbound policy watches), so it uses grpclib (pure asyncio over the ``h2`` it already
loads) instead of grpcio, whose C core costs 15-23 MB of resident memory per sidecar.

grpclib reports a failed call in several shapes: :class:`grpclib.exceptions.GRPCError` for a
status from the server, :class:`~grpclib.exceptions.StreamTerminatedError` for RST_STREAM or
a lost connection, :class:`OSError` (including :class:`ssl.SSLError`) when the connection
cannot be made, and ``h2`` protocol errors for a peer that does not speak HTTP/2. Callers
here care only about a status code and a reason, the way grpcio presented them, so every
one of these becomes an :class:`RpcError` with a :class:`grpclib.const.Status`:
transport failures are ``UNAVAILABLE`` (retry later), protocol violations ``INTERNAL``.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from types import TracebackType
from typing import Generic, TypeVar

import h2.exceptions
from grpclib.client import Stream, UnaryStreamMethod, UnaryUnaryMethod
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

__all__ = ["RpcError", "ServerStream", "Status", "translate_errors", "unary_call"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class RpcError(Exception):
    """A control-plane call failed with ``status`` (from the server or the transport)."""

    def __init__(self, status: Status, details: str) -> None:
        super().__init__(f"{status.name}: {details}")
        self.status = status
        self.details = details


def _as_rpc_error(exc: BaseException) -> RpcError | None:
    """The :class:`RpcError` that stands for ``exc``, or ``None`` if it is not a call failure."""
    if isinstance(exc, RpcError):
        return exc
    if isinstance(exc, GRPCError):
        return RpcError(exc.status, exc.message or "")
    if isinstance(exc, StreamTerminatedError):
        return RpcError(Status.UNAVAILABLE, f"stream terminated: {exc}")
    if isinstance(exc, ssl.SSLError):
        # Before OSError: a failed handshake (wrong server identity, untrusted chain).
        return RpcError(Status.UNAVAILABLE, f"TLS handshake failed: {exc}")
    if isinstance(exc, OSError):
        return RpcError(Status.UNAVAILABLE, f"connection failed: {exc}")
    if isinstance(exc, ProtocolError | h2.exceptions.ProtocolError):
        return RpcError(Status.INTERNAL, f"HTTP/2 protocol error: {exc!r}")
    return None


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise any call failure inside the block as :class:`RpcError` (cause kept)."""
    try:
        yield
    except Exception as exc:
        error = _as_rpc_error(exc)
        if error is None or error is exc:
            raise
        raise error from exc


async def unary_call(method: UnaryUnaryMethod[Req, Resp], request: Req, *, deadline: float) -> Resp:
    """One unary call with a deadline (sent as ``grpc-timeout``); failures are RpcError."""
    with translate_errors():
        try:
            async with method.open(timeout=deadline) as stream:
                await stream.send_message(request, end=True)
                response = await stream.recv_message()
        except TimeoutError:
            raise RpcError(Status.DEADLINE_EXCEEDED, f"no answer within {deadline}s") from None
    if response is None:  # an OK status without a message breaks the unary contract
        raise RpcError(Status.INTERNAL, "the server ended the call without a response message")
    return response


class ServerStream(Generic[Req, Resp]):
    """One server-streaming call: ``async with`` opens it and sends ``request``.

    :meth:`next` returns each message, then ``None`` once the server has ended the stream
    with ``OK``; any other end raises :class:`RpcError`. Leaving the block before the end
    (timeout, lifetime, eviction, cancellation) resets the HTTP/2 stream with RST_STREAM so
    the server stops the watch at once, as grpcio's ``call.cancel()`` did.
    """

    def __init__(self, method: UnaryStreamMethod[Req, Resp], request: Req) -> None:
        self._method = method
        self._request = request
        self._stream: Stream[Req, Resp] | None = None
        self._done = False

    async def __aenter__(self) -> ServerStream[Req, Resp]:
        stream = self._method.open()
        await stream.__aenter__()
        self._stream = stream
        try:
            with translate_errors():
                await stream.send_message(self._request, end=True)  # connects if need be
        except BaseException as exc:  # failed or cancelled (a timeout) while opening
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def next(self) -> Resp | None:
        """The next message, or ``None`` after a clean (``OK``) end of stream."""
        assert self._stream is not None, "use ServerStream in 'async with'"
        with translate_errors():
            message = await self._stream.recv_message()
            if message is None:
                await self._stream.recv_trailing_metadata()  # raises on a non-OK status
                self._done = True
            return message

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            if not self._done:
                with contextlib.suppress(Exception):
                    await stream.cancel()
        finally:
            # With the stream cancelled or finished, grpclib's exit only releases it.
            with contextlib.suppress(Exception):
                await stream.__aexit__(exc_type, exc, tb)
