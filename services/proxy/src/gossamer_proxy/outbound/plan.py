"""How the data path reaches one discovered endpoint, and how it labels that traffic.

A :class:`Pick` is the outcome of choosing an endpoint for one request (HTTP) or one
connection (opaque TCP): the logical address (the HTTP/1 pool key), the mTLS plan built
from the endpoint's hints by :func:`~gossamer_proxy.mesh.transport.plan_connect` (SNI =
identity, identity check, and for ``opaque_transport`` the peer proxy's inbound port with
ALPN ``transport.l5d.io/v1`` and a transport header), the outbound TLS metric labels
(``tls="true",server_id=…`` or ``no_identity``) and the endpoint's ``dst_*`` labels. The
caller reports how the request ended with :meth:`Pick.finish`, which feeds the balancer's
latency estimate, the endpoint's reconnect backoff (``Outcome.CONNECT_FAILURE`` makes it
pending for a while) and failure accrual (failed responses). A balanced pick whose connect
failed can be :meth:`Pick.redispatch`-ed: the same backend picks again, passing over the
endpoints that already failed this request, which are in their reconnect backoff anyway
(see :mod:`.redispatch` for when that is allowed). When every endpoint is backing off the
re-dispatch waits in the backend's queue until one may be dialled again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gossamer_api.transport_header import SessionProtocol

from ..config import Endpoint
from ..connect import UpstreamTls
from ..mesh.balancer import Outcome
from ..mesh.endpoints import Endpoint as MeshEndpoint
from ..mesh.tls_labels import outbound_tls_labels
from ..mesh.transport import plan_connect
from ..metrics import tls_values

__all__ = ["EndpointPlan", "Pick", "endpoint_plan", "forward_pick"]

Finish = Callable[[Outcome, float | None], None]
Repick = Callable[[], Awaitable["Pick"]]


@dataclass(frozen=True, slots=True)
class EndpointPlan:
    """Address, TLS and labels for one endpoint in one session protocol."""

    endpoint: Endpoint
    tls: UpstreamTls | None
    tls_labels: tuple[str, ...]
    dst_labels: tuple[tuple[str, str], ...]


def endpoint_plan(
    meta: MeshEndpoint, *, session_protocol: SessionProtocol | None, mesh_identity: bool
) -> EndpointPlan:
    """Plan a connection to a discovered endpoint.

    Without a mesh identity of our own the proxy cannot do mTLS, so every endpoint is
    reached in plaintext and labelled ``tls="disabled"``, as Linkerd does.
    """
    logical = Endpoint(str(meta.ip), meta.port)
    dst = tuple(sorted(meta.metric_labels.items()))
    if not mesh_identity:
        labels = tls_values(outbound_tls_labels(server_id=None, identity_disabled=True))
        return EndpointPlan(logical, None, labels, dst)
    if meta.identity is None:
        return EndpointPlan(logical, None, tls_values(outbound_tls_labels(server_id=None)), dst)
    plan = plan_connect(meta, session_protocol=session_protocol)
    labels = tls_values(outbound_tls_labels(server_id=meta.identity))
    return EndpointPlan(logical, UpstreamTls.from_plan(plan), labels, dst)


class Pick:
    """One endpoint chosen for one request or connection; call :meth:`finish` exactly once."""

    __slots__ = (
        "_done",
        "_finish",
        "_on_release",
        "_repick",
        "authority",
        "plan",
        "responses_eject",
    )

    def __init__(
        self,
        plan: EndpointPlan,
        authority: str,
        finish: Finish | None,
        repick: Repick | None = None,
    ) -> None:
        self.plan = plan
        self.authority = authority
        self._finish = finish
        self._repick = repick
        self._done = False
        self._on_release: Callable[[], None] | None = None
        #: Whether failed responses (5xx) count toward failure accrual, not only transport
        #: errors: set when the Service configured accrual through its outbound policy.
        self.responses_eject = False

    def on_release(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this pick is finished (e.g. release the target handle)."""
        self._on_release = callback

    @property
    def endpoint(self) -> Endpoint:
        return self.plan.endpoint

    @property
    def tls(self) -> UpstreamTls | None:
        return self.plan.tls

    @property
    def balanced(self) -> bool:
        return self._finish is not None

    @property
    def can_redispatch(self) -> bool:
        """Whether another endpoint may be picked for this request (balanced picks only)."""
        return self._repick is not None

    async def redispatch(self) -> Pick:
        """Pick again from the same backend, passing over the endpoints that failed.

        Call after :meth:`finish` (with ``CONNECT_FAILURE``, so that the failed endpoint
        backs off and the new pick goes elsewhere). Raises
        :class:`ProxyError` like the first pick (``FAIL_FAST`` / ``LOAD_SHED`` when no
        endpoint becomes available in time).
        """
        if self._repick is None:
            raise RuntimeError("this pick has a single endpoint: it cannot be re-dispatched")
        if not self._done:
            raise RuntimeError("finish the failed pick before re-dispatching it")
        pick = await self._repick()
        pick.responses_eject = self.responses_eject
        return pick

    def finish(self, outcome: Outcome, *, latency: float | None = None) -> None:
        """Report the outcome (later calls are ignored, so every error path may call it)."""
        if self._done:
            return
        self._done = True
        if self._finish is not None:
            self._finish(outcome, latency)
        if self._on_release is not None:
            release, self._on_release = self._on_release, None
            release()


_FORWARD_LABELS = tls_values(outbound_tls_labels(server_id=None))


def forward_pick(target: Endpoint, *, mesh_identity: bool) -> Pick:
    """Linkerd's ``forward`` backend: the original destination itself, in plaintext."""
    labels = (
        _FORWARD_LABELS
        if mesh_identity
        else tls_values(outbound_tls_labels(server_id=None, identity_disabled=True))
    )
    return Pick(EndpointPlan(target, None, labels, ()), str(target), None)
