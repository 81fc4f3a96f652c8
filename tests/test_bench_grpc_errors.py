"""``make bench``'s gRPC rows count the calls that failed, whatever the proxy answered.

h2load counts a call as succeeded on any 2xx :status, so a proxy's gRPC error (grpc-status
other than 0 with :status 200) passed as a success and counted toward rps. The bench now
compares the calls h2load completed with the calls the gRPC backend answered OK, reads
h2load's :status classes and the reply messages it received (a trailers-only error carries
none), reports rps of successful calls only, flags rows above ``ERROR_RATE_LIMIT`` and fails
an rps goal measured on such a row. Gossamer's own count of failed responses is a
cross-check.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root holds bench/

from bench import backends, gossamer, loadgen, report
from bench.goals import GOALS, evaluate
from bench.loadgen import (
    ERROR_RATE_LIMIT,
    GrpcFailures,
    H2loadSummary,
    LoadResult,
    grpc_failures,
    parse_h2load,
)
from bench.measured import RowErrors, TargetResult
from bench.procs import UNPINNED, process_group

# h2load 1.52's summary of a run where the proxy answered 5 calls with a 503 and the other
# 9,995 with :status 200, of which 95 were gRPC errors in trailers (which h2load cannot see):
# only 9,900 replies of 21 bytes (207,900 bytes of data) came back.
REPLY = len(backends.GRPC_MESSAGE)
H2LOAD_OUT = """starting benchmark...
spawning thread #0: 64 total client(s). Timing-based test with 0s of warm-up time and 2s of \
main duration for measurements.
Application protocol: h2c
Warm-up started for thread #0.
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 2.00s, 5000.00 req/s, 390.63KB/s
requests: 10000 total, 10640 started, 10000 done, 9995 succeeded, 5 failed, 0 errored, \
0 timeout
status codes: 9995 2xx, 0 3xx, 0 4xx, 5 5xx
traffic: 781.25KB (800000) total, 195.31KB (200000) headers (space savings 90.00%), \
203.03KB (207900) data
"""


def summary(
    done: int = 10_000, succeeded: int = 10_000, replies: int = 10_000, started: int = 10_640
) -> H2loadSummary:
    return H2loadSummary(2.0, started, done, succeeded, {"2xx": succeeded}, replies * REPLY)


def test_h2load_summary_is_parsed_with_its_status_classes() -> None:
    parsed = parse_h2load(H2LOAD_OUT)
    assert parsed.seconds == 2.0
    assert (parsed.started, parsed.done, parsed.succeeded, parsed.failed) == (10640, 10000, 9995, 5)
    assert parsed.statuses == {"2xx": 9995, "3xx": 0, "4xx": 0, "5xx": 5}
    assert parsed.data_bytes == 9_900 * REPLY
    in_ms = H2LOAD_OUT.replace("finished in 2.00s", "finished in 500.50ms")
    assert parse_h2load(in_ms).seconds == pytest.approx(0.5005)


@pytest.mark.parametrize(
    "broken",
    [
        "",
        H2LOAD_OUT.replace("status codes:", "codes:"),  # no status classes
        H2LOAD_OUT.replace("(207900) data", "data"),  # no data bytes
        H2LOAD_OUT.replace("9995 succeeded", "10001 succeeded"),  # more succeeded than done
        H2LOAD_OUT.replace("10640 started", "9000 started"),  # more done than started
        H2LOAD_OUT.replace("finished in 2.00s", "finished in 0.00s"),
    ],
)
def test_h2load_output_that_is_missing_or_inconsistent_is_an_error(broken: str) -> None:
    with pytest.raises(RuntimeError, match="h2load output"):
        parse_h2load(broken)


def test_grpc_errors_with_status_200_are_the_calls_that_came_back_without_a_reply() -> None:
    # every call had :status 200, but only 9,900 replies came back: 100 were trailers-only
    # gRPC errors
    assert grpc_failures(summary(replies=9_900), REPLY) == GrpcFailures(100, 100, None)


def test_grpc_errors_are_the_calls_the_backend_never_answered() -> None:
    # a reply for every call, but the backend answered only 9,900 (a proxy made up replies)
    assert grpc_failures(summary(), REPLY, answered=9_900) == GrpcFailures(100, 0, 100)
    # both counts are lower bounds: the larger one counts
    assert grpc_failures(summary(replies=9_950), REPLY, 9_800) == GrpcFailures(200, 50, 200)
    assert grpc_failures(summary(replies=9_800), REPLY, 9_950) == GrpcFailures(200, 200, 50)


def test_non_2xx_statuses_and_resets_count_even_when_the_backend_answered() -> None:
    # the backend answered every call; the proxy lost 5 answers on the way back (5xx) after
    # their replies had passed
    assert grpc_failures(summary(succeeded=9_995), REPLY, 10_000) == GrpcFailures(5, 0, 0)


def test_backend_answers_beyond_the_completed_calls_are_no_negative_errors() -> None:
    # calls in flight when h2load stopped reached the backend but are not "done"
    assert grpc_failures(summary(replies=10_002), REPLY, 10_300) == GrpcFailures(0, 0, 0)


def test_a_reply_size_that_cannot_be_is_an_error() -> None:
    with pytest.raises(ValueError, match="5-byte prefix"):
        grpc_failures(summary(), 0)


def test_h2load_grpc_reports_rps_of_successful_calls_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fake_h2load(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        log = Path(argv[argv.index("--log-file") + 1])
        log.write_text("".join(f"0\t200\t{100 + i}\n" for i in range(100)))
        return subprocess.CompletedProcess(list(argv), 0, H2LOAD_OUT, "")

    monkeypatch.setattr(subprocess, "run", fake_h2load)
    counts: Iterator[int] = iter([1_000, 1_000 + 9_800])  # before and after the run
    with tempfile.NamedTemporaryFile() as body:
        Path(body.name).write_bytes(backends.GRPC_MESSAGE)
        run = loadgen.h2load_grpc(
            "http://127.0.0.1:1/bench.Echo/Unary",
            Path(body.name),
            64,
            2.0,
            UNPINNED,
            answered=lambda: next(counts),
        )
    assert (run.requests, run.errors, run.unanswered, run.unreplied) == (10_000, 200, 200, 100)
    assert run.rps == 9_800 / 2.0  # not 10,000 / 2.0: failed calls are no throughput
    assert run.statuses == {"2xx": 9995, "3xx": 0, "4xx": 0, "5xx": 5}
    assert run.error_rate == 0.02


def test_the_backend_counts_the_calls_it_answered_ok(tmp_path: Path) -> None:
    grpc = pytest.importorskip("grpc")
    with process_group(tmp_path, UNPINNED) as group:
        port = backends.start_grpc_server(group)
        assert backends.grpc_answered(port) == 0
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary("/bench.Echo/Unary")
            for _ in range(3):
                assert echo(backends.GRPC_MESSAGE[5:], timeout=10) == backends.GRPC_MESSAGE[5:]
            with pytest.raises(grpc.RpcError) as failed:
                channel.unary_unary("/bench.Echo/Missing")(b"", timeout=10)
            assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert backends.grpc_answered(port) == 3  # the failed call is not counted


@pytest.mark.parametrize("reply", [b"", b"-1", b"12a", b"9" * 21, b"\xff"])
def test_a_backend_count_that_is_not_a_count_is_an_error(reply: bytes) -> None:
    with pytest.raises(ValueError, match="not a count"):
        backends.parse_answered(reply)
    assert backends.parse_answered(b"42") == 42


def test_a_row_is_flagged_above_the_error_limit() -> None:
    assert ERROR_RATE_LIMIT == 0.001
    assert not RowErrors(1, 1_000).flagged  # exactly 0.1%
    assert RowErrors(2, 1_000).flagged
    assert not RowErrors(0, 0).flagged
    assert RowErrors(0, 10).format() == "0"
    assert RowErrors(3, 1_000).format() == "**3 (0.30%) ⚠**"
    assert RowErrors(1, 1_000).format() == "1 (0.10%)"


def grpc_target(name: str, rps: float, errors: int, requests: int = 10_000) -> TargetResult:
    result = TargetResult("grpc-mtls", name)
    for c in (1, 16, 64):
        result.add_run(LoadResult(c, requests, 2.0, errors, rps, 100.0, 1000.0, 2000.0))
    return result


def test_an_rps_goal_is_not_met_when_the_row_has_too_many_errors() -> None:
    goal = next(g for g in GOALS if g.topology == "grpc-mtls" and g.error_row == 64)
    envoy = grpc_target("envoy", 1_000.0, 0)
    failing = {"gossamer": grpc_target("gossamer", 2_000.0, 50), "envoy": envoy}
    verdict = evaluate(goal, failing)
    assert verdict.measured is not None
    assert verdict.measured.median == 2.0
    assert verdict.too_many_errors
    assert verdict.met is False
    healthy = {"gossamer": grpc_target("gossamer", 2_000.0, 10), "envoy": envoy}
    assert evaluate(goal, healthy).met is True  # 10 of 10,000 is 0.1%: not above the limit
    table = "\n".join(report.goals_table([verdict], None))
    assert "✗ errors 0.50% > 0.1%" in table


def test_every_rps_goal_of_a_request_topology_is_gated_by_its_errors() -> None:
    rps_goals = [g for g in GOALS if "rps" in g.title and g.topology != "tap"]
    assert rps_goals
    assert all(g.error_row == 64 for g in rps_goals)


def test_the_grpc_section_shows_each_rows_errors_and_flags_the_rows_above_the_limit() -> None:
    by = {
        "direct": grpc_target("direct", 3_000.0, 0),
        "gossamer": grpc_target("gossamer", 2_000.0, 50),
        "envoy": grpc_target("envoy", 1_000.0, 1),
    }
    text = report.markdown({"grpc-mtls": by}, {"grpc-mtls": "gRPC"}, {})
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("|")}
    assert rows["direct"].rstrip().endswith("| 0 / 0 / 0 | 1 |")
    assert "**50 (0.50%) ⚠** / **50 (0.50%) ⚠** / **50 (0.50%) ⚠**" in rows["gossamer"]
    assert "1 (0.01%) / 1 (0.01%) / 1 (0.01%)" in rows["envoy"]
    assert "rps counts successful calls only" in text
    assert "⚠ Errors above 0.1%: gossamer c=1, gossamer c=16, gossamer c=64." in text


def sample(value: int, **labels: str) -> str:
    return "response_total{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + f"}} {value}"


OUT = {"direction": "outbound", "authority": "a", "status_code": "200"}
METRICS = "\n".join(
    [
        "# HELP response_total Total count of HTTP responses.",
        "# TYPE response_total counter",
        sample(9000, **OUT, classification="success", grpc_status="0", error=""),
        sample(270, **OUT, classification="failure", grpc_status="14", error=""),
        sample(3, **OUT, classification="failure", grpc_status="4", error=""),
        sample(2, authority='a\\"b', status_code="503", classification="failure", error=""),
        sample(1, status_code="", classification="failure", error="connect timeout"),
        'request_total{direction="outbound",classification="failure"} 99',
    ]
)


def test_gossamers_failed_responses_are_read_from_its_metrics_by_reason() -> None:
    failed = gossamer.parse_failed_responses(METRICS)
    assert failed == {
        "grpc_status=14": 270,
        "grpc_status=4": 3,
        "status_code=503": 2,
        "error=connect timeout": 1,
    }
    assert gossamer.parse_failed_responses("garbage\nresponse_total{broken 3\n") == {}


def test_a_pair_publishes_its_admin_ports_and_other_targets_none() -> None:
    info = {"admin_ports": "gossamer-outbound=4191,gossamer-inbound=4192"}
    assert gossamer.admin_ports(info) == {"gossamer-outbound": 4191, "gossamer-inbound": 4192}
    assert gossamer.admin_ports({}) == {}


def test_the_proxies_own_failure_count_is_shown_beside_the_errors() -> None:
    result = grpc_target("gossamer", 2_000.0, 270)
    result.runs[64] = [
        dataclasses.replace(
            run,
            proxy_failures={"gossamer-outbound": {"grpc_status=14": 270}, "gossamer-inbound": {}},
        )
        for run in result.runs[64]
    ]
    text = report.markdown({"grpc-mtls": {"gossamer": result}}, {"grpc-mtls": "gRPC"}, {})
    assert "gossamer c=64: gossamer-outbound 270 (grpc_status=14: 270); gossamer-inbound 0" in text
