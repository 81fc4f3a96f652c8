"""Multi-core proxy, the pure parts: how many cores, the parent↔worker frames, merged metrics.

Linkerd's proxy runs ``LINKERD2_PROXY_CORES`` runtime threads. Python threads would share one
interpreter lock, so Gossamer runs that many *processes* instead (:mod:`.multicore` does the
I/O): the parent plus ``cores - 1`` workers, every one accepting on the same inbound and
outbound ports through ``SO_REUSEPORT``. This module holds the decisions, with no I/O:

* :func:`cores_from_env` — the core count, chosen as Linkerd chooses it: an explicit maximum
  (``…_CORES_MAX``), else a ratio of the available CPUs (``…_CORES_MAX_RATIO``), else 1; never
  below the minimum (``…_CORES_MIN``, or the older ``LINKERD2_PROXY_CORES``) and never above
  the CPUs the process may use (:func:`available_cpus`). A bad value is ignored with a warning,
  as Linkerd does.
* :class:`FrameDecoder` / :func:`encode_frame` — length-prefixed JSON over the local socket
  pair between parent and worker, bounded in size.
* :func:`merge_expositions` — one Prometheus text exposition from several: a series present in
  many processes is summed (counters, histogram buckets, sums and counts, and the gauges the
  workers export, which are all additive: open connections, in-flight requests).
* :class:`RestartBudget` — a worker that dies is restarted, at most so many times per window.
"""

from __future__ import annotations

import json
import math
import struct
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_FRAME",
    "FrameDecoder",
    "FrameError",
    "RestartBudget",
    "available_cpus",
    "cores_from_env",
    "encode_frame",
    "family_total",
    "merge_expositions",
]

CORES = "LINKERD2_PROXY_CORES"
CORES_MIN = "LINKERD2_PROXY_CORES_MIN"
CORES_MAX = "LINKERD2_PROXY_CORES_MAX"
CORES_MAX_RATIO = "LINKERD2_PROXY_CORES_MAX_RATIO"


def available_cpus(affinity: int, cgroup_cpu_max: str | None = None) -> int:
    """CPUs this process may use: its affinity set, capped by a cgroup v2 ``cpu.max`` quota.

    ``cgroup_cpu_max`` is the file's text (``"<quota> <period>"`` or ``"max <period>"``); a
    fractional quota rounds up, as a limit of 1.5 CPUs still lets two threads run.
    """
    cpus = max(affinity, 1)
    if cgroup_cpu_max:
        parts = cgroup_cpu_max.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                quota, period = int(parts[0]), int(parts[1])
            except ValueError:
                return cpus
            if quota > 0 and period > 0:
                cpus = min(cpus, max(1, math.ceil(quota / period)))
    return cpus


def _positive_int(env: Mapping[str, str], name: str, warnings: list[str]) -> int | None:
    text = env.get(name)
    if text is None or text.strip() == "":
        return None
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value <= 0:
        warnings.append(f"{name}={text!r} is not a positive integer; ignored")
        return None
    return value


def _ratio(env: Mapping[str, str], warnings: list[str]) -> float | None:
    text = env.get(CORES_MAX_RATIO)
    if text is None or text.strip() == "":
        return None
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not 0.0 < value <= 1.0:  # NaN fails the comparison too
        warnings.append(f"{CORES_MAX_RATIO}={text!r} is not a ratio in (0, 1]; ignored")
        return None
    return value


def cores_from_env(env: Mapping[str, str], available: int) -> tuple[int, list[str]]:
    """The number of serving processes, and a warning for each environment value ignored."""
    warnings: list[str] = []
    minimum = _positive_int(env, CORES_MIN, warnings)
    if minimum is None:
        minimum = _positive_int(env, CORES, warnings)
    maximum = _positive_int(env, CORES_MAX, warnings)
    ratio = _ratio(env, warnings)
    if maximum is None and ratio is not None:
        by_ratio = math.floor(available * ratio + 0.5)  # round half away from zero, as Rust
        maximum = by_ratio if by_ratio > 0 else None
    cores = max(maximum if maximum is not None else 1, minimum or 1)
    return max(1, min(cores, available)), warnings


# -- frames between parent and worker --------------------------------------------------------

#: The largest frame either side accepts: a worker's metrics are bounded by the metrics
#: registry's own series limits, far under this.
MAX_FRAME = 32 << 20
_HEADER = struct.Struct("!I")


class FrameError(ValueError):
    """A frame that is too large or not a JSON object."""


def encode_frame(message: Mapping[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


@dataclass
class FrameDecoder:
    """Bytes in, whole messages out; a frame over ``max_frame`` raises :class:`FrameError`."""

    max_frame: int = MAX_FRAME
    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        messages: list[dict[str, Any]] = []
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > self.max_frame:
                raise FrameError(f"frame of {length} bytes exceeds {self.max_frame}")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            try:
                message = json.loads(body)
            except ValueError as exc:
                raise FrameError(f"frame is not JSON: {exc}") from None
            if not isinstance(message, dict) or not isinstance(message.get("type"), str):
                raise FrameError("frame is not an object with a string 'type'")
            messages.append(message)
        return messages


# -- merged metrics --------------------------------------------------------------------------


@dataclass
class _Family:
    help_line: str | None = None
    type_line: str | None = None
    #: series key (the sample line up to its value) -> summed value, in first-seen order
    series: dict[str, float] = field(default_factory=dict)
    integral: dict[str, bool] = field(default_factory=dict)
    #: for a family whose first exposition wins: which exposition that was
    source: int | None = None


def _family_of(sample_name: str, families: Mapping[str, _Family]) -> str:
    """The family a sample belongs to (``x_bucket`` / ``x_sum`` / ``x_count`` belong to ``x``)."""
    if sample_name in families:
        return sample_name
    for suffix in ("_bucket", "_sum", "_count", "_total", "_created"):
        if sample_name.endswith(suffix) and sample_name[: -len(suffix)] in families:
            return sample_name[: -len(suffix)]
    return sample_name


def _split_sample(line: str) -> tuple[str, str, str] | None:
    """``(name, series key, value text)``; the key keeps the labels exactly as rendered."""
    close = line.rfind("}")
    head_end = close + 1 if close >= 0 else line.find(" ")
    if head_end <= 0:
        return None
    key = line[:head_end]
    rest = line[head_end:].split()
    if not rest:
        return None
    brace = key.find("{")
    name = key[:brace] if brace >= 0 else key
    return name, key, rest[0]  # a timestamp, if any, is dropped: the merge is "now"


def _format(value: float, integral: bool) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if integral and value.is_integer():
        return str(int(value))
    return repr(value)


#: Process families that are not additive across processes: the first exposition (the
#: parent's) gives the value. CPU time, memory, open fds and threads do add up, to what a
#: single multi-threaded process would report.
FIRST_WINS = frozenset({"process_start_time_seconds", "process_max_fds"})


def merge_expositions(texts: Iterable[str], first_wins: frozenset[str] = FIRST_WINS) -> str:
    """Merge Prometheus text expositions: identical series are summed, order is first-seen.

    Families named in ``first_wins`` keep the value of the first exposition that has them.
    """
    families: dict[str, _Family] = {}
    for position, text in enumerate(texts):
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = families.setdefault(parts[2], _Family())
                    if parts[1] == "HELP" and family.help_line is None:
                        family.help_line = line
                    elif parts[1] == "TYPE" and family.type_line is None:
                        family.type_line = line
                continue
            sample = _split_sample(line)
            if sample is None:
                continue
            name, key, value_text = sample
            try:
                value = float(value_text)
            except ValueError:
                continue
            family_name = _family_of(name, families)
            family = families.setdefault(family_name, _Family())
            integral = "." not in value_text and "e" not in value_text.lower()
            if family_name in first_wins:
                if family.source is None:
                    family.source = position
                if family.source != position:
                    continue
                family.series[key] = value
                family.integral[key] = integral
                continue
            family.series[key] = family.series.get(key, 0.0) + value
            family.integral[key] = family.integral.get(key, True) and integral
    out: list[str] = []
    for family in families.values():
        if family.help_line is not None:
            out.append(family.help_line)
        if family.type_line is not None:
            out.append(family.type_line)
        for key, value in family.series.items():
            out.append(f"{key} {_format(value, family.integral[key])}")
    return "\n".join(out) + "\n" if out else ""


def family_total(text: str, name: str) -> float:
    """The sum of every series of one sample name in an exposition (all its label sets)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample = _split_sample(line.strip())
        if sample is not None and sample[0] == name:
            try:
                total += float(sample[2])
            except ValueError:
                continue
    return total


# -- worker supervision ----------------------------------------------------------------------


@dataclass
class RestartBudget:
    """At most ``max_restarts`` restarts of one worker slot within ``window`` seconds."""

    max_restarts: int = 5
    window: float = 60.0
    _restarts: deque[float] = field(default_factory=deque)

    def allow(self, now: float) -> bool:
        """Whether a worker that exited at ``now`` may be restarted (records the restart)."""
        while self._restarts and now - self._restarts[0] >= self.window:
            self._restarts.popleft()
        if len(self._restarts) >= self.max_restarts:
            return False
        self._restarts.append(now)
        return True
