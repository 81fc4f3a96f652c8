"""The HTTPS adapter: aiohttp in front of the sans-io :mod:`gossamer_injector.review`.

One route family (``POST /`` and ``POST /inject``) takes AdmissionReviews. Anything that is
not a well-formed review gets a 400 with a Status body, never a stack trace; the apiserver
then applies the webhook's failurePolicy (Ignore by default), so pods are still admitted.
"""

from __future__ import annotations

import json
import ssl
import time
from typing import Protocol

import structlog
from aiohttp import web
from gossamer_inject import MeshValues

from gossamer_injector.metrics import InjectorMetrics
from gossamer_injector.review import (
    BadReview,
    Context,
    Lookups,
    bad_review_body,
    lookups_for,
    parse_review,
    respond,
)

_log = structlog.get_logger("gossamer.injector")

MAX_BODY_BYTES = 8 * 1024 * 1024


class Resolver(Protocol):
    async def resolve(self, lookups: Lookups) -> Context: ...


class Injector:
    """Answers review bodies; the aiohttp handler is a thin shell around :meth:`handle`."""

    def __init__(
        self,
        *,
        mesh: MeshValues,
        created_by: str,
        resolver: Resolver,
        metrics: InjectorMetrics | None = None,
    ) -> None:
        self.mesh = mesh
        self.created_by = created_by
        self.resolver = resolver
        self.metrics = metrics

    async def handle(self, body: bytes) -> tuple[int, dict[str, object]]:
        started = time.perf_counter()
        try:
            request = parse_review(body)
        except BadReview as exc:
            _log.warning("bad_review", error=str(exc), size=len(body))
            if self.metrics is not None:
                self.metrics.bad_reviews.inc()
            return exc.status_hint, bad_review_body(exc)
        context = await self.resolver.resolve(lookups_for(request))
        outcome = respond(request, context, mesh=self.mesh, created_by=self.created_by)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if self.metrics is not None:
            self.metrics.reviews.labels(request.kind, outcome.result).inc()
            self.metrics.latency.observe(elapsed_ms)
        _log.info(
            "review",
            uid=request.uid,
            kind=request.kind,
            namespace=request.namespace,
            result=outcome.result,
            reason=outcome.reason,
            ms=round(elapsed_ms, 2),
        )
        return 200, outcome.body

    async def _aiohttp_handler(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            status, doc = 413, bad_review_body(BadReview("request body too large"))
            doc["code"] = 413
        else:
            status, doc = await self.handle(body)
        return web.Response(
            status=status, body=json.dumps(doc).encode(), content_type="application/json"
        )

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/", self._aiohttp_handler)
        app.router.add_post("/inject", self._aiohttp_handler)
        return app


async def serve(
    injector: Injector, host: str, port: int, tls: ssl.SSLContext
) -> tuple[web.AppRunner, int]:
    """Start the HTTPS listener; returns the runner (for cleanup) and the bound port."""
    runner = web.AppRunner(injector.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls, reuse_address=True)
    await site.start()
    return runner, int(runner.addresses[0][1])
