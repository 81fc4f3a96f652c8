"""A small OTLP/gRPC trace receiver for tests: records every ExportTraceServiceRequest.

Served with grpclib on loopback, optionally over TLS (a collector with a mesh identity).
:meth:`OtlpReceiver.wait_for_spans` waits on an event set by each export, with a deadline.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

from gossamer_api.proxy import otlp_trace_pb2, otlp_trace_service_pb2
from gossamer_api.proxy.otlp_trace_service_grpc import TraceServiceBase
from grpclib.server import Server, Stream

ExportRequest = otlp_trace_service_pb2.ExportTraceServiceRequest
ExportResponse = otlp_trace_service_pb2.ExportTraceServiceResponse


@dataclass
class ReceivedSpan:
    service_name: str
    resource: dict[str, object]
    span: otlp_trace_pb2.Span

    @property
    def attributes(self) -> dict[str, object]:
        return {kv.key: _value(kv.value) for kv in self.span.attributes}


def _value(any_value: object) -> object:
    kind = any_value.WhichOneof("value")  # type: ignore[attr-defined]
    return getattr(any_value, kind) if kind else None


@dataclass
class OtlpReceiver(TraceServiceBase):
    requests: list[ExportRequest] = field(default_factory=list)
    #: The URI SAN (mesh identity) or DNS SAN of each TLS client's certificate, per export.
    client_identities: list[str] = field(default_factory=list)
    #: Answer exports with this many rejected spans (partial success).
    reject: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    server: Server | None = None
    port: int = 0

    async def Export(self, stream: Stream[ExportRequest, ExportResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        cert = stream.peer.cert()
        if cert:
            names = [v for k, v in cert.get("subjectAltName", ()) if k in ("DNS", "URI")]
            self.client_identities.extend(names[:1])
        self.requests.append(request)
        self._changed.set()
        response = ExportResponse()
        if self.reject:
            response.partial_success.rejected_spans = self.reject
            response.partial_success.error_message = "rejected by test"
        await stream.send_message(response)

    def spans(self) -> list[ReceivedSpan]:
        out = []
        for request in self.requests:
            for rs in request.resource_spans:
                resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        out.append(ReceivedSpan(str(resource.get("service.name")), resource, span))
        return out

    async def wait_for_spans(self, count: int, within: float = 15.0) -> list[ReceivedSpan]:
        async with asyncio.timeout(within):
            while len(self.spans()) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.spans()

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> int:
        self.server = Server([self])
        await self.server.start("127.0.0.1", 0, ssl=ssl_context)
        sockets = self.server._server.sockets  # type: ignore[union-attr]
        self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
