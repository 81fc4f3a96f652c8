"""Render the MutatingWebhookConfiguration that points the apiserver at the injector.

Shared by ``gossamer install``, the Helm chart and the integration tests, so the selectors
that keep the control plane from injecting itself are written down once (wire §4.1).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal

from gossamer_inject import annotations as a

WEBHOOK_NAME = "gossamer-proxy-injector.linkerd.io"


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookTarget:
    """Where the apiserver sends reviews: a Service (in-cluster) or a URL (local tests)."""

    service_name: str | None = "gossamer-proxy-injector"
    service_namespace: str | None = None
    service_port: int = 443
    url: str | None = None
    path: str = "/"


def render_webhook_config(
    *,
    ca_bundle_pem: bytes,
    control_plane_namespace: str = "gossamer",
    target: WebhookTarget | None = None,
    failure_policy: Literal["Ignore", "Fail"] = "Ignore",
    timeout_seconds: int = 10,
    name: str | None = None,
    excluded_namespaces: tuple[str, ...] = ("kube-system", "cert-manager"),
) -> dict[str, Any]:
    """A ``admissionregistration.k8s.io/v1`` MutatingWebhookConfiguration object.

    ``failure_policy`` stays ``Ignore`` by default: when the injector is down pods are still
    admitted (without a proxy) rather than blocking every deployment in the cluster.
    """
    if failure_policy not in ("Ignore", "Fail"):
        raise ValueError(f"failure_policy must be Ignore or Fail, not {failure_policy!r}")
    if not 1 <= timeout_seconds <= 30:
        raise ValueError("timeout_seconds must be between 1 and 30 (the apiserver's limit)")
    target = target or WebhookTarget()
    client_config: dict[str, Any]
    if target.url is not None:
        client_config = {"url": target.url}
    else:
        client_config = {
            "service": {
                "name": target.service_name,
                "namespace": target.service_namespace or control_plane_namespace,
                "path": target.path,
                "port": target.service_port,
            }
        }
    client_config["caBundle"] = base64.b64encode(ca_bundle_pem).decode()
    excluded = sorted({control_plane_namespace, *excluded_namespaces})
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": name or f"{control_plane_namespace}-proxy-injector-webhook-config",
            "labels": {
                a.CONTROL_PLANE_COMPONENT_LABEL: "proxy-injector",
                a.CONTROL_PLANE_NS_LABEL: control_plane_namespace,
            },
        },
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "clientConfig": client_config,
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods", "services"],
                        "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": a.ADMISSION_WEBHOOKS_LABEL,
                            "operator": "NotIn",
                            "values": ["disabled"],
                        },
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": excluded,
                        },
                    ]
                },
                "objectSelector": {
                    "matchExpressions": [
                        {"key": a.CONTROL_PLANE_COMPONENT_LABEL, "operator": "DoesNotExist"},
                        {"key": a.CNI_RESOURCE_LABEL, "operator": "DoesNotExist"},
                    ]
                },
                "failurePolicy": failure_policy,
                "reinvocationPolicy": "Never",
                "sideEffects": "None",
                "timeoutSeconds": timeout_seconds,
                "admissionReviewVersions": ["v1", "v1beta1"],
            }
        ],
    }
