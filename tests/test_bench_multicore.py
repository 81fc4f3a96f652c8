"""``make bench``'s multi-core topology: process-tree accounting, placement, its own section.

The accounting is checked on /proc text written by hand, plus one real child process (no
timing); the report on results built by hand, as the harness would record them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root holds bench/

from bench import __main__ as bench_main
from bench import report
from bench.goals import verdicts
from bench.loadgen import LoadResult
from bench.measured import TargetResult
from bench.procs import (
    PINNED,
    UNPINNED,
    Placement,
    ProcStat,
    descendants,
    peak_rss_mb,
    process_tree,
    tree_cpu_ticks,
)
from bench.rounds import Spread
from bench.scaling import ScalingCheck, ScalingSet, rps_ratio
from bench.topologies import TOPOLOGIES, placement_note


def stat_line(pid: int, name: str, ppid: int, ticks: tuple[int, int, int, int]) -> str:
    """A /proc/<pid>/stat line: utime, stime, cutime, cstime are fields 14 to 17."""
    utime, stime, cutime, cstime = ticks
    fields = ["S", str(ppid), *["0"] * 9, str(utime), str(stime), str(cutime), str(cstime)]
    fields += ["20", "0", "3", "0", "12345"]
    return f"{pid} ({name}) " + " ".join(fields)


# -- process-tree accounting -------------------------------------------------------------------


def test_a_stat_line_gives_the_parent_and_own_and_reaped_ticks() -> None:
    stat = ProcStat.parse(stat_line(42, "python3 -m x) (y", 7, (100, 20, 30, 4)))
    assert stat == ProcStat(ppid=7, own_ticks=120, reaped_children_ticks=34)


@pytest.mark.parametrize("text", ["", "42 (python", "42 (python) S 1 2"])
def test_a_stat_line_that_is_cut_short_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="stat line"):
        ProcStat.parse(text)


def test_descendants_follow_every_generation_and_skip_strangers() -> None:
    parents = {10: 1, 11: 10, 12: 10, 13: 12, 20: 1, 21: 20}
    assert descendants(10, parents) == [11, 12, 13]
    assert descendants(13, parents) == []
    assert descendants(99, parents) == []


def test_descendants_end_on_a_loop_of_reused_pids() -> None:
    assert descendants(10, {11: 10, 12: 11, 10: 12}) == [11, 12]


def test_a_multicore_proxy_costs_its_parent_its_workers_and_its_exited_workers() -> None:
    stats = {
        100: ProcStat(ppid=1, own_ticks=50, reaped_children_ticks=7),  # parent; 7: a dead worker
        101: ProcStat(ppid=100, own_ticks=40, reaped_children_ticks=0),  # worker 1
        102: ProcStat(ppid=100, own_ticks=45, reaped_children_ticks=0),  # worker 2
        200: ProcStat(ppid=1, own_ticks=1000, reaped_children_ticks=0),  # the load generator
    }
    assert tree_cpu_ticks(100, stats) == 50 + 7 + 40 + 45
    # a single-process proxy costs what it did before
    assert tree_cpu_ticks(200, stats) == 1000
    # a pid gone between the scan and the sum is skipped
    assert tree_cpu_ticks(300, stats) == 0


def test_a_live_child_is_in_the_tree_and_its_rss_in_the_sum() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        tree = process_tree(os.getpid())
        assert tree[0] == os.getpid()
        assert child.pid in tree
        own = peak_rss_mb(child.pid)
        assert own > 0
        assert peak_rss_mb(os.getpid()) > own  # this process and the child, summed
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)


def test_results_keep_each_process_count_and_sum_rss_over_processes() -> None:
    result = TargetResult("multicore", "gossamer-mtls")
    result.record_rss({"gossamer-inbound": 60.0, "gossamer-outbound": 58.0})
    result.record_processes({"gossamer-inbound": 2, "gossamer-outbound": 1})
    result.record_processes({"gossamer-inbound": 1, "gossamer-outbound": 2})
    assert result.processes == {"gossamer-inbound": 2, "gossamer-outbound": 2}
    assert result.total_rss_mb() == 118.0
    assert TargetResult("multicore", "x").total_rss_mb() is None


# -- placement ----------------------------------------------------------------------------------


def test_pinned_targets_and_load_run_under_taskset_and_unpinned_ones_do_not() -> None:
    assert PINNED.prefix() == ["taskset", "-c", "0"]
    assert PINNED.prefix(load=True) == ["taskset", "-c", "1"]
    assert UNPINNED.prefix() == UNPINNED.prefix(load=True) == []
    assert Placement("0,1", None).describe() == (
        "proxies and backends on CPU 0,1, load generator unpinned"
    )


def test_the_header_says_where_each_topology_ran() -> None:
    by_name = {t.name: t for t in TOPOLOGIES}
    assert placement_note([by_name["http1"]]) == (
        "proxies and backends on CPU 0, load generator on CPU 1"
    )
    both = placement_note([by_name["http1"], by_name["tcp"], by_name["multicore"]])
    assert both == (
        "proxies and backends on CPU 0, load generator on CPU 1 (http1, tcp); "
        "nothing pinned: proxies, backend and load generator share every CPU (multicore)"
    )


# -- the topology ------------------------------------------------------------------------------


def test_the_multicore_topology_compares_two_cores_with_one_and_envoy_unpinned() -> None:
    multicore = next(t for t in TOPOLOGIES if t.name == "multicore")
    assert multicore.placement == UNPINNED
    assert multicore.connections == (64,)
    assert multicore.scaling is not None
    assert multicore.scaling.cores == 2
    assert [s.targets for s in multicore.scaling.sets] == [
        ("gossamer", "gossamer-1core", "envoy", "envoy-1worker"),
        ("gossamer-mtls", "gossamer-mtls-1core", "envoy-mtls", "envoy-mtls-1worker"),
    ]
    assert set(multicore.builders()) == {n for s in multicore.scaling.sets for n in s.targets}
    assert all(t.placement == PINNED for t in TOPOLOGIES if t.name != "multicore")
    assert bench_main.parse_args(["--only", "multicore"]).only == ["multicore"]


def test_a_scaling_check_needs_two_cores_and_targets_in_one_set_each() -> None:
    one = ScalingSet("a", "g", "g1", "e", "e1")
    with pytest.raises(ValueError, match="two cores"):
        ScalingCheck(1, "x", (one,))
    with pytest.raises(ValueError, match="one set only"):
        ScalingCheck(2, "x", (one, ScalingSet("b", "g", "g2", "e2", "e1")))


# -- the report --------------------------------------------------------------------------------


def measured(
    name: str, rps: list[float], cpu: list[float], rss: dict[str, float], processes: int = 2
) -> TargetResult:
    result = TargetResult("multicore", name)
    for value in rps:
        result.add_run(LoadResult(64, int(value), 1.0, 0, value, 900.0, 4000.0, 8000.0))
    result.cpu_seconds_per_10k += cpu
    result.record_rss(rss)
    result.record_processes(dict.fromkeys(rss, processes))
    return result


def multicore_results() -> dict[str, TargetResult]:
    return {
        "gossamer": measured("gossamer", [1500.0, 1800.0, 1600.0], [2.5], {"gossamer": 80.0}),
        "gossamer-1core": measured(
            "gossamer-1core", [1000.0, 1000.0, 1000.0], [2.0], {"gossamer-1core": 40.0}, 1
        ),
        # Envoy's two workers are threads of one process
        "envoy": measured("envoy", [3000.0, 3000.0, 3200.0], [0.5], {"envoy": 30.0}, 1),
        "envoy-1worker": measured(
            "envoy-1worker", [2000.0, 2500.0, 2000.0], [0.4], {"envoy": 25.0}, 1
        ),
    }


SINGLE_HOP = ScalingCheck(2, "nothing pinned", (ScalingSet("one hop", *multicore_results()),))


def test_the_scaling_figure_is_two_cores_over_one_paired_by_round() -> None:
    by = multicore_results()
    assert rps_ratio(by, "gossamer", "gossamer-1core", 64) == Spread(1.6, 1.5, 1.8, 3)
    assert rps_ratio(by, "gossamer", "missing", 64) is None


def test_the_multicore_section_states_the_setup_and_sums_each_target() -> None:
    text = "\n".join(report.multicore_section(multicore_results(), SINGLE_HOP))
    assert text.startswith("Setup: nothing pinned. Gossamer runs with `LINKERD2_PROXY_CORES=2`")
    assert "the load generator and the backend compete with the proxy" in text
    assert "a scaling check, not a per-core ratio" in text
    assert (
        "- Scaling, one hop, rps at c=64 (paired by round): Gossamer 2 cores ÷ 1 core "
        "**1.60x (1.50-1.80)**; Envoy 2 workers ÷ 1, on the same machine: 1.50x (1.20-1.60); "
        "Gossamer 2 cores ÷ Envoy 2 workers: 0.50x (0.50-0.60)" in text
    )
    assert "| one hop | gossamer | 2 | 2 | 1,600 | 1.60x (1.50-1.80) | 0.50x (0.50-0.60) " in text
    assert "| 2.500 | 80 MB | 3 |" in text
    # one core against Envoy's one worker; Envoy against its own one worker
    assert "| one hop | gossamer-1core | 1 | 1 | 1,000 | — | 0.50x (0.40-0.50) |" in text
    assert "| one hop | envoy | 2 workers | 1 | 3,000 | 1.50x (1.20-1.60) | — |" in text
    assert "| one hop | envoy-1worker | 1 worker | 1 | 2,000 | — | — |" in text


def test_a_pair_sums_both_proxies_and_an_extra_target_still_gets_a_row() -> None:
    by = multicore_results()
    by["gossamer"].peak_rss_mb = {"gossamer-inbound": 70.0, "gossamer-outbound": 66.0}
    by["baseline"] = measured("baseline", [1400.0], [2.6], {"gossamer": 79.0})
    text = "\n".join(report.multicore_section(by, SINGLE_HOP))
    assert "| 136 MB (gossamer-inbound 70 MB, gossamer-outbound 66 MB) |" in text
    assert "| — | baseline | — | 2 | 1,400 | — | — |" in text


def test_the_multicore_run_has_its_own_section_and_no_goal() -> None:
    by = multicore_results()
    assert verdicts({"multicore": by}) == []
    text = report.markdown(
        {"multicore": by},
        {"multicore": "Multi-core scaling check"},
        {"cpus": "nothing pinned"},
        verdicts({"multicore": by}),
        scaling={"multicore": SINGLE_HOP},
    )
    assert "## Goals" not in text
    assert "## Multi-core scaling check (`multicore`)" in text
    assert "**1.60x (1.50-1.80)**" in text
    assert "| rps ÷ Envoy |" not in text  # not the per-core table
