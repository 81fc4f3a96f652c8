from __future__ import annotations

import base64

import kubernetes_validate
import pytest
from gossamer_inject import WebhookTarget, render_webhook_config


def test_service_target_defaults() -> None:
    cfg = render_webhook_config(ca_bundle_pem=b"PEM")
    kubernetes_validate.validate(cfg, "1.32.0", strict=True)
    hook = cfg["webhooks"][0]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert hook["rules"][0]["resources"] == ["pods", "services"]
    assert hook["clientConfig"]["service"]["namespace"] == "gossamer"
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == b"PEM"
    excluded = hook["namespaceSelector"]["matchExpressions"][1]
    assert excluded["key"] == "kubernetes.io/metadata.name"
    assert "gossamer" in excluded["values"]
    assert "kube-system" in excluded["values"]
    keys = {e["key"] for e in hook["objectSelector"]["matchExpressions"]}
    assert keys == {"linkerd.io/control-plane-component", "linkerd.io/cni-resource"}


def test_url_target_and_fail_policy() -> None:
    cfg = render_webhook_config(
        ca_bundle_pem=b"x",
        control_plane_namespace="mesh",
        target=WebhookTarget(url="https://127.0.0.1:8443/inject"),
        failure_policy="Fail",
    )
    kubernetes_validate.validate(cfg, "1.32.0", strict=True)
    hook = cfg["webhooks"][0]
    assert hook["clientConfig"]["url"] == "https://127.0.0.1:8443/inject"
    assert hook["failurePolicy"] == "Fail"
    assert cfg["metadata"]["name"] == "mesh-proxy-injector-webhook-config"
    with pytest.raises(ValueError, match="failure_policy"):
        render_webhook_config(ca_bundle_pem=b"x", failure_policy="Maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        render_webhook_config(ca_bundle_pem=b"x", timeout_seconds=60)
