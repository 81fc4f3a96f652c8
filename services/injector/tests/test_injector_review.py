from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from gossamer_inject import MeshValues, Owner, jsonpatch
from gossamer_injector.review import (
    BadReview,
    Context,
    ReviewRequest,
    bad_review_body,
    lookups_for,
    parse_review,
    respond,
)

MESH = MeshValues(trust_anchors_pem="pem")


def review(obj: dict[str, Any], *, kind: str = "Pod", operation: str = "CREATE") -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "operation": operation,
                "namespace": "shop",
                "object": obj,
            },
        }
    ).encode()


def a_pod(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "generateName": "web-5d8f-",
            "annotations": annotations or {},
            "ownerReferences": [
                {"kind": "ReplicaSet", "name": "web-5d8f", "controller": True, "uid": "x"}
            ],
        },
        "spec": {"containers": [{"name": "web", "image": "nginx"}]},
    }


def answer(body: bytes, context: Context | None = None) -> dict[str, Any]:
    outcome = respond(parse_review(body), context or Context(), mesh=MESH, created_by="t")
    return outcome.body


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"kind": "Pod"}', "AdmissionReview"),
        (b'{"kind": "AdmissionReview", "apiVersion": "v2"}', "apiVersion"),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}', "request"),
        (
            b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {}}',
            "uid",
        ),
        (
            b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1",'
            b'"request":{"uid":"1","kind":"Pod"}}',
            "kind.kind",
        ),
        (
            b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1",'
            b'"request":{"uid":"1","kind":{"kind":"Pod"},"object":null}}',
            "object",
        ),
    ],
)
def test_malformed_reviews_are_bad_requests(body: bytes, needle: str) -> None:
    with pytest.raises(BadReview, match=needle) as info:
        parse_review(body)
    doc = bad_review_body(info.value)
    assert doc["code"] == 400
    assert doc["kind"] == "Status"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"[" * 100_000, "nested too deeply"),
        (b'{"kind": "AdmissionReview", "n": ' + b"9" * 5000 + b"}", "unreadable number"),
    ],
)
def test_hostile_json_is_a_bad_request_not_a_crash(body: bytes, needle: str) -> None:
    # Found while building the fuzz target (fuzz/targets/injector_review.py): json.loads
    # raised RecursionError / a plain ValueError, which the webhook answered with a 500.
    with pytest.raises(BadReview, match=needle):
        parse_review(body)


def test_injects_and_encodes_patch() -> None:
    body = answer(
        review(a_pod({"linkerd.io/inject": "enabled"})), Context(owner=Owner("Deployment", "web"))
    )
    response = body["response"]
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert response["uid"] == "u-1"
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    pod = jsonpatch.apply(a_pod({"linkerd.io/inject": "enabled"}), ops)
    assert pod["metadata"]["labels"]["linkerd.io/proxy-deployment"] == "web"
    assert pod["metadata"]["labels"]["linkerd.io/workload-ns"] == "shop"
    assert pod["spec"]["initContainers"][1]["name"] == "linkerd-proxy"


def test_namespace_annotation_from_context() -> None:
    response = answer(review(a_pod()), Context({"linkerd.io/inject": "enabled"}))["response"]
    assert "patch" in response


def test_disabled_and_plain_pods_pass_untouched() -> None:
    ns = Context({"linkerd.io/inject": "enabled"})
    for body, ctx in (
        (review(a_pod({"linkerd.io/inject": "disabled"})), ns),
        (review(a_pod()), Context()),
    ):
        response = answer(body, ctx)["response"]
        assert response == {"uid": "u-1", "allowed": True}


def test_declines_with_warning() -> None:
    pod = a_pod({"linkerd.io/inject": "enabled", "config.linkerd.io/admin-port": "admin"})
    response = answer(review(pod))["response"]
    assert "patch" not in response
    assert response["allowed"] is True
    assert "admin-port" in response["warnings"][0]
    host = a_pod({"linkerd.io/inject": "enabled"})
    host["spec"]["hostNetwork"] = True
    assert "hostNetwork" in answer(review(host))["response"]["warnings"][0]
    broken = a_pod({"linkerd.io/inject": "enabled"})
    broken["spec"]["containers"] = "nope"
    assert "spec.containers" in answer(review(broken))["response"]["warnings"][0]


def test_lookup_warnings_are_passed_on() -> None:
    ctx = Context(warnings=("gossamer: could not read namespace shop",))
    assert answer(review(a_pod()), ctx)["response"]["warnings"] == list(ctx.warnings)


def test_services_get_opaque_ports() -> None:
    svc = {"metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}]}}
    response = answer(review(svc, kind="Service"))["response"]
    ops = json.loads(base64.b64decode(response["patch"]))
    assert ops[-1] == {
        "op": "add",
        "path": "/metadata/annotations/config.linkerd.io~1opaque-ports",
        "value": "5432",
    }


def test_other_operations_and_kinds_pass() -> None:
    assert (
        "patch"
        not in answer(review(a_pod({"linkerd.io/inject": "enabled"}), operation="UPDATE"))[
            "response"
        ]
    )
    assert "patch" not in answer(review({"metadata": {}}, kind="ConfigMap"))["response"]


def test_lookups() -> None:
    request = parse_review(review(a_pod()))
    assert lookups_for(request).namespace == "shop"
    assert lookups_for(request).owner == ("ReplicaSet", "web-5d8f")
    update = ReviewRequest("admission.k8s.io/v1", "u", "Pod", "UPDATE", "shop", a_pod())
    assert lookups_for(update).namespace is None


def test_v1beta1_is_answered_in_kind() -> None:
    doc = json.loads(review(a_pod()))
    doc["apiVersion"] = "admission.k8s.io/v1beta1"
    body = answer(json.dumps(doc).encode())
    assert body["apiVersion"] == "admission.k8s.io/v1beta1"
