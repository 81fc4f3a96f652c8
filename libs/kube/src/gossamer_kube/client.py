"""A thin asyncio client for the Kubernetes API, on aiohttp.

Why not the ``kubernetes`` or ``kubernetes_asyncio`` packages (design.md §3 asks for the reason):

* Gossamer needs about ten verbs (get, list, create, patch, delete, watch, TokenReview,
  TokenRequest) over raw JSON for a handful of core kinds and Linkerd's CRDs. The generated
  clients bring thousands of model classes and convert every object into them and back; CRDs
  then go through a separate untyped ``CustomObjectsApi`` anyway. Plain ``dict`` objects keyed
  by a :class:`~gossamer_kube.resources.ResourceRef` treat both the same way.
* Informers need explicit control of the watch protocol: the ``resourceVersion`` to resume
  from, ``allowWatchBookmarks``, ``timeoutSeconds``, and a distinct 410 Gone error that means
  "relist". The official ``Watch`` helper hides resourceVersion bookkeeping, retries on its
  own, and reports 410 as a generic ``ApiException`` (or a raw ERROR event dict).
* Memory and start-up time: the control-plane processes and CLI import this on every start;
  importing the generated clients costs tens of MB and a noticeable fraction of a second,
  and ``kubernetes`` is synchronous (thread pools) while everything here is asyncio.

The framing and error logic is sans-io (:mod:`gossamer_kube.watch`, :mod:`gossamer_kube.errors`,
:mod:`gossamer_kube.config`); this module only moves bytes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self

import aiohttp

from gossamer_kube.config import KubeConfig
from gossamer_kube.errors import (
    KubeApiError,
    KubeConfigError,
    KubeConnectionError,
    KubeError,
    KubeProtocolError,
    WatchExpired,
    error_from_response,
)
from gossamer_kube.execcred import ExecPlugin, ExecToken, run_exec_plugin
from gossamer_kube.keepalive import PostPool, ResponseError
from gossamer_kube.resources import ResourceRef
from gossamer_kube.watch import WatchDecoder, WatchEvent

__all__ = [
    "PATCH_CONTENT_TYPES",
    "BoundPod",
    "KubeApiError",
    "KubeClient",
    "KubeConfig",
    "KubeConfigError",
    "KubeConnectionError",
    "KubeError",
    "KubeProtocolError",
    "PatchType",
    "ResourceRef",
    "TokenReviewResult",
    "Watch",
    "WatchEvent",
    "WatchExpired",
]

PatchType = Literal["merge", "strategic", "json"]

PATCH_CONTENT_TYPES: Mapping[str, str] = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}

#: How long a token read from ``tokenFile`` is reused before the file is read again
#: (the kubelet rotates projected tokens at 80% of their lifetime, so a minute is plenty).
TOKEN_FILE_TTL = 60.0
#: An exec plugin's token is renewed this long before it expires (as client-go does, roughly).
EXEC_REFRESH_MARGIN = 60.0


class BoundPod(NamedTuple):
    """The pod a requested service-account token is bound to (it dies with the pod)."""

    name: str
    uid: str

    @classmethod
    def of(cls, pod: Mapping[str, Any]) -> BoundPod:
        """Take name and uid from a Pod object as returned by the apiserver."""
        meta = pod.get("metadata") or {}
        name, uid = meta.get("name"), meta.get("uid")
        if not isinstance(name, str) or not isinstance(uid, str) or not name or not uid:
            raise ValueError("pod object needs metadata.name and metadata.uid")
        return cls(name, uid)


@dataclass(frozen=True)
class TokenReviewResult:
    """The apiserver's verdict on a bearer token (``status`` of a TokenReview)."""

    authenticated: bool
    username: str = ""
    audiences: tuple[str, ...] = ()
    error: str = ""
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> TokenReviewResult:
        user = status.get("user") or {}
        extra_raw = user.get("extra") or {}
        return cls(
            authenticated=bool(status.get("authenticated", False)),
            username=str(user.get("username", "")),
            audiences=tuple(str(a) for a in status.get("audiences") or ()),
            error=str(status.get("error", "")),
            uid=str(user.get("uid", "")),
            groups=tuple(str(g) for g in user.get("groups") or ()),
            extra={str(k): tuple(str(x) for x in v or ()) for k, v in extra_raw.items()},
        )


class _TokenSource:
    """Bearer token from the config, re-reading ``token_file`` at most every TTL seconds."""

    def __init__(self, config: KubeConfig, wall_clock: Callable[[], float] = time.time) -> None:
        self._static = config.token
        self._file = config.token_file
        self._plugin = config.exec_plugin
        self._wall_clock = wall_clock
        self._exec_token: ExecToken | None = None
        self._cached: str | None = None
        self._read_at = float("-inf")

    def token(self, now: float) -> str | None:
        if self._plugin is not None:
            return self._from_plugin(self._plugin)
        if self._file is None:
            return self._static
        if self._cached is None or now - self._read_at >= TOKEN_FILE_TTL:
            try:
                with open(self._file) as fh:
                    self._cached = fh.read().strip()
            except OSError as exc:
                if self._cached is None:
                    raise KubeConfigError(f"cannot read token file {self._file}: {exc}") from exc
                # Keep the last token: a rotation in progress is not a reason to fail requests.
            self._read_at = now
        return self._cached

    def _from_plugin(self, plugin: ExecPlugin) -> str:
        """The plugin's token, run again once it is within a minute of expiring.

        The plugin runs synchronously: kubeconfigs with plugins belong to the CLI and to
        services run outside a cluster, never to the in-cluster hot path.
        """
        cached = self._exec_token
        if cached is None or (
            cached.expires_at is not None
            and self._wall_clock() >= cached.expires_at - EXEC_REFRESH_MARGIN
        ):
            cached = self._exec_token = run_exec_plugin(plugin)
        return cached.token

    def forget_plugin_token(self) -> None:
        """After a 401: the next request runs the plugin again (revoked or rotated token)."""
        self._exec_token = None


class KubeClient:
    """An authenticated connection pool to one apiserver; use as ``async with``."""

    def __init__(
        self,
        config: KubeConfig,
        *,
        timeout: float = 30.0,
        user_agent: str = "gossamer",
        page_size: int = 500,
    ) -> None:
        self.config = config
        self._timeout = timeout
        self._user_agent = user_agent
        self._page_size = page_size
        self._ssl = config.ssl_context()
        self._tokens = _TokenSource(config)
        self._session: aiohttp.ClientSession | None = None
        self._reviews: PostPool | None = None

    async def __aenter__(self) -> Self:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": self._user_agent, "Accept": "application/json"},
            )
        return self._session

    async def close(self) -> None:
        if self._reviews is not None:
            self._reviews.close()
            self._reviews = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- raw requests ------------------------------------------------------------------------

    def authorization_headers(self) -> dict[str, str]:
        """The ``Authorization`` header this client sends (empty with a client certificate),
        for a caller that must prove the same user to a service other than the apiserver."""
        return self._headers(None)

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        token = self._tokens.token(time.monotonic())
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type is not None:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """Send one request and return the decoded JSON object; raise on any error status."""
        body: bytes | None = None
        if json is not None:
            body = _dumps(json)
            content_type = content_type or "application/json"
        session = self._open()
        try:
            async with session.request(
                method,
                self.config.server + path,
                params=_params(params),
                data=body,
                headers=self._headers(content_type if body is not None else None),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                server_hostname=self.config.tls_server_name,
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeConnectionError(f"{method} {path}: {exc!r}") from exc
        if status >= 400:
            if status == 401:
                self._tokens.forget_plugin_token()
            raise error_from_response(status, raw)
        if not raw:
            return {}
        try:
            doc = _loads(raw)
        except ValueError as exc:
            raise KubeProtocolError(
                f"{method} {path}: response is not JSON: {raw[:200]!r}"
            ) from exc
        if not isinstance(doc, dict):
            raise KubeProtocolError(f"{method} {path}: response is not a JSON object")
        return doc

    # -- verbs -------------------------------------------------------------------------------

    async def get(
        self, ref: ResourceRef, name: str, namespace: str | None = None
    ) -> dict[str, Any]:
        return await self.request("GET", ref.path(namespace, name))

    async def create(
        self, ref: ResourceRef, body: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        return await self.request("POST", ref.path(namespace), json=_with_type(ref, body))

    async def replace(
        self,
        ref: ResourceRef,
        name: str,
        body: Mapping[str, Any],
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """PUT the whole object (optimistic concurrency via its metadata.resourceVersion)."""
        path = ref.path(namespace, name, subresource)
        return await self.request("PUT", path, json=_with_type(ref, body))

    async def patch(
        self,
        ref: ResourceRef,
        name: str,
        patch: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        namespace: str | None = None,
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """PATCH with a JSON merge patch, a strategic merge patch or a JSON patch (RFC 6902)."""
        try:
            content_type = PATCH_CONTENT_TYPES[patch_type]
        except KeyError:
            raise ValueError(f"unknown patch type {patch_type!r}") from None
        if (patch_type == "json") != (not isinstance(patch, Mapping)):
            raise ValueError("a json patch is a list of operations; merge patches are objects")
        path = ref.path(namespace, name, subresource)
        return await self.request("PATCH", path, json=patch, content_type=content_type)

    async def delete(
        self,
        ref: ResourceRef,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: Literal["Foreground", "Background", "Orphan"] | None = None,
        grace_period_seconds: int | None = None,
    ) -> dict[str, Any]:
        """DELETE one object; returns the object (being finalized) or a Success Status."""
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy is not None:
            options["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        return await self.request("DELETE", ref.path(namespace, name), json=options)

    async def list(
        self,
        ref: ResourceRef,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """All matching objects and the list's resourceVersion (to start a watch from).

        Pages through ``limit``/``continue``; the apiserver serves every page from the same
        snapshot, so the returned resourceVersion is consistent with all items.
        """
        items: list[dict[str, Any]] = []
        params: dict[str, str | int] = {"limit": self._page_size}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        while True:
            doc = await self.request("GET", ref.path(namespace), params=params)
            page = doc.get("items") or []
            if not isinstance(page, list):
                raise KubeProtocolError(f"list of {ref.plural}: items is not a list")
            kind = ref.kind
            for item in page:
                # List items omit kind/apiVersion; restore them so objects look the same
                # whether they came from a list, a get or a watch.
                if kind and isinstance(item, dict):
                    item.setdefault("kind", kind)
                    item.setdefault("apiVersion", ref.api_version)
            items.extend(page)
            meta = doc.get("metadata") or {}
            cont = meta.get("continue")
            if not cont:
                return items, str(meta.get("resourceVersion", ""))
            params["continue"] = cont

    def watch(
        self,
        ref: ResourceRef,
        namespace: str | None = None,
        resource_version: str | None = None,
        allow_bookmarks: bool = True,
        *,
        timeout_seconds: int | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Watch:
        """Stream changes after ``resource_version`` (see :class:`Watch`)."""
        params: dict[str, str | int] = {"watch": "true"}
        if resource_version:
            params["resourceVersion"] = resource_version
        if allow_bookmarks:
            params["allowWatchBookmarks"] = "true"
        if timeout_seconds is not None:
            params["timeoutSeconds"] = timeout_seconds
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        return Watch(self, ref.path(namespace), params, timeout_seconds)

    # -- authentication APIs ----------------------------------------------------------------

    async def token_review(self, token: str, audiences: Sequence[str] = ()) -> TokenReviewResult:
        """Ask the apiserver whether ``token`` is valid for any of ``audiences``."""
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        if audiences:
            body["spec"]["audiences"] = list(audiences)
        doc = await self._review_post("/apis/authentication.k8s.io/v1/tokenreviews", body)
        return TokenReviewResult.from_status(doc.get("status") or {})

    async def subject_access_review(self, review: Mapping[str, Any]) -> dict[str, Any]:
        """POST a ``SubjectAccessReview`` (``authorization.k8s.io/v1``); returns its status."""
        doc = await self._review_post(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews", dict(review)
        )
        status = doc.get("status") or {}
        return dict(status) if isinstance(status, dict) else {}

    async def _review_post(self, path: str, doc: Any) -> dict[str, Any]:
        """POST a review (it changes nothing, so it may be repeated) on the lean keep-alive pool.

        The identity service sends one per certificate; see :mod:`gossamer_kube.keepalive`.
        """
        pool = self._reviews
        if pool is None:
            pool = self._reviews = PostPool(
                self.config.server,
                ssl_context=self._ssl,
                server_hostname=self.config.tls_server_name,
            )
        headers = [
            ("User-Agent", self._user_agent),
            ("Accept", "application/json"),
            *self._headers("application/json").items(),
        ]
        try:
            async with asyncio.timeout(self._timeout):
                response = await pool.post(path, _dumps(doc), headers)
        except (OSError, ResponseError, TimeoutError) as exc:
            raise KubeConnectionError(f"POST {path}: {exc!r}") from exc
        if response.status >= 400:
            if response.status == 401:
                self._tokens.forget_plugin_token()
            raise error_from_response(response.status, response.body)
        try:
            result = _loads(response.body) if response.body else {}
        except ValueError as exc:
            raise KubeProtocolError(
                f"POST {path}: response is not JSON: {response.body[:200]!r}"
            ) from exc
        if not isinstance(result, dict):
            raise KubeProtocolError(f"POST {path}: response is not a JSON object")
        return result

    async def token_request(
        self,
        namespace: str,
        service_account: str,
        audiences: Sequence[str],
        expiration_seconds: int = 3600,
        bound_pod: BoundPod | None = None,
    ) -> str:
        """Mint a service-account token (TokenRequest), optionally bound to a pod."""
        spec: dict[str, Any] = {
            "audiences": list(audiences),
            "expirationSeconds": expiration_seconds,
        }
        if bound_pod is not None:
            spec["boundObjectRef"] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": bound_pod.name,
                "uid": bound_pod.uid,
            }
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
        doc = await self.request("POST", path, json=body)
        token = (doc.get("status") or {}).get("token")
        if not isinstance(token, str) or not token:
            raise KubeProtocolError("TokenRequest response carries no status.token")
        return token


class Watch:
    """One watch request: an async iterator of :class:`WatchEvent`, and an async context manager.

    Iteration ends when the server closes the stream (``timeoutSeconds`` elapsed, or the
    apiserver's own request timeout); the caller then watches again from the last
    resourceVersion it saw. An ERROR event raises (:class:`WatchExpired` for 410 Gone).
    Leaving the ``async with`` block, or :meth:`aclose`, releases the connection.
    """

    def __init__(
        self,
        client: KubeClient,
        path: str,
        params: Mapping[str, str | int],
        timeout_seconds: int | None,
    ) -> None:
        self._client = client
        self._path = path
        self._params = params
        self._timeout_seconds = timeout_seconds
        self._decoder = WatchDecoder()
        self._pending: list[WatchEvent] = []
        self._response: aiohttp.ClientResponse | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._done = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def aclose(self) -> None:
        self._done = True
        if self._response is not None:
            self._response.close()
            self._response = None

    async def _start(self) -> AsyncIterator[bytes]:
        session = self._client._open()
        # No total deadline: a watch legitimately stays open for many minutes. A read timeout
        # a little above the server-side timeout catches a silently dead connection.
        sock_read = None if self._timeout_seconds is None else self._timeout_seconds + 30.0
        try:
            resp = await session.get(
                self._client.config.server + self._path,
                params=_params(self._params),
                headers=self._client._headers(None),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=sock_read),
                server_hostname=self._client.config.tls_server_name,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeConnectionError(f"watch {self._path}: {exc!r}") from exc
        if resp.status >= 400:
            raw = await resp.read()
            resp.close()
            raise error_from_response(resp.status, raw)
        self._response = resp
        return resp.content.iter_any()

    async def __anext__(self) -> WatchEvent:
        while not self._pending:
            if self._done:
                raise StopAsyncIteration
            try:
                self._decoder.raise_pending()
                if self._chunks is None:
                    self._chunks = await self._start()
                try:
                    chunk = await self._chunks.__anext__()
                except StopAsyncIteration:
                    self._pending.extend(self._decoder.end())
                    await self.aclose()
                    continue
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise KubeConnectionError(f"watch {self._path}: {exc!r}") from exc
                self._pending.extend(self._decoder.feed(chunk))
            except BaseException:
                await self.aclose()
                raise
        return self._pending.pop(0)


def _params(params: Mapping[str, str | int] | None) -> dict[str, str] | None:
    if params is None:
        return None
    return {k: str(v) for k, v in params.items()}


def _with_type(ref: ResourceRef, body: Mapping[str, Any]) -> dict[str, Any]:
    """Fill in apiVersion/kind when the caller left them out (the apiserver requires them)."""
    out = dict(body)
    if ref.kind:
        out.setdefault("apiVersion", ref.api_version)
        out.setdefault("kind", ref.kind)
    return out


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _loads(raw: bytes) -> Any:
    return json.loads(raw)
