"""AdmissionReview handling in the injector: request decoding and the patch builder.

Drives :func:`gossamer_injector.review.parse_review`, :func:`lookups_for` and
:func:`respond` (what the webhook's HTTP layer calls), either on raw body bytes (mutated
JSON) or on reviews built from structured choices: pods and services with ``linkerd.io``
and ``config.linkerd.io`` annotations (valid and invalid values), containers, ports,
init containers, an already injected proxy, and namespace annotations.

Contract checked: ``parse_review`` raises only :class:`BadReview`; ``respond`` never raises
(it documents "never refuses admission"); the answer is JSON with the request's uid and
``allowed: true``; a JSONPatch in it applies cleanly to the object it was built for
(the apiserver rejects a patch that does not).
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from gossamer_inject import MeshValues, Owner, jsonpatch
from gossamer_injector.review import BadReview, Context, lookups_for, parse_review, respond

from ..harness import Finding, Target
from ..ops import Choices

MESH = MeshValues(
    trust_anchors_pem="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
)

CONFIG_KEYS = (
    "access-log", "admin-port", "close-wait-timeout", "control-port", "default-inbound-policy",
    "enable-external-profiles", "enable-gateway", "image-pull-policy", "inbound-port",
    "init-image", "init-image-version", "opaque-ports", "outbound-port", "pod-inbound-ports",
    "proxy-additional-env", "proxy-admin-shutdown", "proxy-await", "proxy-cpu-limit",
    "proxy-cpu-ratio-limit", "proxy-cpu-request", "proxy-enable-native-sidecar",
    "proxy-ephemeral-storage-limit", "proxy-gid", "proxy-image", "proxy-log-level",
    "proxy-memory-limit", "proxy-memory-request", "proxy-outbound-connect-timeout",
    "proxy-require-identity-inbound-ports", "proxy-uid", "proxy-version",
    "proxy-wait-before-exit-seconds", "shutdown-grace-period", "skip-inbound-ports",
    "skip-outbound-ports", "skip-subnets", "proxy-log-format", "proxy-gid",
)  # fmt: skip
VALUES = (
    "enabled", "disabled", "ingress", "true", "false", "", "0", "1", "-1", "65535", "65536",
    "80,443", "1-100", "100-1", "8080-8090,9000", "abc", "10.0.0.0/8", "::/0", "10.0.0.0/33",
    "100m", "1Gi", "1.5", "1e3", "5s", "1m30s", "-5s", "999999999999999999999", "all-authenticated",
    "deny", "json", "plain", "warn,linkerd=debug", "[{\"name\":\"A\",\"value\":\"b\"}]", "[1]",
    "{}", "http", "\u00e9", "0x10", "\u0662", "  7 ", "1,,2", "4143", "4191",
)  # fmt: skip
KINDS = ("Pod", "Service", "Deployment", "", "pod")
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT", "")
CONTAINER_NAMES = ("app", "linkerd-proxy", "linkerd-init", "istio-proxy", "", "sidecar")


def _value(choices: Choices) -> Any:
    kind = choices.below(16)
    if kind == 0:
        return choices.blob(40).decode("utf-8", "replace")
    if kind == 1:
        return choices.u16() - 1000
    if kind == 2:
        return None
    if kind == 3:
        return [choices.u8()]
    return VALUES[choices.below(len(VALUES))]


def _annotations(choices: Choices) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if choices.u8() < 200:
        out["linkerd.io/inject"] = "enabled"
    for _ in range(choices.below(6)):
        which = choices.below(6)
        if which == 0:
            key = "linkerd.io/inject"
        elif which == 1:
            key = "linkerd.io/" + CONFIG_KEYS[choices.below(len(CONFIG_KEYS))]
        else:
            key = "config.linkerd.io/" + CONFIG_KEYS[choices.below(len(CONFIG_KEYS))]
        out[key] = _value(choices)
    return out


def _container(choices: Choices) -> Any:
    if choices.u8() == 255:
        return _value(choices)
    container: dict[str, Any] = {
        "name": CONTAINER_NAMES[choices.below(len(CONTAINER_NAMES))],
        "image": "nginx",
    }
    ports = []
    for _ in range(choices.below(3)):
        port: dict[str, Any] = {"containerPort": _value(choices) if choices.u8() < 20 else 80}
        if choices.u8() & 1:
            port["name"] = _value(choices)
        ports.append(port)
    if ports:
        container["ports"] = ports
    if choices.u8() & 1:
        container["securityContext"] = {"runAsUser": _value(choices)}
    if choices.u8() < 30:
        container["env"] = _value(choices)
    return container


def _pod(choices: Choices) -> dict[str, Any]:
    metadata: dict[str, Any] = {"annotations": _annotations(choices)}
    if choices.u8() & 1:
        metadata["generateName"] = "web-5d8f-"
    if choices.u8() & 1:
        metadata["ownerReferences"] = [
            {"kind": choices.pick(("ReplicaSet", "Job", "StatefulSet", 7)),
             "name": "web-5d8f", "controller": choices.u8() & 1 == 1}
        ]  # fmt: skip
    if choices.u8() & 1:
        metadata["labels"] = {"app": "web" if choices.u8() < 240 else _value(choices)}
    spec: dict[str, Any] = {
        "containers": [_container(choices) for _ in range(1 + choices.below(2))]
    }
    if choices.u8() < 60:
        spec["initContainers"] = [_container(choices) for _ in range(choices.below(2))]
    if choices.u8() < 40:
        spec["hostNetwork"] = choices.u8() & 1 == 1
    if choices.u8() < 40:
        spec["volumes"] = (
            [{"name": "data", "emptyDir": {}}] if choices.u8() < 200 else _value(choices)
        )
    if choices.u8() < 30:
        spec["automountServiceAccountToken"] = _value(choices)
    if choices.u8() == 255:
        spec = _value(choices)
    return {"metadata": metadata, "spec": spec}


def _service(choices: Choices) -> dict[str, Any]:
    ports = [
        {"port": _value(choices) if choices.u8() < 50 else 3306, "targetPort": _value(choices)}
        for _ in range(choices.below(3))
    ]
    return {"metadata": {"annotations": _annotations(choices)}, "spec": {"ports": ports}}


def _structured(choices: Choices) -> tuple[bytes, Context]:
    roll = choices.u8()
    kind = "Pod" if roll < 160 else "Service" if roll < 220 else KINDS[roll % len(KINDS)]
    obj = _service(choices) if kind == "Service" else _pod(choices)
    request: dict[str, Any] = {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": kind},
        "operation": "CREATE" if choices.u8() < 230 else OPERATIONS[choices.below(5)],
        "object": obj,
    }
    if choices.u8() & 1:
        request["namespace"] = "shop"
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    owner = Owner("Deployment", "web") if choices.u8() & 1 else None
    namespace_annotations = {k: v for k, v in _annotations(choices).items() if isinstance(v, str)}
    return json.dumps(review).encode(), Context(namespace_annotations, owner)


def one_input(data: bytes) -> None:
    choices = Choices(data)
    if choices.u8() & 1:
        body, context = choices.rest(), Context()
    else:
        body, context = _structured(choices)
    try:
        request = parse_review(body)
    except BadReview:
        return
    lookups_for(request)
    original = copy.deepcopy(dict(request.object))
    outcome = respond(request, context, mesh=MESH, created_by="fuzz")
    encoded = json.loads(json.dumps(outcome.body))
    response = encoded["response"]
    if response["uid"] != request.uid or response["allowed"] is not True:
        raise Finding(f"bad response envelope {response!r}")
    patch = response.get("patch")
    if patch is not None:
        ops = json.loads(base64.b64decode(patch))
        try:
            jsonpatch.apply(original, ops)
        except Exception as exc:
            raise Finding(f"patch does not apply: {exc!r}", key="patch does not apply") from exc


def seeds() -> list[bytes]:
    pod = {
        "metadata": {
            "annotations": {"linkerd.io/inject": "enabled"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "w", "controller": True}],
        },
        "spec": {
            "containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]
        },
    }
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "shop",
            "object": pod,
        },
    }
    raw = json.dumps(review).encode()
    service = json.dumps(
        {
            **review,
            "request": {
                **review["request"],
                "kind": {"kind": "Service"},
                "object": {
                    "metadata": {"annotations": {"config.linkerd.io/opaque-ports": "3306"}},
                    "spec": {"ports": [{"port": 3306}]},
                },
            },
        }
    ).encode()
    structured = bytes([0, 0, 2, 0, 0]) + bytes(range(1, 80))
    return [b"\x01" + raw, b"\x01" + service, structured, b"\x00" * 40]


TARGET = Target(
    name="injector_review",
    one_input=one_input,
    seeds=seeds,
    max_len=16384,
    dictionary=(
        b'"linkerd.io/inject"',
        b'"enabled"',
        b'"CREATE"',
        b'"Pod"',
        b'"Service"',
        b'"config.linkerd.io/',
        b'"containers"',
        b'"annotations"',
        b"{}",
        b"[]",
        b"[[[[[[[[",
        b"99999999",
        b"1e999",
    ),
)
