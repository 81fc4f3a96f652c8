"""``gossamer check`` against the local-mode control plane (issue 11 acceptance).

Local mode registers what an install would (config, trust roots, issuer and webhook Secrets,
RBAC) but runs the components as processes, so check asks their admin ``/ready`` instead of
looking for pods. It runs inside the node namespace, where those admin addresses answer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from localmesh import LocalMeshHandle

pytestmark = pytest.mark.netns

WEBHOOK = "gossamer-proxy-injector-webhook-config"
GOSSAMER = str(Path(sys.executable).parent / "gossamer")


def run_check(mesh: LocalMeshHandle) -> tuple[int, dict[str, Any]]:
    out = mesh.node_run(
        ["env", f"KUBECONFIG={mesh.kubeconfig}", GOSSAMER, "check", "-o", "json"],
        check=False,
        limit=60,
    )
    assert out.stdout, f"gossamer check printed nothing: {out.stderr}"
    return out.returncode, json.loads(out.stdout)


def failed(body: dict[str, Any]) -> list[str]:
    return [r["description"] for r in body["results"] if not r["ok"] and not r["warning"]]


def test_check_passes_on_local_mode(local_mesh: LocalMeshHandle) -> None:
    code, body = run_check(local_mesh)
    assert failed(body) == []
    assert (code, body["success"]) == (0, True)
    passed = {r["description"] for r in body["results"] if r["ok"]}
    for name in ("gossamer-identity", "gossamer-destination", "gossamer-proxy-injector"):
        assert f"{name} answers /ready on its admin address (local mode)" in passed
    assert "issuer credentials are signed by the trust anchor" in passed
    assert "proxy-injector caBundle verifies the serving certificate" in passed


def test_check_names_a_missing_webhook_configuration(local_mesh: LocalMeshHandle) -> None:
    saved = json.loads(
        local_mesh.kubectl("get", "mutatingwebhookconfiguration", WEBHOOK, "-o", "json")
    )
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        saved["metadata"].pop(key, None)
    local_mesh.kubectl("delete", "mutatingwebhookconfiguration", WEBHOOK)
    try:
        code, body = run_check(local_mesh)
        assert code == 1
        assert not body["success"]
        assert failed(body) == ["proxy-injector MutatingWebhookConfiguration exists"]
    finally:
        local_mesh.kubectl("create", "-f", "-", stdin=json.dumps(saved))
    code, body = run_check(local_mesh)
    assert (code, failed(body)) == (0, [])
