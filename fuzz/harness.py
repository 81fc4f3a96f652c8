"""Runs one fuzz target under atheris (libFuzzer) and records what it finds.

``python -m fuzz.harness TARGET --runs N --workdir DIR [libFuzzer flags...]``

Every input goes through :func:`Runner.one_input`, which classifies what happened:

* **crash**: any exception other than the target's documented errors, an error-level log
  event (a bug the code caught and logged instead of raising), or an exception that reached
  the event loop's handler. The input is saved under ``DIR/crashes/`` (one file per distinct
  signature: exception type + innermost frame) and fuzzing goes on.
* **hang**: an input that used more than :data:`HANG_SECONDS` of CPU time (CPU, not wall
  time, so a niced run on a busy machine does not report false hangs). libFuzzer's own
  ``-timeout`` is the hard wall-clock watchdog for inputs that never return; the runner
  (:mod:`fuzz.run`) counts those as hangs too and restarts the target.
* **unbounded**: a target's check that buffered state stays below its documented cap failed
  (:class:`Unbounded`).

Counts, the slowest input and the peak RSS go to ``DIR/stats.json`` every couple of
seconds and when the run ends, because libFuzzer exits the process without Python's atexit.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

HANG_SECONDS = 1.0
FLUSH_SECONDS = 2.0
#: Packages whose code atheris instruments for coverage feedback (the code under test and the
#: h2 state machine it drives; hpack/hyperframe stay uninstrumented for speed, httptools is C).
INSTRUMENTED = (
    "gossamer_api",
    "gossamer_common",
    "gossamer_identity",
    "gossamer_inject",
    "gossamer_injector",
    "gossamer_proxy",
    "gossamer_tls",
    "h2",
)


class Unbounded(AssertionError):  # noqa: N818 - names the finding
    """Buffered state grew past the target's documented cap."""


@dataclasses.dataclass(frozen=True)
class Target:
    """One fuzz target: what to call, what it may raise, how to seed it."""

    name: str
    #: Called with each input; must leave no state behind (each input starts fresh).
    one_input: Callable[[bytes], None]
    #: Exceptions the code under test documents for bad input: not findings.
    expected: tuple[type[BaseException], ...] = ()
    #: Hand-made starting inputs (valid messages the mutator can work from).
    seeds: Callable[[], Iterable[bytes]] = lambda: ()
    max_len: int = 4096
    #: Tokens libFuzzer splices into inputs (protocol keywords).
    dictionary: tuple[bytes, ...] = ()


def load(name: str) -> Target:
    module = importlib.import_module(f"fuzz.targets.{name}")
    target = module.TARGET
    assert isinstance(target, Target)
    return target


class ErrorLogs:
    """Collects error-level structlog/logging events: a caught-and-logged bug is a finding."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def install(self) -> None:
        import structlog

        def record(_logger: object, method: str, event: dict[str, object]) -> dict[str, object]:
            if method in ("error", "critical", "exception"):
                self.events.append(f"{event.get('event')}: {event.get('error', '')}")
            raise structlog.DropEvent

        structlog.configure(processors=[record], cache_logger_on_first_use=False)
        logs = self

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.levelno >= logging.ERROR:
                    logs.events.append(f"{record.name}: {record.getMessage()}")

        logging.basicConfig(level=logging.ERROR, handlers=[Handler()], force=True)


ERROR_LOGS = ErrorLogs()


class Finding(Exception):  # noqa: N818
    """Raised by targets for a misbehaviour that is not itself an exception (see docs).

    ``key`` groups findings that are the same bug (the message carries the details).
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key if key is not None else message[:120]


class Runner:
    def __init__(self, target: Target, workdir: Path, runs: int) -> None:
        self.target = target
        self.workdir = workdir
        self.planned = runs
        self.crash_dir = workdir / "crashes"
        self.crash_dir.mkdir(parents=True, exist_ok=True)
        self.stats_path = workdir / "stats.json"
        previous = json.loads(self.stats_path.read_text()) if self.stats_path.exists() else {}
        self.runs = 0
        self.base_runs = int(previous.get("runs", 0))
        self.crashes = int(previous.get("crashes", 0))
        self.hangs = int(previous.get("hangs", 0))
        self.unbounded = int(previous.get("unbounded", 0))
        self.signatures: dict[str, int] = dict(previous.get("signatures", {}))
        self.slowest = float(previous.get("slowest_cpu_seconds", 0.0))
        self.peak_rss_mb = float(previous.get("peak_rss_mb", 0.0))
        self.started = self.flushed = time.monotonic()
        self.elapsed_before = float(previous.get("seconds", 0.0))

    def one_input(self, data: bytes) -> None:
        self.runs += 1
        ERROR_LOGS.events.clear()
        started = time.thread_time()
        try:
            self.target.one_input(data)
        except self.target.expected:
            pass
        except Unbounded as exc:
            self.unbounded += 1
            self._record("unbounded", exc, data)
        except Exception as exc:
            self.crashes += 1
            self._record("crash", exc, data)
        else:
            if ERROR_LOGS.events:
                self.crashes += 1
                events = ERROR_LOGS.events
                key = "error logged: " + ", ".join(sorted({e.split(":")[0] for e in events}))
                self._record("crash", Finding("; ".join(events), key=key), data)
        cpu = time.thread_time() - started
        if cpu > self.slowest:
            self.slowest = cpu
        if cpu > HANG_SECONDS:
            self.hangs += 1
            self._record("hang", Finding(f"{cpu:.2f} s of CPU"), data)
        if self.runs >= self.planned or (
            self.runs % 100 == 0 and time.monotonic() - self.flushed > FLUSH_SECONDS
        ):
            self.flush()

    def _record(self, kind: str, exc: BaseException, data: bytes) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "-"
        signature = f"{kind} {type(exc).__name__} at {where}"
        if isinstance(exc, Finding):
            cause = exc.__cause__
            if cause is not None and exc.key.startswith("exception reached the event loop"):
                inner = traceback.extract_tb(cause.__traceback__)
                at = f"{Path(inner[-1].filename).name}:{inner[-1].lineno}" if inner else "-"
                signature = f"{kind} {type(cause).__name__} at {at} (reached the event loop)"
            else:
                signature = f"{kind} {exc.key}"
        seen = self.signatures.get(signature, 0)
        self.signatures[signature] = seen + 1
        if seen:
            return
        digest = hashlib.sha1(data).hexdigest()[:16]  # noqa: S324 - a file name, not security
        stem = self.crash_dir / f"{kind}-{digest}"
        stem.with_suffix(".bin").write_bytes(data)
        text = "".join(traceback.format_exception(exc))
        stem.with_suffix(".txt").write_text(f"{signature}\n\n{text}")
        print(f"\n== {signature} (input saved to {stem}.bin)\n{text}", file=sys.stderr)

    def flush(self) -> None:
        self.flushed = time.monotonic()
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.peak_rss_mb = max(self.peak_rss_mb, rss_mb)
        stats = {
            "target": self.target.name,
            "runs": self.base_runs + self.runs,
            "crashes": self.crashes,
            "hangs": self.hangs,
            "unbounded": self.unbounded,
            "signatures": self.signatures,
            "slowest_cpu_seconds": round(self.slowest, 4),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "seconds": round(self.elapsed_before + time.monotonic() - self.started, 1),
        }
        tmp = self.stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats, indent=1, sort_keys=True))
        os.replace(tmp, self.stats_path)


def write_seeds(target: Target, corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in target.seeds():
        digest = hashlib.sha1(seed).hexdigest()  # noqa: S324 - a file name
        path = corpus / f"seed-{digest}"
        if not path.exists():
            path.write_bytes(seed)


def write_dictionary(target: Target, path: Path) -> bool:
    if not target.dictionary:
        return False
    lines = ['"' + "".join(f"\\x{b:02x}" for b in token) + '"' for token in target.dictionary]
    path.write_text("\n".join(lines) + "\n")
    return True


def replay(target: Target, paths: list[Path]) -> int:
    """Run saved inputs once each and print what they do (``--replay``)."""
    failures = 0
    ERROR_LOGS.install()
    for path in paths:
        ERROR_LOGS.events.clear()
        started = time.thread_time()
        try:
            target.one_input(path.read_bytes())
        except target.expected as exc:
            print(f"{path}: expected {type(exc).__name__}: {exc}")
        except Exception:
            failures += 1
            print(f"{path}: FAILED")
            traceback.print_exc()
        else:
            status = f"ERROR LOGS {ERROR_LOGS.events}" if ERROR_LOGS.events else "ok"
            failures += bool(ERROR_LOGS.events)
            print(f"{path}: {status} ({time.thread_time() - started:.3f} s CPU)")
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--replay", type=Path, nargs="*")
    args, libfuzzer_args = parser.parse_known_args(argv)
    if args.replay is not None:
        return replay(load(args.target), args.replay)

    import atheris

    # Instrument the code under test (not the harness) for coverage feedback.
    with atheris.instrument_imports(include=list(INSTRUMENTED)):
        target = load(args.target)
    ERROR_LOGS.install()
    workdir: Path = args.workdir
    corpus = workdir / "corpus"
    write_seeds(target, corpus)
    runner = Runner(target, workdir, args.runs)
    flags = [
        f"-runs={args.runs}",
        f"-max_len={target.max_len}",
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={workdir}/crashes/",
        *libfuzzer_args,
    ]
    if write_dictionary(target, workdir / "dictionary"):
        flags.append(f"-dict={workdir / 'dictionary'}")
    atheris.Setup([sys.argv[0], *flags, str(corpus)], runner.one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    # Run the importable module's main, so targets and runner share one set of classes.
    from fuzz.harness import main as module_main

    sys.exit(module_main(sys.argv[1:]))
