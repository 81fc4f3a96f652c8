"""Linkerd-named proxy metrics."""

from __future__ import annotations

from gossamer_proxy.metrics import ProxyMetrics, TargetLabels, classify


def _lines(metrics: ProxyMetrics, prefix: str) -> list[str]:
    return [
        line for line in metrics.registry.render().decode().splitlines() if line.startswith(prefix)
    ]


def test_outbound_http_families_and_labels() -> None:
    m = ProxyMetrics()
    target = TargetLabels("outbound", "10.0.0.7", 8080, inbound=False)
    stats = m.http(target, "web.default.svc.cluster.local:8080")
    stats.requests.value += 1
    stats.observe_latency(200, 3.5)
    stats.response(200, None)
    (req,) = _lines(m, "request_total")
    assert 'direction="outbound"' in req
    assert 'authority="web.default.svc.cluster.local:8080"' in req
    assert 'target_addr="10.0.0.7:8080"' in req
    assert 'tls="no_identity",no_tls_reason="not_provided_by_service_discovery"' in req
    assert req.endswith(" 1")
    (resp,) = _lines(m, "response_total")
    # Empty labels (grpc_status, error) are omitted from the exposition, as Linkerd does.
    assert resp.endswith('status_code="200",classification="success"} 1')
    assert "grpc_status" not in resp
    assert "error=" not in resp
    buckets = _lines(m, "response_latency_ms_bucket")
    assert any('le="4"' in b and b.endswith(" 1") for b in buckets)
    assert any('le="3"' in b and b.endswith(" 0") for b in buckets)


def test_inbound_omits_authority_and_has_srv_labels() -> None:
    m = ProxyMetrics()
    target = TargetLabels("inbound", "10.0.0.8", 9090, inbound=True)
    a = m.http(target, "a:1")
    b = m.http(target, "b:2")
    assert a is b
    a.requests.value += 1
    (req,) = _lines(m, "request_total")
    assert "authority=" not in req
    assert 'srv_kind="default",srv_name="all-unauthenticated",srv_port="9090"' in req
    assert 'no_tls_reason="no_tls_from_remote"' in req


def test_grpc_status_classification() -> None:
    assert classify(200, 0, False) == "success"
    assert classify(200, 14, False) == "failure"
    assert classify(503, None, False) == "failure"
    assert classify(200, None, True) == "failure"
    m = ProxyMetrics()
    stats = m.http(TargetLabels("outbound", "10.0.0.1", 50051, inbound=False), "g:50051")
    stats.response(200, 5)
    (resp,) = _lines(m, "response_total")
    assert 'grpc_status="5"' in resp
    assert 'classification="failure"' in resp


def test_tcp_family() -> None:
    m = ProxyMetrics()
    tcp = m.tcp(TargetLabels("outbound", "10.0.0.1", 80, inbound=False), "dst")
    tcp.open()
    tcp.read.value += 10
    tcp.written.value += 20
    tcp.close(104)
    text = m.registry.render().decode()
    assert 'tcp_open_total{direction="outbound",peer="dst"' in text
    assert 'classification="failure",errno="104"} 1' in text
    (gauge,) = _lines(m, "tcp_open_connections")
    assert gauge.endswith(" 0")
