"""``make bench-control-plane``'s entry point: arguments, the table and the JSON it writes.

The benchmark itself starts a cluster and runs for minutes; this only checks the module
imports (with the three benchmarks it drives) and that its report says what the README
promises: certificates/s, destination propagation p50/p99 to 1,000 streams, webhook p99.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root holds bench/

from bench import control_plane

RESULTS = {
    "identity": {
        "benchmark": "identity_certify", "concurrency": 32, "issued": 3000, "failed": 0,
        "seconds": 10.5, "certs_per_second": 285.7, "identity_cpu_ms_per_cert": 2.4,
    },
    "destination": {
        "benchmark": "destination_get_fanout", "streams": 1000, "endpoints": 1000,
        "iterations": 40, "subscribe_all_seconds": 3.2,
        "change_to_last_stream_ms": {"median": 41.25, "p99": 88.5, "max": 90.1, "min": 30.0},
        "destination_rss_mib": 140.2, "destination_rss_after_subscribe_mib": 138.0,
        "target_p99_ms": 200,
    },
    "webhook": {
        "mode": "apiserver", "pods": 1000, "concurrency": 8, "injected": 1000,
        "webhook": {"count": 1000, "p50_ms": 1.2, "p90_ms": 2.0, "p99_ms": 3.75, "max_ms": 9.0,
                    "mean_ms": 1.4},
        "client": {"count": 1000, "p50_ms": 12.0, "p90_ms": 20.0, "p99_ms": 31.0, "max_ms": 50.0,
                   "mean_ms": 14.0},
    },
}  # fmt: skip
META = {"date": "2026-12-07T14:00:00+00:00", "wall time": {"identity": "40s", "total": "300s"}}


def test_the_module_and_the_benchmarks_it_drives_import() -> None:
    for name in ("bench.identity_bench", "bench.destination_bench", "bench.webhook_bench"):
        module = importlib.import_module(name)
        assert callable(module.measure)


def test_defaults_run_all_three_at_readme_sizes() -> None:
    args = control_plane.parse_args([])
    assert args.only == ["identity", "destination", "webhook"]
    assert (args.streams, args.endpoints, args.pods) == (1000, 1000, 1000)
    assert args.results == Path(control_plane.__file__).parent / "results"


@pytest.mark.parametrize(
    "argv",
    [["--streams", "0"], ["--pods", "100000"], ["--only", "proxy"], ["--identity-seconds", "-1"],
     ["--certificates", "many"]],
)  # fmt: skip
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        control_plane.parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_report_has_the_three_readme_figures(tmp_path: Path) -> None:
    table, data = control_plane.write_results(RESULTS, META, tmp_path / "results")
    text = table.read_text()
    assert "| identity: certificates/s | 285.7 |" in text
    assert "| destination: propagation p50 to 1,000 streams | 41.2 ms |" in text
    assert "| destination: propagation p99 to 1,000 streams | 88.5 ms |" in text
    assert "| webhook: p99 per review (injector) | 3.8 ms |" in text
    assert "wall time: identity 40s, total 300s" in text
    written = json.loads(data.read_text())
    assert written["meta"] == META
    assert written["destination"]["change_to_last_stream_ms"]["p99"] == 88.5
    assert control_plane.failed(RESULTS) == []


def test_a_failed_benchmark_is_reported_and_fails_the_run(tmp_path: Path) -> None:
    results = {**RESULTS, "identity": {"error": "TimeoutError: identity never became ready"}}
    table, _ = control_plane.write_results(results, META, tmp_path)
    assert "| identity: failed | — | TimeoutError: identity never became ready |" in (
        table.read_text()
    )
    assert "webhook: p99 per review" in table.read_text()  # the others are still there
    assert control_plane.failed(results) == ["identity"]
    short = {**RESULTS, "webhook": {**RESULTS["webhook"], "injected": 999}}
    assert control_plane.failed(short) == ["webhook"]


def test_main_runs_the_chosen_benchmarks_and_writes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = []

    def fake_run(args: object) -> tuple[dict[str, object], dict[str, object]]:
        seen.append(args)
        return {"destination": RESULTS["destination"]}, META

    monkeypatch.setattr(control_plane, "run_benchmarks", fake_run)
    code = control_plane.main(["--only", "destination", "--results", str(tmp_path)])
    assert code == 0
    assert seen[0].only == ["destination"]  # type: ignore[attr-defined]
    assert "propagation p99 to 1,000 streams | 88.5 ms" in capsys.readouterr().out
    assert (tmp_path / "control-plane.json").exists()


def test_destination_row_names_the_client_and_where_the_time_went(tmp_path: Path) -> None:
    destination = {
        **RESULTS["destination"],
        "client": "lean",
        "target_p99_ms": 60,
        "destination_cpu_ms_per_change": 3.5,
        "breakdown_ms": {
            "changes": 40,
            "median": {"apiserver": 9.0, "queued": 0.1, "refresh": 2.0, "write": 0.4,
                       "to_first_stream": 0.1, "to_last_stream": 0.5, "total": 12.0},
        },
    }  # fmt: skip
    table, _ = control_plane.write_results({"destination": destination}, META, tmp_path)
    text = table.read_text()
    assert "target ≤ 60 ms; client lean; destination CPU 3.5 ms per change" in text
    assert "median split: apiserver 9.0 ms, destination 2.5 ms, then 0.5 ms" in text
