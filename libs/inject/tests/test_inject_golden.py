"""Golden patches for real-world manifests (regenerate with GOSSAMER_UPDATE_GOLDEN=1).

Each ``golden/<name>.yaml`` manifest's pod templates go through the same builder the CLI's
``--manual`` mode uses; the ops are compared with ``golden/<name>.patch.json``, then applied and
the resulting pods validated against the Kubernetes schema.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from gossamer_inject import MeshValues, Origin, Owner, build_pod_patch, jsonpatch
from gossamer_inject.workloads import objects, pod_template

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("GOSSAMER_UPDATE_GOLDEN") == "1"
ANCHORS = "-----BEGIN CERTIFICATE-----\nMIIBfakeanchor\n-----END CERTIFICATE-----\n"
MESH = MeshValues(trust_anchors_pem=ANCHORS)
K8S_VERSION = "1.32.0"


def _patches(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for doc in yaml.safe_load_all(path.read_text()):
        for obj in objects(doc):
            found = pod_template(obj)
            if found is None:
                continue
            result = build_pod_patch(
                found.template,
                mesh=MESH,
                origin=Origin.CLI,
                created_by="gossamer/cli test",
                namespace=found.namespace,
                owner=None if found.kind == "Pod" else Owner(found.kind, found.name),
                annotate_opaque_ports=False,
            )
            out[found.ref] = {"inject": result.decision.inject, "ops": result.ops}
            injected = jsonpatch.apply(copy.deepcopy(dict(found.template)), result.ops)
            pod = {"apiVersion": "v1", "kind": "Pod", **injected}
            pod.setdefault("metadata", {})["name"] = found.name or "x"
            kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    return out


@pytest.mark.parametrize("manifest", sorted(GOLDEN.glob("*.yaml")), ids=lambda p: p.stem)
def test_patch_matches_golden(manifest: Path) -> None:
    actual = _patches(manifest)
    golden = manifest.with_suffix(".patch.json")
    if UPDATE or not golden.exists():
        golden.write_text(json.dumps(actual, indent=2, sort_keys=False) + "\n")
        if not UPDATE:
            pytest.fail(f"wrote missing golden {golden.name}; review it and rerun")
    assert actual == json.loads(golden.read_text())
