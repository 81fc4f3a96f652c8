"""A blocking admin HTTP helper for bringing the cluster up and for synchronous fixtures.

The cluster is started from synchronous pytest fixtures and the ``up``/``down`` command, where
running an event loop just to poll /readyz would be more machinery than the job needs.
Application code uses the async :class:`gossamer_kube.client.KubeClient` instead.
"""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any
from urllib.parse import urlsplit

from gossamer_kube.config import KubeConfig
from gossamer_kube.errors import KubeConnectionError, error_from_response
from gossamer_kube.execcred import run_exec_plugin

__all__ = ["AdminHTTP"]


class AdminHTTP:
    """One-shot HTTPS requests to the apiserver with the config's credentials."""

    def __init__(self, config: KubeConfig, timeout: float = 10.0) -> None:
        url = urlsplit(config.server)
        if url.hostname is None:
            raise ValueError(f"server URL has no host: {config.server}")
        self._host = url.hostname
        self._port = url.port or 443
        ctx = config.ssl_context()
        self._ssl: ssl.SSLContext = ctx if ctx is not None else ssl.create_default_context()
        self._token = config.token
        if config.exec_plugin is not None:
            self._token = run_exec_plugin(config.exec_plugin).token
        self._timeout = timeout

    def raw(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection(
            self._host, self._port, context=self._ssl, timeout=self._timeout
        )
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise KubeConnectionError(f"{method} {path}: {exc!r}") from exc
        finally:
            conn.close()

    def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        status, raw = self.raw(method, path, body)
        if status >= 400:
            raise error_from_response(status, raw)
        doc = json.loads(raw) if raw else {}
        return doc if isinstance(doc, dict) else {}
