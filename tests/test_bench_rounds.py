"""``make bench``'s pure parts: the interleaving schedule, per-round ratios, goal verdicts.

Nothing here starts a process: the results are built by hand, as the harness would record
them round by round, and the report and verdicts are checked against them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root holds bench/

from bench import __main__ as bench_main
from bench import report
from bench.goals import GOALS, Goal, Verdict, evaluate, verdicts
from bench.loadgen import LoadResult
from bench.measured import TapSeen, TargetResult, median_run
from bench.rounds import Spread, paired_ratios, schedule
from bench.topologies import TOPOLOGIES


def run(c: int, rps: float, p50: float = 100.0, p99: float = 1000.0) -> LoadResult:
    return LoadResult(c, int(rps), 1.0, 0, rps, p50, p99, p99 * 2)


def target(topology: str, name: str, rps: list[float], **kw: list[float]) -> TargetResult:
    """A target with one c=64 run per round (and c=1 runs when ``p50_c1`` is given)."""
    result = TargetResult(topology, name)
    for i, value in enumerate(rps):
        result.add_run(run(64, value, p99=kw.get("p99", [1000.0] * len(rps))[i]))
    for value in kw.get("p50_c1", []):
        result.add_run(run(1, 1000.0, p50=value))
    return result


# -- schedule ---------------------------------------------------------------------------------


def test_every_round_runs_every_target_once_and_the_first_one_rotates() -> None:
    rounds = schedule(["direct", "gossamer", "envoy"], 4)
    assert rounds == [
        ["direct", "gossamer", "envoy"],
        ["gossamer", "envoy", "direct"],
        ["envoy", "direct", "gossamer"],
        ["direct", "gossamer", "envoy"],
    ]
    assert [r[0] for r in rounds[:3]] == ["direct", "gossamer", "envoy"]


def test_two_targets_alternate_a_b_a_b() -> None:
    flat = [t for r in schedule(["a", "b"], 3) for t in r]
    assert flat == ["a", "b", "b", "a", "a", "b"]


@pytest.mark.parametrize(("targets", "rounds"), [(["a"], 0), (["a", "a"], 3)])
def test_a_schedule_needs_a_round_and_distinct_targets(targets: list[str], rounds: int) -> None:
    with pytest.raises(ValueError, match=r"round|repeat"):
        schedule(targets, rounds)


# -- ratios and spreads -----------------------------------------------------------------------


def test_ratios_are_paired_by_round_and_skip_missing_rounds() -> None:
    assert paired_ratios([10.0, 20.0, None, 30.0], [5.0, 10.0, 7.0, 0.0]) == [2.0, 2.0]
    # a target that failed after round 1 pairs only its first round
    assert paired_ratios([10.0], [5.0, 1.0, 1.0]) == [2.0]


def test_spread_is_the_median_with_its_range() -> None:
    spread = Spread.of([1.4, 1.1, 1.2])
    assert spread == Spread(1.2, 1.1, 1.4, 3)
    assert spread.width == pytest.approx(0.3)
    assert spread.format() == "1.20x (1.10-1.40)"
    assert Spread.of([]) is None
    assert Spread.of([2.0]).format() == "2.00x"  # type: ignore[union-attr]


def test_median_run_takes_each_field_median_over_rounds() -> None:
    result = target("http1", "gossamer", [100.0, 300.0, 200.0], p99=[9.0, 1.0, 5.0])
    median = median_run(result, 64)
    assert median is not None
    assert (median.rps, median.p99_us) == (200.0, 5.0)
    assert median_run(result, 16) is None


# -- goals ------------------------------------------------------------------------------------


def goal(topology: str, reference: str, threshold: float, higher: bool) -> Goal:
    return next(
        g
        for g in GOALS
        if g.topology == topology
        and g.reference == reference
        and g.threshold == threshold
        and g.higher_is_better is higher
    )


def test_rps_goal_uses_the_median_of_per_round_ratios() -> None:
    targets = {
        "gossamer": target("http1-mtls", "gossamer", [16.0, 14.0, 20.0]),
        "envoy": target("http1-mtls", "envoy", [10.0, 10.0, 10.0]),
    }
    verdict = evaluate(goal("http1-mtls", "envoy", 1.5, True), targets)
    assert verdict.measured == Spread(1.6, 1.4, 2.0, 3)
    assert verdict.met is True
    assert verdict.noisy  # range 0.6 > gap 0.1: another run could fall below 1.5


def test_a_clear_verdict_is_not_flagged_noisy() -> None:
    targets = {
        "gossamer": target("http1-mtls", "gossamer", [11.0, 12.0, 13.0]),
        "envoy": target("http1-mtls", "envoy", [10.0, 10.0, 10.0]),
    }
    verdict = evaluate(goal("http1-mtls", "envoy", 1.5, True), targets)
    assert verdict.met is False
    assert verdict.gap == pytest.approx(0.3)
    assert not verdict.noisy


def test_lower_is_better_goals_pass_at_or_below_the_threshold() -> None:
    cold = goal("http1-mtls-cold", "envoy", 1.0, False)
    targets = {
        "gossamer": target("http1-mtls-cold", "gossamer", [1, 1, 1], p99=[30e3, 40e3, 35e3]),
        "envoy": target("http1-mtls-cold", "envoy", [1, 1, 1], p99=[35e3, 35e3, 35e3]),
    }
    verdict = evaluate(cold, targets)
    assert verdict.measured is not None
    assert verdict.measured.median == pytest.approx(1.0)
    assert verdict.met is True


def test_added_latency_is_taken_over_direct_in_the_same_round() -> None:
    added = goal("http1", "envoy", 0.5, False)
    targets = {
        "direct": target("http1", "direct", [], p50_c1=[80.0, 100.0]),
        "gossamer": target("http1", "gossamer", [], p50_c1=[120.0, 150.0]),
        "envoy": target("http1", "envoy", [], p50_c1=[180.0, 200.0]),
    }
    # round 0: 40 / 100 = 0.4; round 1: 50 / 100 = 0.5
    assert added.measure(targets) == pytest.approx([0.4, 0.5])
    assert evaluate(added, targets).met is True


def test_rss_goal_is_absolute_and_takes_the_largest_proxy() -> None:
    rss = next(g for g in GOALS if g.topology == "http1-mtls" and g.unit == " MB")
    result = TargetResult("http1-mtls", "gossamer")
    result.record_rss({"gossamer-inbound": 35.0, "gossamer-outbound": 41.0})
    result.record_rss({"gossamer-inbound": 38.0, "gossamer-outbound": 39.0})  # a later round
    verdict = evaluate(rss, {"gossamer": result})
    assert verdict.measured == Spread(41.0, 41.0, 41.0, 1)
    assert verdict.met is False
    assert rss.wanted == "≤ 40 MB"


def test_baseline_column_allows_five_percent_either_way_of_better() -> None:
    rps = goal("http1", "envoy", 2.0, True)
    targets = {
        "gossamer": target("http1", "gossamer", [96.0, 95.0, 94.0]),
        "envoy": target("http1", "envoy", [50.0, 50.0, 50.0]),
        "baseline": target("http1", "baseline", [100.0, 100.0, 100.0]),
    }
    verdict = evaluate(rps, targets)
    assert verdict.baseline == Spread(0.95, 0.94, 0.96, 3)
    assert verdict.baseline_ok is True
    targets["gossamer"] = target("http1", "gossamer", [90.0, 92.0, 93.0])
    assert evaluate(rps, targets).baseline_ok is False
    # lower is better: 6% more p99 than the baseline is a regression
    p99 = goal("http1-mtls", "envoy", 1.0, False)
    worse = {
        "gossamer": target("http1-mtls", "gossamer", [1], p99=[1060.0]),
        "envoy": target("http1-mtls", "envoy", [1], p99=[2000.0]),
        "baseline": target("http1-mtls", "baseline", [1], p99=[1000.0]),
    }
    assert evaluate(p99, worse).baseline_ok is False
    assert evaluate(p99, {k: v for k, v in worse.items() if k != "baseline"}).baseline is None


def test_unmeasured_goals_have_no_verdict_and_missing_topologies_no_row() -> None:
    verdict = evaluate(goal("tcp", "envoy", 1.0, True), {"gossamer": TargetResult("tcp", "g")})
    assert verdict.met is None
    assert not verdict.noisy
    rows = verdicts({"tcp": {"gossamer": TargetResult("tcp", "gossamer")}})
    assert {v.goal.topology for v in rows} == {"tcp"}


def test_every_issue_21_goal_has_a_row() -> None:
    wanted = {(g.topology, g.reference, g.threshold, g.higher_is_better) for g in GOALS}
    assert {
        ("http1", "envoy", 2.0, True),
        ("http1", "nginx", 0.75, True),
        ("http1", "envoy", 0.5, False),
        ("http1-mtls", "envoy", 1.5, True),
        ("http1-mtls", "envoy", 1.0, False),
        ("http1-mtls-cold", "envoy", 1.0, False),
        ("grpc-mtls", "envoy", 1.0, True),
        ("grpc-mtls", "envoy", 1.0, False),
        ("tcp", "envoy", 1.0, True),
    } <= wanted
    rss = {g.topology for g in GOALS if g.unit == " MB" and g.threshold == 40.0}
    assert rss == {"http1", "http1-mtls", "grpc-mtls", "tcp"}


# -- report -----------------------------------------------------------------------------------


def test_goals_table_marks_each_row_and_explains_noise() -> None:
    targets = {
        "gossamer": target("http1-mtls", "gossamer", [16.0, 14.0, 20.0]),
        "envoy": target("http1-mtls", "envoy", [10.0, 10.0, 10.0]),
        "baseline": target("http1-mtls", "baseline", [15.0, 15.0, 15.0]),
    }
    found = [evaluate(goal("http1-mtls", "envoy", 1.5, True), targets)]
    text = "\n".join(report.goals_table(found, "gossamer@e01e59f"))
    assert "| ÷ gossamer@e01e59f |" in text
    assert (
        "| two hops with mTLS, rps at c=64 | 1.60x (1.40-2.00) of Envoy | ≥ 1.5x Envoy | ✓ ⚠ |"
        in text
    )
    assert "1.07x (0.93-1.33) ✓ |" in text
    assert "another run could give the other verdict: two hops with mTLS, rps at c=64." in text


def test_report_shows_medians_rounds_and_the_cold_table() -> None:
    cold = {
        "gossamer": target("http1-mtls-cold", "gossamer", [900.0, 1000.0], p99=[9e4, 7e4]),
        "envoy": target("http1-mtls-cold", "envoy", [800.0, 800.0], p99=[3e4, 3.5e4]),
    }
    text = report.markdown(
        {"http1-mtls-cold": cold},
        {"http1-mtls-cold": "cold"},
        {"rounds": 2},
        verdicts({"http1-mtls-cold": cold}),
    )
    assert "| gossamer | 950 | 100 µs | 80.00 ms | 2.50x (2.00-3.00) |" in text
    assert "| envoy | 800 |" in text
    assert "| 2 |" in text
    assert (
        "| two hops with mTLS, p99 at c=64, cold (no warm-up) | 2.50x (2.00-3.00) of Envoy" in text
    )
    assert "✗" in text


# -- arguments and targets ----------------------------------------------------------------------


def test_defaults_interleave_three_rounds_over_every_topology() -> None:
    args = bench_main.parse_args([])
    assert (args.rounds, args.seconds, args.cold_seconds, args.only) == (3, 5.0, 4.0, None)
    assert args.baseline_rev is None
    names = [t.name for t in TOPOLOGIES]
    assert "http1-mtls-cold" in names


@pytest.mark.parametrize(
    "argv", [["--rounds", "0"], ["--seconds", "0"], ["--only", "http3"], ["--cold-seconds", "-4"]]
)
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_main.parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_targets_include_nginx_cold_pairs_and_the_baseline() -> None:
    by_name = {t.name: t for t in TOPOLOGIES}
    assert list(by_name["http1"].builders()) == ["direct", "gossamer", "envoy", "nginx"]
    assert list(by_name["http1-mtls-cold"].builders("/venv/bin/python")) == [
        "gossamer",
        "envoy",
        "baseline",
    ]
    assert by_name["http1-mtls-cold"].cold
    baseline = by_name["tcp"].builders("/venv/bin/python")["baseline"]
    assert baseline.keywords == {"python": "/venv/bin/python"}  # type: ignore[attr-defined]


def test_verdict_flags_nothing_for_a_single_round() -> None:
    one = Verdict(GOALS[0], Spread(1.9, 1.9, 1.9, 1))
    assert one.met is False
    assert not one.noisy


# -- tap (issue 19) -----------------------------------------------------------------------------


def tap_goal(title_part: str) -> Goal:
    return next(g for g in GOALS if g.topology == "tap" and title_part in g.title)


def test_tap_served_but_idle_is_judged_within_noise_of_tap_off() -> None:
    rps = tap_goal("nobody tapping: rps")
    assert rps.within_noise
    assert rps.reference == "tap-off"
    # ratios 0.98, 1.02, 0.95: the range holds 1.0 -> within noise
    targets = {
        "gossamer": target("tap", "gossamer", [98.0, 102.0, 95.0]),
        "tap-off": target("tap", "tap-off", [100.0, 100.0, 100.0]),
    }
    verdict = evaluate(rps, targets)
    assert verdict.measured == Spread(0.98, 0.95, 1.02, 3)
    assert verdict.met is True
    assert not verdict.noisy  # within-noise goals carry no separate noise flag
    # every round slower, but the median within 3% of 1.0: still within noise
    targets["gossamer"] = target("tap", "gossamer", [98.0, 97.5, 99.0])
    assert evaluate(rps, targets).met is True
    # every round clearly slower: a measurable cost
    targets["gossamer"] = target("tap", "gossamer", [90.0, 92.0, 91.0])
    assert evaluate(rps, targets).met is False
    assert rps.wanted == "1x Tap-off within noise (range holds 1, or ±3%)"


def test_tap_cpu_goal_compares_cpu_per_request_with_tap_off() -> None:
    cpu = tap_goal("nobody tapping: CPU")
    idle, off = TargetResult("tap", "gossamer"), TargetResult("tap", "tap-off")
    idle.cpu_seconds_per_10k += [1.3, 1.25, 1.35]
    off.cpu_seconds_per_10k += [1.0, 1.0, 1.0]
    verdict = evaluate(cpu, {"gossamer": idle, "tap-off": off})
    assert verdict.measured is not None
    assert verdict.measured.median == pytest.approx(1.3)
    assert verdict.met is False


def test_tapping_at_full_load_must_lose_no_request() -> None:
    lost = tap_goal("requests lost")
    assert lost.target == "tapped"
    assert lost.reference == ""
    tapped = TargetResult("tap", "tapped")
    for errors in (0, 0):
        tapped.add_run(LoadResult(64, 1000, 5.0, errors, 200.0, 1.0, 2.0, 3.0))
    assert evaluate(lost, {"tapped": tapped}).met is True
    tapped.add_run(LoadResult(64, 1000, 5.0, 2, 200.0, 1.0, 2.0, 3.0))
    verdict = evaluate(lost, {"tapped": tapped})
    assert verdict.measured == Spread(0.0, 0.0, 2.0, 3)
    assert verdict.met is True  # the median round lost nothing ...
    assert verdict.noisy  # ... but one round did, and the report flags it


def test_tap_table_shows_ratios_to_tap_off_and_what_the_tap_client_saw() -> None:
    idle = target("tap", "gossamer", [980.0, 1000.0], p50_c1=[100.0, 110.0])
    off = target("tap", "tap-off", [1000.0, 1000.0], p50_c1=[100.0, 100.0])
    tapped = target("tap", "tapped", [700.0, 720.0])
    tapped.tap_seen += [TapSeen(3500, 9000, 3200, 2900), TapSeen(3600, 10800, 3600, 3600)]
    by = {"gossamer": idle, "tap-off": off, "tapped": tapped}
    text = report.markdown({"tap": by}, {"tap": "Tap"}, {}, verdicts({"tap": by}))
    assert "| gossamer | 990 | 0.99x (0.98-1.00) |" in text
    assert "6,800 of 7,100 requests, 19,800 events, 1,500 dropped (7.0%)" in text
    assert (
        "| tapping every request at c=64: requests lost (errors + non-2xx) | 0 (0-0) | ≤ 0 | ✓ |"
        in text
    )
    broken = target("tap", "tapped", [700.0])
    broken.tap_seen.append(TapSeen(10, 3, 1, 1, error="StreamTerminatedError: reset"))
    text = report.markdown({"tap": {"tapped": broken}}, {"tap": "Tap"}, {})
    assert "stream broke: StreamTerminatedError: reset" in text


def test_the_tap_topology_runs_its_tapped_target_at_c64_only() -> None:
    tap = next(t for t in TOPOLOGIES if t.name == "tap")
    assert list(tap.builders()) == ["gossamer", "tap-off", "tapped"]
    assert tap.rows_of("gossamer") == (1, 64)
    assert tap.rows_of("tapped") == (64,)
    assert bench_main.parse_args(["--only", "tap"]).only == ["tap"]
