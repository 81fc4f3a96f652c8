"""The tap service's HTTPS server (aiohttp): authenticate, authorize, resolve, fan out, stream.

Every call goes: path (:func:`.api.parse_path`) → caller (:class:`.auth.Authenticator`) →
``SubjectAccessReview`` → query → the resource's live meshed pods (read from Kubernetes with
the service's own account) → ``Observe`` on each of their proxies with the tap identity
(:class:`~gossamer_cli.viz.tap_client.TapSession`) → the merged events, within the call's
:class:`.bounds.Budget`, written as NDJSON. Writing awaits the reader, so a slow caller
slows the merge, which stops reading the proxies (they drop, never block, their traffic).
At most :data:`MAX_SESSIONS` calls run at once; more are answered 429, before any review
(reviews are themselves cached and bounded in flight, see :mod:`.review_cache`).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog
from aiohttp import web

from gossamer_cli.viz.resources import Resource
from gossamer_cli.viz.tap_client import TapSession
from gossamer_cli.viz.tap_query import TapTarget, observe_request
from gossamer_cli.viz.tap_service.api import (
    MAX_BODY,
    ApiError,
    TapQuery,
    encode_end,
    encode_event,
    parse_path,
    parse_query,
)
from gossamer_cli.viz.tap_service.auth import Authenticator
from gossamer_cli.viz.tap_service.authz import AuthError
from gossamer_cli.viz.tap_service.bounds import Budget
from gossamer_cli.viz.tap_service.credentials import CredentialSource
from gossamer_cli.viz.tap_service.discovery import discovery_documents

__all__ = ["MAX_SESSIONS", "TapService", "server_context"]

log = structlog.get_logger("gossamer.viz.tap")

MAX_SESSIONS: Final = 32
#: How long the last line and the end of the stream may take to write: a caller that has
#: stopped reading must not hold a session slot past its deadline.
END_WRITE_SECONDS: Final = 5.0
NDJSON: Final = "application/x-ndjson"
#: (resource, namespace) -> the proxies to tap.
Resolver = Callable[[Resource, str], Awaitable[list[TapTarget]]]


def server_context(
    cert_file: str, key_file: str, client_ca_pem: str | None, front_proxy_ca_pem: str | None = None
) -> ssl.SSLContext:
    """TLS 1.3; client certificates optional, and verified against the cluster's client CA
    or the front proxy's CA (the :class:`.auth.Authenticator` then tells which issued it)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # No session tickets: a resumed session would stand for the client certificate of the
    # first handshake, even once that certificate has expired or its CA is no longer trusted.
    context.num_tickets = 0
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["http/1.1"])
    cas = [pem for pem in (client_ca_pem, front_proxy_ca_pem) if pem]
    if cas:
        for pem in cas:
            context.load_verify_locations(cadata=pem)
        context.verify_mode = ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def _peer_certificate(request: web.Request) -> bytes | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return bytes(der) if der else None


async def _body(request: web.Request) -> bytes:
    """The whole body, at most :data:`MAX_BODY` bytes (the app's ``client_max_size``)."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise ApiError(413, f"the query is larger than {MAX_BODY} bytes") from exc


def _discovery(document: dict[str, Any]) -> Callable[[web.Request], Awaitable[web.Response]]:
    body = json.dumps(document).encode()

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return handle


async def end_stream(
    request: web.Request, response: web.StreamResponse, last: bytes, seconds: float
) -> None:
    """Write ``last`` and end the stream within ``seconds``; else drop the connection."""
    try:
        async with asyncio.timeout(seconds):
            await response.write(last)
            await response.write_eof()
    except TimeoutError:
        log.info("tap caller stopped reading; connection dropped")
        if request.transport is not None:
            request.transport.abort()
    except ConnectionError:
        pass


def _refusal(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain")


@dataclass
class TapService:
    authenticator: Authenticator
    resolve: Resolver
    credentials: CredentialSource
    port: int = 4190
    clock: Callable[[], float] | None = None
    end_write_seconds: float = END_WRITE_SECONDS
    _active: int = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/ready", self._ready)
        for path in ("/healthz", "/livez", "/readyz"):
            app.router.add_get(path, self._healthz)
        for path, document in discovery_documents().items():
            app.router.add_get(path, _discovery(document))
        app.router.add_post("/apis/{tail:.*}", self._tap)
        return app

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(text="ready\n")

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _tap(self, request: web.Request) -> web.StreamResponse:
        if self._active >= MAX_SESSIONS:  # before any review: a full service asks nothing
            return _refusal(429, f"too many taps at once (at most {MAX_SESSIONS})")
        try:
            target = parse_path(request.path)
            subject = await self.authenticator.authenticate(
                _peer_certificate(request), request.headers.get("Authorization"), request.headers
            )
            await self.authenticator.authorize(subject, target)
            query = parse_query(await _body(request), namespace=target.namespace)
        except (ApiError, AuthError) as exc:
            if isinstance(exc, AuthError):
                log.info("tap refused", status=exc.status, reason=str(exc))
            return _refusal(exc.status, str(exc))
        if self._active >= MAX_SESSIONS:
            return _refusal(429, f"too many taps at once (at most {MAX_SESSIONS})")
        self._active += 1
        try:
            try:
                targets = await self.resolve(target.resource, target.namespace)
            except Exception as exc:
                log.warning("cannot list the pods to tap", error=str(exc))
                return _refusal(503, f"cannot read Kubernetes: {exc}")
            if not targets:
                what = f"{target.plural}/{target.name}"
                return _refusal(
                    404, f"no meshed, running pods for {what} in namespace {target.namespace}"
                )
            log.info(
                "tap started",
                user=subject.user,
                target=f"{target.namespace}/{target.plural}/{target.name}",
                pods=len(targets),
            )
            return await self._stream(request, targets, query)
        finally:
            self._active -= 1

    async def _stream(
        self, request: web.Request, targets: list[TapTarget], query: TapQuery
    ) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        clock = self.clock or loop.time
        try:
            credentials = await self.credentials.current()
        except Exception as exc:
            log.warning("no tap certificate", error=str(exc))
            return _refusal(503, f"the tap service has no certificate: {exc}")
        session = TapSession(
            targets,
            observe_request(query.filters, headers=query.headers),
            credentials,
            port=self.port,
            max_rps=query.max_rps,
        )
        budget = Budget.starting(clock(), seconds=query.seconds, max_events=query.max_events)
        response = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-store"})
        await response.prepare(request)
        reason = "proxies-ended"
        events = session.events()
        try:
            async with asyncio.timeout(budget.remaining(clock())):
                async for source, event in events:
                    if not budget.admit(clock()):
                        reason = budget.exhausted(clock()) or reason
                        break
                    await response.write(encode_event(source, event))
                    if budget.sent >= budget.max_events:
                        reason = "max-events"
                        break
        except TimeoutError:
            reason = "time-limit"
        except ConnectionError:
            return response  # the caller went away: the proxies' streams are closed below
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        await end_stream(
            request, response, encode_end(reason, session.errors), self.end_write_seconds
        )
        return response
