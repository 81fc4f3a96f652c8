"""AdmissionReview handling, sans-io: bytes in, a response document out.

The HTTP layer (:mod:`gossamer_injector.server`) calls :func:`parse_review`, performs the
lookups that :func:`lookups_for` asks for (the namespace's annotations, the pod's owning
workload), then calls :func:`respond`. Nothing here touches the network or the clock, so
every path, including every malformed input, is a plain unit test.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gossamer_inject import InjectError, MeshValues, Origin, Owner, build_pod_patch
from gossamer_inject.jsonpatch import Op
from gossamer_inject.opaque import service_patch

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


class BadReview(Exception):  # noqa: N818 - it names the answer it produces
    """The body is not an AdmissionReview we can answer; the server replies 400."""

    status_hint = 400


@dataclass(frozen=True, slots=True)
class ReviewRequest:
    """The parts of ``AdmissionReview.request`` the injector uses."""

    api_version: str
    uid: str
    kind: str
    operation: str
    namespace: str
    object: Mapping[str, Any]
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class Lookups:
    """The I/O a review needs before it can be answered."""

    namespace: str | None
    #: (kind, name) of an owner whose own controller decides the proxy owner label.
    owner: tuple[str, str] | None


@dataclass(frozen=True, slots=True)
class Context:
    """What the I/O layer found for :class:`Lookups`."""

    namespace_annotations: Mapping[str, str] = field(default_factory=dict)
    owner: Owner | None = None
    #: Problems met while looking things up, surfaced as warnings.
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """The response document plus a label for metrics and logs."""

    body: dict[str, Any]
    result: str
    reason: str = ""


def parse_review(body: bytes) -> ReviewRequest:
    """Validate the envelope; raise :class:`BadReview` with a message for anything else."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadReview(f"body is not JSON: {exc}") from exc
    except ValueError as exc:  # an integer longer than Python's int conversion limit
        raise BadReview(f"body has an unreadable number: {str(exc)[:80]}") from exc
    except RecursionError:
        raise BadReview("body is nested too deeply") from None
    if not isinstance(doc, dict):
        raise BadReview("body is not a JSON object")
    if doc.get("kind") != "AdmissionReview":
        raise BadReview(f"kind is {doc.get('kind')!r}, expected AdmissionReview")
    api_version = doc.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise BadReview(f"apiVersion {api_version!r} is not one of {', '.join(API_VERSIONS)}")
    request = doc.get("request")
    if not isinstance(request, dict):
        raise BadReview("request is missing or not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("request.uid is missing")
    kind = request.get("kind")
    kind_name = kind.get("kind") if isinstance(kind, dict) else None
    if not isinstance(kind_name, str):
        raise BadReview("request.kind.kind is missing")
    obj = request.get("object")
    if not isinstance(obj, dict):
        raise BadReview("request.object is missing or not an object")
    namespace = request.get("namespace")
    if namespace is None:
        metadata = obj.get("metadata")
        namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
    if not isinstance(namespace, str):
        namespace = ""
    operation = request.get("operation")
    return ReviewRequest(
        api_version=str(api_version),
        uid=uid,
        kind=kind_name,
        operation=operation if isinstance(operation, str) else "",
        namespace=namespace,
        object=obj,
        dry_run=request.get("dryRun") is True,
    )


def lookups_for(request: ReviewRequest) -> Lookups:
    """The namespace to read and the owner to resolve (ReplicaSet → Deployment, Job → CronJob)."""
    if request.operation != "CREATE" or request.kind not in ("Pod", "Service"):
        return Lookups(None, None)
    owner = None
    if request.kind == "Pod":
        ref = controller_ref(request.object)
        if ref is not None and ref[0] in ("ReplicaSet", "Job"):
            owner = ref
    return Lookups(request.namespace or None, owner)


def controller_ref(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    metadata = obj.get("metadata")
    refs = metadata.get("ownerReferences") if isinstance(metadata, Mapping) else None
    if not isinstance(refs, list):
        return None
    for ref in refs:
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            kind, name = ref.get("kind"), ref.get("name")
            if isinstance(kind, str) and isinstance(name, str):
                return kind, name
    return None


def direct_owner(obj: Mapping[str, Any]) -> Owner | None:
    """The owner label when no lookup is needed: the controller, else the pod itself."""
    ref = controller_ref(obj)
    if ref is not None:
        return Owner(*ref)
    return None


def respond(
    request: ReviewRequest, context: Context, *, mesh: MeshValues, created_by: str
) -> Outcome:
    """Answer one review. Never refuses admission: at worst, no patch and a warning."""
    if request.operation != "CREATE":
        return _outcome(request, [], list(context.warnings), "skipped", "not a CREATE")
    try:
        if request.kind == "Service":
            ops = service_patch(
                request.object,
                namespace_annotations=context.namespace_annotations,
                default=mesh.opaque_ports,
            )
            return _outcome(request, ops, list(context.warnings), "annotated" if ops else "skipped")
        if request.kind != "Pod":
            return _outcome(request, [], [], "skipped", f"unsupported kind {request.kind}")
        patch = build_pod_patch(
            request.object,
            mesh=mesh,
            origin=Origin.WEBHOOK,
            created_by=created_by,
            namespace=request.namespace or None,
            namespace_annotations=context.namespace_annotations,
            owner=context.owner or direct_owner(request.object),
        )
    except InjectError as exc:
        warning = f"gossamer: proxy not injected: {exc}"
        return _outcome(request, [], [*context.warnings, warning], "declined", str(exc))
    warnings = list(context.warnings)
    if patch.decision.inject:
        return _outcome(request, patch.ops, warnings, "injected")
    if patch.decision.requested:
        warnings.append(f"gossamer: proxy not injected: {patch.decision.reason}")
        return _outcome(request, [], warnings, "declined", patch.decision.reason)
    return _outcome(request, [], warnings, "skipped", patch.decision.reason)


def _outcome(
    request: ReviewRequest, ops: list[Op], warnings: list[str], result: str, reason: str = ""
) -> Outcome:
    response: dict[str, Any] = {"uid": request.uid, "allowed": True}
    if ops:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
    if warnings:
        response["warnings"] = warnings
    body = {"apiVersion": request.api_version, "kind": "AdmissionReview", "response": response}
    return Outcome(body, result, reason)


def bad_review_body(error: BadReview) -> dict[str, Any]:
    """The 400 answer's body: a Kubernetes-style Status, readable in apiserver logs."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": str(error),
        "reason": "BadRequest",
        "code": 400,
    }
