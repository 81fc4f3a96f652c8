"""``--trace-collector``: a mesh-wide collector for every injected proxy; annotations win."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gossamer_common.settings import load
from gossamer_inject import resolve
from gossamer_inject.containers import PodFacts, proxy_container
from gossamer_injector.settings import InjectorSettings


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    anchors = tmp_path / "ca.crt"
    anchors.write_text("pem")
    return {
        "GOSSAMER_INJECTOR_TLS_CERT_FILE": str(tmp_path / "tls.crt"),
        "GOSSAMER_INJECTOR_TLS_KEY_FILE": str(tmp_path / "tls.key"),
        "GOSSAMER_INJECTOR_TRUST_ANCHORS_FILE": str(anchors),
        **extra,
    }


def _trace_env(settings: InjectorSettings, annotations: dict[str, str]) -> dict[str, Any]:
    cfg = resolve(settings.mesh_values("pem"), annotations, ingress=False)
    proxy = proxy_container(cfg, PodFacts(inbound_ports=(8080,), opaque_ports=(), workload="web"))
    return {
        e["name"]: e.get("value")
        for e in proxy["env"]
        if e["name"].startswith("LINKERD2_PROXY_TRACE")
    }


def test_without_a_collector_proxies_do_not_trace(tmp_path: Path) -> None:
    assert _trace_env(load(InjectorSettings, [], _env(tmp_path)), {}) == {}


def test_a_mesh_wide_collector_reaches_every_proxy_and_annotations_override_it(
    tmp_path: Path,
) -> None:
    settings = load(
        InjectorSettings,
        ["--trace-collector", "collector.gossamer-jaeger:4317"],
        _env(tmp_path, GOSSAMER_INJECTOR_TRACE_COLLECTOR_SERVICE_ACCOUNT="otel"),
    )
    env = _trace_env(settings, {})
    assert env["LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR"] == "collector.gossamer-jaeger:4317"
    assert env["LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME"] == (
        "otel.gossamer-jaeger.serviceaccount.identity.gossamer.cluster.local"
    )
    assert env["LINKERD2_PROXY_TRACE_SERVICE_NAME"] == "web"
    other = _trace_env(settings, {"config.linkerd.io/trace-collector": "otel.tracing:4317"})
    assert other["LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR"] == "otel.tracing:4317"
