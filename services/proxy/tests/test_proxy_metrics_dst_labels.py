"""``dst_*`` labels on the proxy's outbound families (unit level)."""

from __future__ import annotations

from gossamer_proxy.metrics import ProxyMetrics, TargetLabels, dst_label_pairs

DST = (("dst_namespace", "emojivoto"), ("dst_pod", "web-0"), ("dst_service", "web"))


def test_dst_label_pairs_prefix_clean_and_drop_empty_values() -> None:
    raw = (("dst_zone", ""), ("namespace", "ns"), ("dst_k8s.io/app", "web"), ("dst_pod", "p"))
    assert dst_label_pairs(raw) == (
        ("dst_k8s_io_app", "web"),
        ("dst_namespace", "ns"),
        ("dst_pod", "p"),
    )


def test_http_and_tcp_families_carry_dst_labels_after_the_fixed_ones() -> None:
    m = ProxyMetrics()
    target = TargetLabels("outbound", "10.0.0.7", 8080, False, dst=DST)
    stats = m.http(target, "web.emojivoto.svc.cluster.local:8080")
    assert m.http(target, "web.emojivoto.svc.cluster.local:8080") is stats
    stats.requests.value += 1
    stats.observe_latency(200, 3.0)
    stats.response(200)
    tcp = m.tcp(target, "dst")
    tcp.open()
    tcp.close(0)
    text = m.registry.render().decode()
    dst = 'dst_namespace="emojivoto",dst_pod="web-0",dst_service="web"'
    for prefix in (
        "request_total{",
        "response_total{",
        "response_latency_ms_count{",
        "tcp_open_total{",
        "tcp_read_bytes_total{",
        "tcp_close_total{",
    ):
        (line,) = [x for x in text.splitlines() if x.startswith(prefix)]
        assert line.split("} ")[0].endswith(dst), line


def test_endpoints_with_different_dst_labels_are_separate_series() -> None:
    m = ProxyMetrics()
    a = TargetLabels("outbound", "10.0.0.7", 8080, False, dst=DST)
    b = TargetLabels("outbound", "10.0.0.7", 8080, False, dst=(("dst_pod", "web-1"),))
    plain = TargetLabels("outbound", "10.0.0.7", 8080, False)
    stats = {m.http(t, "web:8080") for t in (a, b, plain)}
    assert len(stats) == 3
    for s in stats:
        s.requests.value += 1
    lines = [x for x in m.registry.render().decode().splitlines() if x.startswith("request_total{")]
    assert len(lines) == 3
    assert sum("dst_" not in x for x in lines) == 1
