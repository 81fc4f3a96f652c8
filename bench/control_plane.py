"""``make bench-control-plane``: identity, destination and webhook against one real apiserver.

Starts the test cluster once (etcd, kube-apiserver, controller-manager, scheduler, kwok) and
runs, one after the other, with each component as its own process on loopback:

- identity: certificates signed per second (CSR checks, TokenReview, ECDSA P-256 signature),
- destination: how long one EndpointSlice change takes to reach the last of 1,000 ``Get``
  streams (p50 and p99),
- webhook: the injector's time per AdmissionReview (p99) for 1,000 pod creations, next to the
  pod POST as the client sees it.

Each benchmark is bounded by a count and a wall-clock limit; one that fails is reported and the
others still run. Results go beside ``make bench``'s: bench/results/control-plane.md and
control-plane.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
BENCHMARKS = ("identity", "destination", "webhook")
MARKDOWN_NAME = "control-plane.md"
JSON_NAME = "control-plane.json"


def _token_note(result: dict[str, Any]) -> str:
    """How many distinct tokens the identity run presented (absent from older results)."""
    if "tokens" not in result:
        return ""
    repeats = float(result.get("token_repeats_within_cache_ttl", 0.0))
    return (
        f"; {result['tokens']:,} distinct tokens, {repeats:.1%} presented again within the "
        "apiserver's 10 s token cache"
    )


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value

    return parse


def _bounded_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{value} is outside (0, 3600] seconds")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.control_plane", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), help="which to run"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="output directory")
    identity = parser.add_argument_group("identity")
    identity.add_argument("--certificates", type=_bounded_int(1, 100_000), default=3000)
    identity.add_argument("--identity-concurrency", type=_bounded_int(1, 512), default=32)
    identity.add_argument("--identity-seconds", type=_bounded_seconds, default=30.0)
    identity.add_argument(
        "--identity-tokens", type=_bounded_int(1, 200_000), default=None,
        help="distinct tokens the requests rotate through (default: one per request)",
    )  # fmt: skip
    destination = parser.add_argument_group("destination")
    destination.add_argument("--streams", type=_bounded_int(1, 10_000), default=1000)
    destination.add_argument("--endpoints", type=_bounded_int(1, 10_000), default=1000)
    destination.add_argument("--changes", type=_bounded_int(1, 1000), default=40)
    destination.add_argument("--destination-seconds", type=_bounded_seconds, default=180.0)
    destination.add_argument(
        "--client",
        choices=("lean", "grpcio"),
        default="lean",
        help="how the streams are read (see bench/destination_bench.py)",
    )
    webhook = parser.add_argument_group("webhook")
    webhook.add_argument("--pods", type=_bounded_int(1, 10_000), default=1000)
    webhook.add_argument("--webhook-concurrency", type=_bounded_int(1, 256), default=8)
    return parser.parse_args(argv)


# -- running ---------------------------------------------------------------------------------


def run_benchmarks(args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Start the cluster, run the chosen benchmarks; (results by name, metadata)."""
    from gossamer_kube.testing.cluster import KubeTestCluster

    from bench import destination_bench, identity_bench, webhook_bench

    def identity(cluster: KubeTestCluster, workdir: Path) -> dict[str, Any]:
        return identity_bench.measure(
            cluster, workdir, requests=args.certificates,
            concurrency=args.identity_concurrency, seconds=args.identity_seconds,
            tokens=args.identity_tokens,
        )  # fmt: skip

    def destination(cluster: KubeTestCluster, workdir: Path) -> dict[str, Any]:
        return destination_bench.measure(
            cluster, workdir, streams=args.streams, endpoints=args.endpoints,
            iterations=args.changes, seconds=args.destination_seconds, client=args.client,
        )  # fmt: skip

    def webhook(cluster: KubeTestCluster, workdir: Path) -> dict[str, Any]:
        return webhook_bench.measure(
            cluster, workdir, pods=args.pods, concurrency=args.webhook_concurrency
        )

    runners = {"identity": identity, "destination": destination, "webhook": webhook}
    results: dict[str, dict[str, Any]] = {}
    wall: dict[str, str] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gossamer-cp-bench-") as tmp:
        cluster = KubeTestCluster()
        cluster.start()
        wall["cluster start"] = f"{time.monotonic() - started:.0f}s"
        try:
            for name in BENCHMARKS:
                if name not in args.only:
                    continue
                print(f"{name} ...", file=sys.stderr, flush=True)
                workdir = Path(tmp) / name
                workdir.mkdir()
                began = time.monotonic()
                try:
                    results[name] = runners[name](cluster, workdir)
                except Exception as exc:  # reported; the other benchmarks still run
                    text = f"{type(exc).__name__}: {exc}"
                    results[name] = {"error": text.splitlines()[0][:300], "detail": text[-3000:]}
                    print(f"  {name}: {text[-3000:]}", file=sys.stderr)
                wall[name] = f"{time.monotonic() - began:.0f}s"
        finally:
            cluster.stop()
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "setup": "one test cluster on loopback; each component its own process, sharing the cores",
        "wall time": {**wall, "total": f"{time.monotonic() - started:.0f}s"},
    }
    return results, meta


# -- reporting -------------------------------------------------------------------------------


def _ms(value: Any) -> str:
    return "—" if value is None else f"{float(value):,.1f} ms"


def _rows(name: str, result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, value, details) rows for one benchmark's result."""
    if "error" in result:
        return [(f"{name}: failed", "—", str(result["error"]))]
    if name == "identity":
        return [
            (
                "identity: certificates/s",
                f"{float(result['certs_per_second']):,.1f}",
                f"{result['issued']:,} issued, {result['failed']} failed in "
                f"{result['seconds']} s at concurrency {result['concurrency']}; identity CPU "
                f"{result['identity_cpu_ms_per_cert']} ms per certificate"
                f"{_token_note(result)}",
            )
        ]
    if name == "destination":
        latency = result["change_to_last_stream_ms"]
        streams = f"{result['streams']:,}"
        details = (
            f"{result['iterations']} changes of one EndpointSlice ({result['endpoints']:,} "
            f"endpoints); max {_ms(latency['max'])}; destination RSS "
            f"{result['destination_rss_mib']} MiB"
        )
        return [
            (f"destination: propagation p50 to {streams} streams", _ms(latency["median"]), details),
            (
                f"destination: propagation p99 to {streams} streams",
                _ms(latency["p99"]),
                f"target ≤ {result.get('target_p99_ms', 200)} ms; {_destination_parts(result)}",
            ),
        ]
    if name == "webhook":
        hook, client = result["webhook"], result["client"]
        return [
            (
                "webhook: p99 per review (injector)",
                _ms(hook["p99_ms"]),
                f"{result['pods']:,} pods at concurrency {result['concurrency']}, "
                f"{result['injected']:,} injected; p50 {_ms(hook['p50_ms'])}",
            ),
            (
                "webhook: p99 pod create through the apiserver",
                _ms(client["p99_ms"]),
                f"p50 {_ms(client['p50_ms'])} (includes the apiserver's webhook call)",
            ),
        ]
    raise ValueError(f"unknown benchmark {name!r}")


def _destination_parts(result: dict[str, Any]) -> str:
    """The client, the destination's CPU per change and the median split of the latency."""
    parts = [f"client {result.get('client', 'grpcio')}"]
    if "destination_cpu_ms_per_change" in result:
        parts.append(f"destination CPU {result['destination_cpu_ms_per_change']} ms per change")
    median = (result.get("breakdown_ms") or {}).get("median")
    if median:
        own = median["queued"] + median["refresh"] + median["write"]
        parts.append(
            f"median split: apiserver {_ms(median['apiserver'])}, destination {_ms(own)}, "
            f"then {_ms(median['to_last_stream'])} to the last stream"
        )
    return "; ".join(parts)


def markdown(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = ["# Gossamer control-plane benchmark", ""]
    for key, value in meta.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        lines.append(f"- {key}: {value}")
    lines += ["", "| benchmark | result | details |", "|---|---|---|"]
    for name in BENCHMARKS:
        if name in results:
            lines += [f"| {what} | {value} | {details} |" for what, value, details in _rows(
                name, results[name]
            )]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_results(
    results: dict[str, dict[str, Any]], meta: dict[str, Any], directory: Path
) -> tuple[Path, Path]:
    """Write the table and the JSON into ``directory``; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    table = directory / MARKDOWN_NAME
    data = directory / JSON_NAME
    table.write_text(markdown(results, meta))
    data.write_text(json.dumps({"meta": meta, **results}, indent=2) + "\n")
    return table, data


def failed(results: dict[str, dict[str, Any]]) -> list[str]:
    """Benchmarks that errored or saw failed requests."""
    bad = []
    for name, result in results.items():
        if (
            "error" in result
            or result.get("failed")
            or (name == "webhook" and result["injected"] != result["pods"])
        ):
            bad.append(name)
    return bad


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results, meta = run_benchmarks(args)
    table, data = write_results(results, meta, args.results)
    print(table.read_text())
    print(f"written: {table}, {data}", file=sys.stderr)
    bad = failed(results)
    if bad:
        print(f"bench-control-plane: failed: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
