"""Calling the tap service (the CLI's and the dashboard's side; I/O).

The caller proves who it is with its kubeconfig's own credentials (its client certificate,
or its bearer token), exactly as it would to the apiserver; the tap service verifies the
certificate against the cluster's client CA or reviews the token, then asks the apiserver
whether that user may tap. The service itself must prove its Service name
(``tap.<viz-ns>.svc``) with a certificate from the tap CA the caller was given.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from gossamer_api.proxy import tap_pb2
from gossamer_kube.client import KubeClient
from gossamer_kube.config import KubeConfig

from gossamer_cli.viz.resources import Resource
from gossamer_cli.viz.tap_client import _memory_file
from gossamer_cli.viz.tap_service.api import StreamEnd, TapQuery, decode_line, tap_path

__all__ = ["TapServiceCall", "TapServiceEndpoint", "TapServiceError", "service_name"]

#: Longest stream line taken from the service (an event with its headers fits easily).
MAX_LINE: Final = 1 << 20
CONNECT_TIMEOUT: Final = 10.0


def service_name(viz_namespace: str) -> str:
    return f"tap.{viz_namespace}.svc"


class TapServiceError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"tap service answered {status}: {message}" if status else message)
        self.status = status


@dataclass(frozen=True)
class TapServiceEndpoint:
    """Where the tap service listens (``https://host:port``), how to trust it.

    ``via_apiserver``: the kubeconfig's apiserver, which proxies the tap API to the service
    (the ``v1alpha1.tap.linkerd.io`` APIService); it is trusted as the kubeconfig says."""

    url: str
    ca_pem: bytes = field(repr=False)
    server_name: str = service_name("gossamer-viz")
    via_apiserver: bool = False

    @classmethod
    def apiserver(cls, kube: KubeConfig) -> TapServiceEndpoint:
        return cls(kube.server, b"", kube.tls_server_name or "", via_apiserver=True)


async def apiserver_serves_tap(kube: KubeConfig) -> bool:
    """Whether the apiserver serves the tap API: its discovery answers for the group version
    only while the APIService is Available (any authenticated user may read discovery)."""
    from gossamer_kube.errors import KubeError

    from gossamer_cli.viz.tap_service.discovery import GROUP_VERSION

    async with KubeClient(kube) as client:
        try:
            doc = await client.request("GET", f"/apis/{GROUP_VERSION}")
        except KubeError:
            return False
    return doc.get("kind") == "APIResourceList" and doc.get("groupVersion") == GROUP_VERSION


def _context(endpoint: TapServiceEndpoint, kube: KubeConfig) -> ssl.SSLContext | bool:
    if endpoint.via_apiserver:
        return kube.ssl_context() or False  # False: a plain-http apiserver
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=endpoint.ca_pem.decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if kube.client_cert_data is not None and kube.client_key_data is not None:
        with _memory_file(kube.client_cert_data) as cert, _memory_file(kube.client_key_data) as key:
            context.load_cert_chain(cert, key)
    return context


class TapServiceCall:
    """One bounded tap through the service: iterate :meth:`events`; then read :attr:`end`."""

    def __init__(
        self,
        endpoint: TapServiceEndpoint,
        kube: KubeConfig,
        namespace: str,
        resource: Resource,
        query: TapQuery,
    ) -> None:
        self.endpoint = endpoint
        self.kube = kube
        self.path = tap_path(namespace, resource.kind, resource.name)
        self.query = query
        self.end: StreamEnd | None = None

    @property
    def errors(self) -> list[tuple[str, str]]:
        return self.end.errors if self.end is not None else []

    async def events(self) -> AsyncIterator[tuple[str, tap_pb2.TapEvent]]:
        headers = {"Content-Type": "application/json", "Accept": "application/x-ndjson"}
        if self.kube.client_cert_data is None:
            headers.update(KubeClient(self.kube).authorization_headers())
        connector = aiohttp.TCPConnector(ssl=_context(self.endpoint, self.kube))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
        url = self.endpoint.url.rstrip("/") + self.path
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=timeout, read_bufsize=MAX_LINE
            ) as http,
            http.post(
                url,
                data=self.query.body(),
                headers=headers,
                server_hostname=self.endpoint.server_name or None,
            ) as response,
        ):
            if response.status != 200:
                text = (await response.content.read(4096)).decode(errors="replace").strip()
                raise TapServiceError(response.status, text)
            while line := await response.content.readline():
                if not line.endswith(b"\n"):
                    break  # cut short
                try:
                    item = decode_line(line)
                except ValueError as exc:
                    raise TapServiceError(
                        0, f"malformed answer from the tap service: {exc}"
                    ) from exc
                if isinstance(item, StreamEnd):
                    self.end = item
                    return
                yield item
        raise TapServiceError(0, "the tap service ended the stream early")
