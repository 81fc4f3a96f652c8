"""Exposition format, label handling, histogram buckets and idle-series expiry."""

from __future__ import annotations

import math
import os
import time
import timeit
from pathlib import Path

import pytest
from gossamer_common.metrics import (
    LATENCY_MS_BUCKETS,
    MetricSnapshot,
    Registry,
    Sample,
    escape_label_value,
    format_value,
)
from gossamer_common.process_metrics import (
    parse_stat,
    process_age_seconds,
    read_process_stats,
    register_process_metrics,
)


def lines(registry: Registry) -> list[str]:
    return registry.render().decode().splitlines()


def test_counter_renders_help_type_and_value() -> None:
    r = Registry()
    c = r.counter("tcp_open_total", "Total connections opened.")
    c.value += 1
    c.inc(2)
    assert lines(r) == [
        "# HELP tcp_open_total Total connections opened.",
        "# TYPE tcp_open_total counter",
        "tcp_open_total 3",
    ]


def test_labelled_child_is_cached_and_shared() -> None:
    r = Registry()
    fam = r.counter_family("request_total", "Requests.", ("direction", "authority"))
    a = fam.labels("inbound", "web.ns.svc.cluster.local:80")
    assert fam.labels("inbound", "web.ns.svc.cluster.local:80") is a
    a.value += 5
    fam.labels("outbound", "x").value += 1
    out = lines(r)
    assert 'request_total{direction="inbound",authority="web.ns.svc.cluster.local:80"} 5' in out
    assert 'request_total{direction="outbound",authority="x"} 1' in out


def test_label_values_are_escaped() -> None:
    r = Registry()
    fam = r.gauge_family("g", 'Help with \\ and\nnewline and "quotes".', ("v",))
    fam.labels('a"b\\c\nd').set(1.5)
    out = lines(r)
    assert out[0] == '# HELP g Help with \\\\ and\\nnewline and "quotes".'
    assert out[2] == 'g{v="a\\"b\\\\c\\nd"} 1.5'
    assert escape_label_value("plain") == "plain"


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    r = Registry()
    fam = r.histogram_family("response_latency_ms", "Latency.", ("direction",))
    h = fam.labels("inbound")
    for v in (0.5, 1, 1.1, 7, 60_000):
        h.observe(v)
    out = lines(r)
    assert out[1] == "# TYPE response_latency_ms histogram"
    buckets = [x for x in out if x.startswith("response_latency_ms_bucket")]
    assert len(buckets) == len(LATENCY_MS_BUCKETS) + 1
    assert buckets[0] == 'response_latency_ms_bucket{direction="inbound",le="1"} 2'
    assert buckets[1] == 'response_latency_ms_bucket{direction="inbound",le="2"} 3'
    assert 'response_latency_ms_bucket{direction="inbound",le="10"} 4' in buckets
    assert buckets[-2] == 'response_latency_ms_bucket{direction="inbound",le="50000"} 4'
    assert buckets[-1] == 'response_latency_ms_bucket{direction="inbound",le="+Inf"} 5'
    assert 'response_latency_ms_sum{direction="inbound"} 60009.6' in out
    assert 'response_latency_ms_count{direction="inbound"} 5' in out
    assert h.count == 5


def test_unlabelled_histogram_with_fractional_buckets() -> None:
    r = Registry()
    h = r.histogram("d_seconds", "Duration.", (0.005, 0.1, 1.0, math.inf))
    h.observe(0.05)
    out = lines(r)
    assert out[2:] == [
        'd_seconds_bucket{le="0.005"} 0',
        'd_seconds_bucket{le="0.1"} 1',
        'd_seconds_bucket{le="1"} 1',
        'd_seconds_bucket{le="+Inf"} 1',
        "d_seconds_sum 0.05",
        "d_seconds_count 1",
    ]


def test_format_value() -> None:
    assert format_value(3) == "3"
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"
    assert format_value(1e20) == "1e+20"


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ((), "at least one"),
        ((1, 1), "strictly increasing"),
        ((2, 1), "strictly increasing"),
        ((1, math.nan), "finite"),
    ],
)
def test_bad_buckets_are_rejected(buckets: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Registry().histogram("h", "x", buckets)


def test_bad_names_and_labels_are_rejected() -> None:
    r = Registry()
    with pytest.raises(ValueError, match="invalid metric name"):
        r.counter("1bad", "x")
    with pytest.raises(ValueError, match="invalid label name"):
        r.counter_family("ok", "x", ("bad-label",))
    with pytest.raises(ValueError, match="duplicate label"):
        r.counter_family("ok2", "x", ("a", "a"))
    with pytest.raises(ValueError, match="reserved"):
        r.histogram_family("h", "x", ("le",))
    r.counter("dup", "x")
    with pytest.raises(ValueError, match="already registered"):
        r.gauge("dup", "x")
    fam = r.counter_family("f", "x", ("a", "b"))
    with pytest.raises(ValueError, match="expected 2 label values"):
        fam.labels("only-one")
    with pytest.raises(TypeError, match="must be str"):
        fam.labels("a", 1)  # type: ignore[arg-type]
    assert len(fam) == 0


def test_empty_families_are_not_rendered() -> None:
    r = Registry()
    r.counter_family("unused_total", "x", ("a",))
    assert r.render() == b""


def test_idle_series_expire_only_when_unheld_and_unchanged() -> None:
    r = Registry()
    fam = r.counter_family("c", "x", ("peer",))
    fam.labels("dropped").value += 1
    held = fam.labels("held")
    busy = fam.labels("busy")
    assert r.expire_idle(now=0.0, retain=600) == 0  # first sweep only records values
    busy.value += 1
    assert r.expire_idle(now=599.0, retain=600) == 0
    busy.value += 1
    assert r.expire_idle(now=600.0, retain=600) == 1  # "dropped": idle 600s, held by nobody
    assert [k for k, _ in fam.children()] == [("held",), ("busy",)]
    del busy
    assert r.expire_idle(now=1199.0, retain=600) == 0  # busy changed at 600
    assert r.expire_idle(now=1200.0, retain=600) == 1
    assert [k for k, _ in fam.children()] == [("held",)]
    assert held.value == 0
    # A recreated series starts from zero.
    fam.labels("dropped").value += 1
    assert 'c{peer="dropped"} 1' in lines(r)


def test_histogram_activity_counts_observations() -> None:
    r = Registry()
    fam = r.histogram_family("h", "x", ("a",))
    fam.labels("v").observe(1)
    r.expire_idle(0.0, 10)
    fam.labels("v").observe(1)
    assert r.expire_idle(10.0, 10) == 0
    assert r.expire_idle(20.0, 10) == 1


def test_collectors_and_gauge_funcs_render_at_scrape() -> None:
    r = Registry()
    calls = []

    def value() -> float:
        calls.append(1)
        return 42

    r.gauge_func("pool_size", "Pool size.", value)
    r.register_collector(
        lambda: [
            MetricSnapshot("build_info", "Build.", "gauge", (Sample(1, (("version", 'v"1'),)),))
        ],
        names=("build_info",),
    )
    assert calls == []
    out = lines(r)
    assert "pool_size 42" in out
    assert 'build_info{version="v\\"1"} 1' in out
    with pytest.raises(ValueError, match="already registered"):
        r.counter("build_info", "x")


def test_process_metrics_from_proc() -> None:
    stats = read_process_stats()
    assert stats.open_fds > 0
    assert stats.resident_memory_bytes > 0
    assert stats.threads >= 1
    assert abs(stats.start_time_seconds - time.time()) < 86400 * 365
    assert parse_stat("123 (a b) c) S 1 2")[0] == "S"
    r = Registry()
    register_process_metrics(r)
    text = r.render().decode()
    assert "# TYPE process_cpu_seconds_total counter" in text
    assert "process_start_time_seconds " in text
    assert f"process_max_fds {os.sysconf('SC_OPEN_MAX')}" in text


def test_process_age_counts_from_the_process_start(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    ticks = os.sysconf("SC_CLK_TCK")
    fields = ["S"] + ["0"] * 18 + [str(50 * ticks)] + ["0"] * 10  # starttime: 50 s after boot
    (tmp_path / "self" / "stat").write_text("7 (python3 -m x) " + " ".join(fields))
    assert process_age_seconds(tmp_path, now_since_boot=62.5) == 12.5
    assert process_age_seconds(tmp_path, now_since_boot=10.0) == 0.0  # never negative
    assert 0 <= process_age_seconds() < 86400 * 365  # this very process


def test_increment_cost_is_reported() -> None:
    """Measures (does not assert) the hot-path cost; run with -s to see the numbers."""
    r = Registry()
    child = r.counter_family("c", "x", ("a",)).labels("v")
    h = r.histogram_family("h", "x", ("a",)).labels("v")
    n = 200_000
    attr = min(timeit.repeat("c.value += 1", globals={"c": child}, number=n, repeat=3)) / n
    inc = min(timeit.repeat("c.inc()", globals={"c": child}, number=n, repeat=3)) / n
    obs = min(timeit.repeat("h.observe(37.5)", globals={"h": h}, number=n, repeat=3)) / n
    print(f"\ncounter attr += 1: {attr * 1e9:.0f} ns; inc(): {inc * 1e9:.0f} ns; "
          f"histogram observe: {obs * 1e9:.0f} ns")  # fmt: skip
    assert child.value > 0


def test_names_lists_families_without_series_and_collector_names() -> None:
    registry = Registry()
    registry.counter_family("request_total", "Requests.", ("direction",))
    registry.histogram("response_latency_ms", "Latency.")
    registry.gauge_func("process_threads", "Threads.", lambda: 1.0)
    assert registry.names() == {"request_total", "response_latency_ms", "process_threads"}
