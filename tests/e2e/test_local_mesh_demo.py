"""End to end on the local mesh: the demo app, injected by the real webhook, talking mTLS."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from localmesh import LocalMeshHandle

pytestmark = pytest.mark.netns

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo" / "k8s"
IDENTITY = "{sa}.demo.serviceaccount.identity.gossamer.cluster.local"


@pytest.fixture(scope="module")
def demo(local_mesh: LocalMeshHandle) -> LocalMeshHandle:
    for path in sorted(DEMO.glob("*.yaml")):
        local_mesh.apply(path.read_text())
    for app, count in (("slow", 2), ("flaky", 2), ("web", 1), ("traffic", 1)):
        local_mesh.wait_ready("demo", f"app={app}", count, limit=180)
    return local_mesh


def counter(metrics: str, name: str, **labels: str) -> float:
    """Sum of a counter's samples whose labels include ``labels``."""
    total = 0.0
    for line in metrics.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_webhook_injected_proxy_init_and_proxy(demo: LocalMeshHandle) -> None:
    for pod in demo.pods("demo", "app=slow"):
        init = [c["name"] for c in pod["spec"].get("initContainers") or []]
        assert init[:2] == ["linkerd-init", "linkerd-proxy"]
        assert pod["metadata"]["annotations"]["linkerd.io/proxy-version"]
        assert re.fullmatch(
            r"[0-9a-f]{64}", pod["metadata"]["annotations"]["linkerd.io/trust-root-sha256"]
        )


def test_every_hop_is_mtls_with_the_callers_identity(demo: LocalMeshHandle) -> None:
    deadline = time.monotonic() + 60
    while True:
        web_id = IDENTITY.format(sa="web")
        slow = [demo.metrics(p) for p in demo.pods("demo", "app=slow")]
        flaky = [demo.metrics(p) for p in demo.pods("demo", "app=flaky")]
        (web,) = [demo.metrics(p) for p in demo.pods("demo", "app=web")]
        meshed = {
            "slow": sum(
                counter(m, "request_total", direction="inbound", tls="true", client_id=web_id)
                for m in slow
            ),
            "flaky": sum(
                counter(m, "request_total", direction="inbound", tls="true", client_id=web_id)
                for m in flaky
            ),
            "web": counter(
                web,
                "request_total",
                direction="inbound",
                tls="true",
                client_id=IDENTITY.format(sa="traffic"),
            ),
        }
        plaintext = sum(
            counter(m, "request_total", direction="inbound", tls="no_identity")
            for m in (*slow, *flaky, web)
        )
        if all(v > 0 for v in meshed.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert all(v > 0 for v in meshed.values()), meshed
    assert plaintext == 0
