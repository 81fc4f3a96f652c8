"""Per-series extra labels and the omission of empty label values in the exposition."""

from __future__ import annotations

import pytest
from gossamer_common.metrics import MetricSnapshot, Registry, Sample


def test_empty_label_values_are_omitted() -> None:
    r = Registry()
    fam = r.counter_family("req_total", "Requests.", ("direction", "error", "tls"))
    fam.labels("outbound", "", "true").inc()
    fam.labels("", "", "").inc(2)
    text = r.render().decode()
    assert 'req_total{direction="outbound",tls="true"} 1\n' in text
    assert "req_total 2\n" in text
    assert '=""' not in text


def test_histogram_with_only_empty_labels_renders_without_a_leading_comma() -> None:
    r = Registry()
    r.histogram_family("lat_ms", "Latency.", ("status_code",), (1.0,)).labels("").observe(0.5)
    text = r.render().decode()
    assert 'lat_ms_bucket{le="1"} 1\n' in text
    assert "lat_ms_count 1\n" in text


def test_collected_samples_omit_empty_labels_too() -> None:
    r = Registry()
    r.register_collector(
        lambda: [MetricSnapshot("up", "Up.", "gauge", (Sample(1, (("a", ""), ("b", "x"))),))],
        names=("up",),
    )
    assert 'up{b="x"} 1\n' in r.render().decode()


def test_extra_labels_render_after_the_fixed_ones_and_are_cached() -> None:
    r = Registry()
    fam = r.counter_family("tcp_open_total", "Opened.", ("direction", "peer"))
    extra = (("dst_namespace", "emojivoto"), ("dst_service", "web"))
    child = fam.labels_extra(("outbound", "dst"), extra)
    assert fam.labels_extra(("outbound", "dst"), extra) is child
    assert fam.labels_extra(("outbound", "dst"), ()) is fam.labels("outbound", "dst")
    assert fam.labels_extra(("outbound", "dst"), ()) is not child
    child.inc()
    text = r.render().decode()
    assert (
        'tcp_open_total{direction="outbound",peer="dst",'
        'dst_namespace="emojivoto",dst_service="web"} 1\n' in text
    )


def test_extra_labels_on_histograms() -> None:
    r = Registry()
    fam = r.histogram_family("lat_ms", "Latency.", ("direction",), (1.0,))
    fam.labels_extra(("outbound",), (("dst_pod", "web-0"),)).observe(2)
    assert 'lat_ms_bucket{direction="outbound",dst_pod="web-0",le="+Inf"} 1\n' in (
        r.render().decode()
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ((("direction", "x"),), "reserved"),
        ((("le", "1"),), "reserved"),
        ((("bad-name", "x"),), "invalid label name"),
        ((("dst_a", "1"), ("dst_a", "2")), "duplicate label names"),
    ],
)
def test_bad_extra_labels_are_refused(extra: tuple[tuple[str, str], ...], message: str) -> None:
    r = Registry()
    fam = r.histogram_family("lat_ms", "Latency.", ("direction",), (1.0,))
    with pytest.raises(ValueError, match=message):
        fam.labels_extra(("outbound",), extra)
    assert len(fam) == 0  # nothing half-created


def test_extra_labels_need_the_fixed_values() -> None:
    fam = Registry().counter_family("c_total", "C.", ("a", "b"))
    with pytest.raises(ValueError, match="expected 2 label values"):
        fam.labels_extra(("only-one",), (("x", "1"),))
