"""Multi-core proxy: the pure parts (core count, frames, merged metrics, restart budget)."""

from __future__ import annotations

import pytest
from gossamer_proxy.cores import (
    FrameDecoder,
    FrameError,
    RestartBudget,
    available_cpus,
    cores_from_env,
    encode_frame,
    family_total,
    merge_expositions,
)


@pytest.mark.parametrize(
    ("env", "available", "expected"),
    [
        ({}, 8, 1),
        ({"LINKERD2_PROXY_CORES": "1", "LINKERD2_PROXY_CORES_MIN": "1"}, 8, 1),  # injector default
        ({"LINKERD2_PROXY_CORES": "2"}, 8, 2),  # older single form is the minimum
        ({"LINKERD2_PROXY_CORES": "4"}, 2, 2),  # never above the CPUs available
        ({"LINKERD2_PROXY_CORES_MIN": "4", "LINKERD2_PROXY_CORES_MAX": "2"}, 8, 4),
        ({"LINKERD2_PROXY_CORES_MAX": "3", "LINKERD2_PROXY_CORES_MAX_RATIO": "0.5"}, 10, 3),
        ({"LINKERD2_PROXY_CORES_MAX_RATIO": "0.5"}, 10, 5),
        ({"LINKERD2_PROXY_CORES_MAX_RATIO": "0.35"}, 10, 4),  # 3.5 rounds up, as in Rust
        ({"LINKERD2_PROXY_CORES_MAX_RATIO": "0.31"}, 10, 3),
        ({"LINKERD2_PROXY_CORES_MAX_RATIO": "0.25"}, 8, 2),
        ({"LINKERD2_PROXY_CORES_MIN": "6", "LINKERD2_PROXY_CORES_MAX_RATIO": "0.5"}, 10, 6),
        ({"LINKERD2_PROXY_CORES_MIN": "2"}, 8, 2),
        ({"LINKERD2_PROXY_CORES_MIN": "2", "LINKERD2_PROXY_CORES_MAX": "4"}, 1, 1),
    ],
)
def test_core_count_follows_linkerd(env: dict[str, str], available: int, expected: int) -> None:
    cores, warnings = cores_from_env(env, available)
    assert (cores, warnings) == (expected, [])


@pytest.mark.parametrize(
    "env",
    [
        {"LINKERD2_PROXY_CORES": "two"},
        {"LINKERD2_PROXY_CORES": "0"},
        {"LINKERD2_PROXY_CORES_MAX": "-1"},
        {"LINKERD2_PROXY_CORES_MAX_RATIO": "1.5"},
        {"LINKERD2_PROXY_CORES_MAX_RATIO": "nan"},
    ],
)
def test_bad_core_settings_are_ignored_with_a_warning(env: dict[str, str]) -> None:
    cores, warnings = cores_from_env(env, 8)
    assert cores == 1
    assert len(warnings) == 1
    assert next(iter(env)) in warnings[0]


def test_available_cpus_honours_a_cgroup_quota() -> None:
    assert available_cpus(8) == 8
    assert available_cpus(8, "max 100000\n") == 8
    assert available_cpus(8, "150000 100000\n") == 2  # 1.5 CPUs let two threads run
    assert available_cpus(8, "400000 100000") == 4
    assert available_cpus(2, "400000 100000") == 2
    assert available_cpus(8, "garbage") == 8
    assert available_cpus(0) == 1


def test_frames_round_trip_across_arbitrary_splits() -> None:
    data = encode_frame({"type": "metrics", "id": 1}) + encode_frame({"type": "ready"})
    decoder = FrameDecoder()
    messages = []
    for i in range(len(data)):
        messages += decoder.feed(data[i : i + 1])
    assert messages == [{"type": "metrics", "id": 1}, {"type": "ready"}]


def test_oversized_or_malformed_frames_are_refused() -> None:
    with pytest.raises(FrameError, match="exceeds"):
        FrameDecoder(max_frame=10).feed((11).to_bytes(4, "big"))
    with pytest.raises(FrameError, match="JSON"):
        FrameDecoder().feed((3).to_bytes(4, "big") + b"{x}")
    with pytest.raises(FrameError, match="type"):
        FrameDecoder().feed((2).to_bytes(4, "big") + b"[]")


_PARENT = """\
# HELP request_total Total count of HTTP requests.
# TYPE request_total counter
request_total{direction="inbound",authority="a"} 3
# HELP response_latency_ms Elapsed times.
# TYPE response_latency_ms histogram
response_latency_ms_bucket{direction="inbound",le="1"} 2
response_latency_ms_bucket{direction="inbound",le="+Inf"} 3
response_latency_ms_sum{direction="inbound"} 1.5
response_latency_ms_count{direction="inbound"} 3
# HELP process_start_time_seconds Start time.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1700000000
# HELP process_cpu_seconds_total CPU time.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 1
"""

_WORKER = """\
# HELP request_total Total count of HTTP requests.
# TYPE request_total counter
request_total{direction="inbound",authority="b"} 5
request_total{direction="inbound",authority="a"} 4
# HELP response_latency_ms Elapsed times.
# TYPE response_latency_ms histogram
response_latency_ms_bucket{direction="inbound",le="1"} 1
response_latency_ms_bucket{direction="inbound",le="+Inf"} 9
response_latency_ms_sum{direction="inbound"} 2.25
response_latency_ms_count{direction="inbound"} 9
# HELP process_start_time_seconds Start time.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1700000005
# HELP process_cpu_seconds_total CPU time.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 2.5
"""


def test_merge_sums_each_series_and_keeps_families_whole() -> None:
    merged = merge_expositions([_PARENT, _WORKER])
    assert merged.splitlines() == [
        "# HELP request_total Total count of HTTP requests.",
        "# TYPE request_total counter",
        'request_total{direction="inbound",authority="a"} 7',
        'request_total{direction="inbound",authority="b"} 5',
        "# HELP response_latency_ms Elapsed times.",
        "# TYPE response_latency_ms histogram",
        'response_latency_ms_bucket{direction="inbound",le="1"} 3',
        'response_latency_ms_bucket{direction="inbound",le="+Inf"} 12',
        'response_latency_ms_sum{direction="inbound"} 3.75',
        'response_latency_ms_count{direction="inbound"} 12',
        "# HELP process_start_time_seconds Start time.",
        "# TYPE process_start_time_seconds gauge",
        "process_start_time_seconds 1700000000",
        "# HELP process_cpu_seconds_total CPU time.",
        "# TYPE process_cpu_seconds_total counter",
        "process_cpu_seconds_total 3.5",
    ]
    assert family_total(merged, "request_total") == 12
    assert family_total(merged, "response_latency_ms_count") == 12


def test_a_worker_alone_gives_the_start_time_only_when_the_parent_has_none() -> None:
    worker = 'process_start_time_seconds{a="1"} 5\nprocess_start_time_seconds{a="2"} 6\n'
    other = 'process_start_time_seconds{a="1"} 7\nprocess_start_time_seconds{a="3"} 8\n'
    assert merge_expositions(["", worker, other]) == worker


def test_merge_of_one_exposition_is_that_exposition() -> None:
    assert merge_expositions([_PARENT]) == _PARENT
    assert merge_expositions([]) == ""


def test_labels_with_braces_and_spaces_in_values_stay_one_series() -> None:
    text = 'x_total{path="/a b}",code="200"} 1\n'
    assert merge_expositions([text, text]) == 'x_total{path="/a b}",code="200"} 2\n'


def test_restart_budget_bounds_restarts_per_window() -> None:
    budget = RestartBudget(max_restarts=2, window=60.0)
    assert budget.allow(0.0)
    assert budget.allow(1.0)
    assert not budget.allow(2.0)
    assert budget.allow(60.0)  # the first restart left the window
    assert not budget.allow(60.5)
