"""What to tap (pure): the pods of a resource, and the ``ObserveRequest`` for the filters.

Like Linkerd's tap service, the tap fans out to every live meshed pod of the resource
(``deploy/web``, ``pod/web-1``, ``ns/demo``, ``svc/web``) and asks each proxy for the
requests that match the filters: ``--to`` (a resource the requests go to, by the
destination labels the proxy's discovery gives the endpoint), ``--method``, ``--path``
(a prefix) and ``--authority`` (exact).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gossamer_api.proxy import http_types_pb2, tap_pb2

from gossamer_cli.viz.meshed import is_live, is_meshed, owner, selects
from gossamer_cli.viz.resources import Resource

__all__ = ["TapFilters", "TapTarget", "observe_request", "pod_identity", "tap_targets"]

Match = tap_pb2.ObserveRequest.Match
#: Requests per proxy per Observe call: effectively "until the tap is stopped".
STREAM_LIMIT = 2**31 - 1
CONTROL_PORT = 4190


@dataclass(frozen=True)
class TapFilters:
    to: Resource | None = None
    to_namespace: str = "default"
    method: str | None = None
    path: str | None = None
    authority: str | None = None


@dataclass(frozen=True)
class TapTarget:
    """One proxy to tap: the pod, its address and the identity its proxy must prove."""

    namespace: str
    pod: str
    ip: str
    identity: str


def pod_identity(pod: Mapping[str, Any], control_plane_namespace: str, trust_domain: str) -> str:
    meta = pod["metadata"]
    account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
    ns = meta.get("namespace", "default")
    return f"{account}.{ns}.serviceaccount.identity.{control_plane_namespace}.{trust_domain}"


def _belongs(
    resource: Resource, pod: Mapping[str, Any], services: Iterable[Mapping[str, Any]]
) -> bool:
    kind, name = resource.kind.name, resource.name
    meta = pod["metadata"]
    if kind == "namespace":
        return True  # the pods were listed in that namespace
    if kind == "pod":
        return not name or meta["name"] == name
    if kind in ("deployment", "statefulset", "daemonset"):
        found = owner(pod, kind)
        return found is not None and (not name or found == name)
    if kind == "service":
        return any(
            (not name or s["metadata"]["name"] == name)
            and selects((s.get("spec") or {}).get("selector") or {}, pod)
            for s in services
        )
    raise ValueError(f"cannot tap a {kind}")


def tap_targets(
    resource: Resource,
    pods: Iterable[Mapping[str, Any]],
    services: Iterable[Mapping[str, Any]] = (),
    *,
    control_plane_namespace: str = "gossamer",
    trust_domain: str = "cluster.local",
) -> list[TapTarget]:
    """The live, meshed pods of ``resource`` that have an address, sorted by name."""
    services = list(services)
    targets = []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or not is_live(pod) or not is_meshed(pod):
            continue
        if _belongs(resource, pod, services):
            meta = pod["metadata"]
            identity = pod_identity(pod, control_plane_namespace, trust_domain)
            targets.append(TapTarget(meta.get("namespace", ""), meta["name"], ip, identity))
    return sorted(targets, key=lambda t: (t.namespace, t.pod))


def _method(name: str) -> http_types_pb2.HttpMethod:
    upper = name.upper()
    if upper in http_types_pb2.HttpMethod.Registered.keys():  # noqa: SIM118 - proto enum
        return http_types_pb2.HttpMethod(
            registered=http_types_pb2.HttpMethod.Registered.Value(upper)
        )
    return http_types_pb2.HttpMethod(unregistered=upper)


def observe_request(
    filters: TapFilters, *, limit: int = STREAM_LIMIT, headers: bool = False
) -> tap_pb2.ObserveRequest:
    """The ``ObserveRequest`` every selected proxy gets: all filters must hold."""
    matches: list[Match] = []
    if filters.to is not None:
        kind = filters.to.kind
        matches.append(
            Match(destination_label=Match.Label(key="namespace", value=filters.to_namespace))
        )
        if filters.to.name and kind.name != "namespace":
            matches.append(
                Match(destination_label=Match.Label(key=kind.label, value=filters.to.name))
            )
    if filters.method:
        matches.append(Match(http=Match.Http(method=_method(filters.method))))
    if filters.path:
        path = Match.Http.StringMatch(prefix=filters.path)
        matches.append(Match(http=Match.Http(path=path)))
    if filters.authority:
        authority = Match.Http.StringMatch(exact=filters.authority)
        matches.append(Match(http=Match.Http(authority=authority)))
    request = tap_pb2.ObserveRequest(limit=limit)
    if matches:
        request.match.CopyFrom(Match(all=Match.Seq(matches=matches)))
    if headers:
        request.extract.http.headers.SetInParent()
    return request
