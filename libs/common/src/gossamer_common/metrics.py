"""A lean Prometheus registry built for the proxy's hot path.

Why not ``prometheus_client``: its children take a lock on every ``inc()`` and
look label values up through several layers on every call. The proxy updates a
handful of series per request, so each update has to be a plain attribute
increment on an object the caller already holds:

    requests = registry.counter_family("request_total", "Total requests", ("direction",))
    inbound = requests.labels("inbound")   # created once, kept by the caller
    inbound.value += 1                      # the hot path: no lock, no allocation

There are no locks because everything runs on one asyncio event loop thread.
The work of formatting (label escaping, sorting, cumulative buckets) happens at
scrape time in :meth:`Registry.render`, which produces text exposition format
0.0.4. Labels whose value is empty are left out of the exposition, as Linkerd does:
Prometheus reads ``l=""`` and no ``l`` alike, and omitting them keeps scrapes small.

A family's label names are fixed, but some series carry labels that only the data knows
(the proxy's ``dst_*`` labels come from service discovery): :meth:`Family.labels_extra`
adds such ``(name, value)`` pairs after the fixed labels of one child. Idle series are
expired explicitly with :meth:`Registry.expire_idle`,
which takes ``now`` so that the policy is testable without sleeping.
"""

from __future__ import annotations

import math
import re
import sys
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Generic, Literal, TypeVar

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_MS_BUCKETS",
    "Collector",
    "Counter",
    "Family",
    "Gauge",
    "Histogram",
    "MetricSnapshot",
    "Registry",
    "Sample",
    "escape_help",
    "escape_label_value",
    "format_value",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Linkerd's ``response_latency_ms`` bucket bounds (milliseconds); ``+Inf`` is implicit.
LATENCY_MS_BUCKETS: tuple[float, ...] = (
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
    1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000,
)  # fmt: skip

MetricType = Literal["counter", "gauge", "histogram", "untyped"]

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def escape_label_value(value: str) -> str:
    """Escape a label value: backslash, double quote and line feed, as 0.0.4 requires."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help(text: str) -> str:
    """Escape HELP text: backslash and line feed (quotes stay as they are)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Render a sample value: integers without a fraction, floats round-trip, ±Inf/NaN by name."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _render_labels(
    names: Sequence[str], values: Sequence[str], extra: Sequence[tuple[str, str]] = ()
) -> str:
    """Pre-render ``a="x",b="y"`` (without braces) once per child; empty values are omitted."""
    pairs = [*zip(names, values, strict=True), *extra]
    return ",".join(f'{n}="{escape_label_value(v)}"' for n, v in pairs if v)


def _check_metric_name(name: str) -> None:
    if not _METRIC_NAME.match(name):
        raise ValueError(f"invalid metric name {name!r}: must match {_METRIC_NAME.pattern}")


def _check_label_names(names: Sequence[str]) -> tuple[str, ...]:
    for n in names:
        if not _LABEL_NAME.match(n) or n.startswith("__"):
            raise ValueError(
                f"invalid label name {n!r}: must match {_LABEL_NAME.pattern} and not start with __"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate label names in {tuple(names)!r}")
    return tuple(names)


# -- children: the objects the hot path touches ---------------------------------------------


class Counter:
    """A monotonically increasing value. Increment ``value`` directly or call :meth:`inc`."""

    __slots__ = ("_idle_seen", "_idle_since", "_labels", "value")

    def __init__(self, labels: str = "") -> None:
        self.value: float = 0
        self._labels = labels
        self._idle_seen: float = 0
        self._idle_since: float | None = None

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def _activity(self) -> float:
        return self.value


class Gauge:
    """A value that goes up and down. Assign ``value`` directly or use the helpers."""

    __slots__ = ("_idle_seen", "_idle_since", "_labels", "value")

    def __init__(self, labels: str = "") -> None:
        self.value: float = 0
        self._labels = labels
        self._idle_seen: float = 0
        self._idle_since: float | None = None

    def set(self, value: float) -> None:
        self.value = value

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def _activity(self) -> float:
        return self.value


class Histogram:
    """Fixed-bucket histogram. :meth:`observe` is one bisect, one list increment and one add.

    ``counts[i]`` holds observations ``<= bounds[i]`` that did not fit an earlier bucket;
    the last slot is ``+Inf``. Cumulative counts are computed at render time only.
    """

    __slots__ = ("_idle_seen", "_idle_since", "_labels", "bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...], labels: str = "") -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum: float = 0
        self._labels = labels
        self._idle_seen: float = 0
        self._idle_since: float | None = None

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def _activity(self) -> float:
        return sum(self.counts)


Child = Counter | Gauge | Histogram
C = TypeVar("C", Counter, Gauge, Histogram)


def _refcount_in_dict(children: Mapping[tuple[str, ...], object], key: tuple[str, ...]) -> int:
    child = children[key]
    return sys.getrefcount(child)


# References held while _refcount_in_dict runs: the dict slot, the local and the call argument.
# Anything above this means code outside the registry still holds the child.
_REGISTRY_ONLY_REFS = _refcount_in_dict({("k",): object()}, ("k",))


# -- families ---------------------------------------------------------------------------------


class Family(Generic[C]):
    """A metric name plus one child per distinct label-value tuple.

    :meth:`labels` creates a child on first use and returns the same object afterwards;
    callers keep the child and update it without going through the family again.
    """

    def __init__(
        self,
        name: str,
        help: str,
        type_: MetricType,
        labelnames: Sequence[str],
        factory: Callable[[str], C],
    ) -> None:
        _check_metric_name(name)
        self.name = name
        self.help = help
        self.type: MetricType = type_
        self.labelnames = _check_label_names(labelnames)
        self._factory: Callable[[str], C] = factory
        self._children: dict[tuple[str, ...], C] = {}

    def labels(self, *values: str) -> C:
        """Return the child for ``values`` (in ``labelnames`` order), creating it on first use."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(
                    f"{self.name}: expected {len(self.labelnames)} label values "
                    f"{self.labelnames!r}, got {len(values)}: {values!r}"
                )
            for v in values:
                if not isinstance(v, str):
                    raise TypeError(f"{self.name}: label values must be str, got {v!r}")
            child = self._factory(_render_labels(self.labelnames, values))
            self._children[values] = child
        return child

    def labels_extra(self, values: Sequence[str], extra: Sequence[tuple[str, str]]) -> C:
        """Like :meth:`labels`, plus ``extra`` ``(name, value)`` pairs rendered after them.

        ``extra`` names must be valid, distinct from the family's label names and from each
        other; the same ``(values, extra)`` always returns the same child. Without ``extra``
        this is :meth:`labels`.
        """
        if not extra:
            return self.labels(*values)
        key = (*values, *(f"{n}={v}" for n, v in extra))
        child = self._children.get(key)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(
                    f"{self.name}: expected {len(self.labelnames)} label values "
                    f"{self.labelnames!r}, got {len(values)}: {tuple(values)!r}"
                )
            names = [n for n, _ in extra]
            _check_label_names(names)
            clash = set(names) & {*self.labelnames, *(("le",) if self.type == "histogram" else ())}
            if clash:
                raise ValueError(f"{self.name}: extra labels {sorted(clash)} are reserved")
            for v in (*values, *(v for _, v in extra)):
                if not isinstance(v, str):
                    raise TypeError(f"{self.name}: label values must be str, got {v!r}")
            child = self._factory(_render_labels(self.labelnames, values, extra))
            self._children[key] = child
        return child

    def remove(self, *values: str) -> bool:
        """Drop one series; returns whether it existed."""
        return self._children.pop(values, None) is not None

    def clear(self) -> None:
        self._children.clear()

    def children(self) -> list[tuple[tuple[str, ...], C]]:
        return list(self._children.items())

    def __len__(self) -> int:
        return len(self._children)

    def expire_idle(self, now: float, retain: float) -> int:
        """Drop series unchanged for ``retain`` seconds that nobody outside the registry holds.

        A child a caller still holds is never dropped: its future increments would
        otherwise be lost. Activity is detected by comparing the value with the one
        seen at the previous sweep, so the hot path pays nothing for expiry.
        """
        expired = 0
        for key in list(self._children):
            child = self._children[key]
            activity = child._activity()
            if child._idle_since is None or activity != child._idle_seen:
                child._idle_seen = activity
                child._idle_since = now
                continue
            idle_for = now - child._idle_since
            del child  # our own reference must not count as a holder
            if idle_for >= retain and (
                _refcount_in_dict(self._children, key) <= _REGISTRY_ONLY_REFS
            ):
                del self._children[key]
                expired += 1
        return expired

    def _render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {escape_help(self.help)}\n")
        out.append(f"# TYPE {self.name} {self.type}\n")
        name = self.name
        for child in self._children.values():
            if isinstance(child, Histogram):
                _render_histogram(out, name, child)
            elif child._labels:
                out.append(f"{name}{{{child._labels}}} {format_value(child.value)}\n")
            else:
                out.append(f"{name} {format_value(child.value)}\n")


def _render_histogram(out: list[str], name: str, h: Histogram) -> None:
    sep = "," if h._labels else ""
    cumulative = 0
    for bound, n in zip(h.bounds, h.counts, strict=False):
        cumulative += n
        out.append(f'{name}_bucket{{{h._labels}{sep}le="{format_value(bound)}"}} {cumulative}\n')
    cumulative += h.counts[-1]
    out.append(f'{name}_bucket{{{h._labels}{sep}le="+Inf"}} {cumulative}\n')
    braces = f"{{{h._labels}}}" if h._labels else ""
    out.append(f"{name}_sum{braces} {format_value(h.sum)}\n")
    out.append(f"{name}_count{braces} {cumulative}\n")


# -- callback-collected metrics ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One line of a collected family: ``name{labels} value`` (``suffix`` e.g. ``_total``)."""

    value: float
    labels: tuple[tuple[str, str], ...] = ()
    suffix: str = ""


@dataclass(frozen=True, slots=True)
class MetricSnapshot:
    """A family produced on demand by a collector at scrape time."""

    name: str
    help: str
    type: MetricType
    samples: Sequence[Sample] = field(default_factory=tuple)

    def _render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {escape_help(self.help)}\n")
        out.append(f"# TYPE {self.name} {self.type}\n")
        for s in self.samples:
            labels = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in s.labels if v)
            if labels:
                out.append(f"{self.name}{s.suffix}{{{labels}}} {format_value(s.value)}\n")
            else:
                out.append(f"{self.name}{s.suffix} {format_value(s.value)}\n")


Collector = Callable[[], Iterable[MetricSnapshot]]


# -- the registry -----------------------------------------------------------------------------


def _check_buckets(buckets: Sequence[float]) -> tuple[float, ...]:
    bounds = list(buckets)
    if bounds and math.isinf(bounds[-1]) and bounds[-1] > 0:
        bounds.pop()  # +Inf is always implicit
    if not bounds:
        raise ValueError("a histogram needs at least one finite bucket bound")
    for b in bounds:
        if not math.isfinite(b):
            raise ValueError(f"bucket bounds must be finite (got {b!r}); +Inf is implicit")
    if any(a >= b for a, b in pairwise(bounds)):
        raise ValueError(f"bucket bounds must be strictly increasing: {bounds!r}")
    return tuple(float(b) for b in bounds)  # float-vs-float compares are the fast path


class Registry:
    """Owns metric families and collectors and renders them in registration order."""

    def __init__(self) -> None:
        self._families: dict[str, Family[Counter] | Family[Gauge] | Family[Histogram]] = {}
        self._collectors: list[Collector] = []
        self._collected_names: set[str] = set()

    def _claim(self, name: str) -> None:
        _check_metric_name(name)
        if name in self._families or name in self._collected_names:
            raise ValueError(f"metric {name!r} is already registered")

    def counter_family(self, name: str, help: str, labelnames: Sequence[str]) -> Family[Counter]:
        self._claim(name)
        family: Family[Counter] = Family(name, help, "counter", labelnames, Counter)
        self._families[name] = family
        return family

    def gauge_family(self, name: str, help: str, labelnames: Sequence[str]) -> Family[Gauge]:
        self._claim(name)
        family: Family[Gauge] = Family(name, help, "gauge", labelnames, Gauge)
        self._families[name] = family
        return family

    def histogram_family(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str],
        buckets: Sequence[float] = LATENCY_MS_BUCKETS,
    ) -> Family[Histogram]:
        self._claim(name)
        bounds = _check_buckets(buckets)
        if "le" in labelnames:
            raise ValueError(f"{name}: 'le' is reserved for histogram buckets")
        family: Family[Histogram] = Family(
            name, help, "histogram", labelnames, lambda labels: Histogram(bounds, labels)
        )
        self._families[name] = family
        return family

    def counter(self, name: str, help: str) -> Counter:
        """An unlabelled counter (a family with a single child)."""
        return self.counter_family(name, help, ()).labels()

    def gauge(self, name: str, help: str) -> Gauge:
        return self.gauge_family(name, help, ()).labels()

    def histogram(
        self, name: str, help: str, buckets: Sequence[float] = LATENCY_MS_BUCKETS
    ) -> Histogram:
        return self.histogram_family(name, help, (), buckets).labels()

    def gauge_func(self, name: str, help: str, fn: Callable[[], float]) -> None:
        """A gauge whose value is read from ``fn`` at scrape time."""
        self.register_collector(
            lambda: [MetricSnapshot(name, help, "gauge", (Sample(fn()),))], names=(name,)
        )

    def register_collector(self, collector: Collector, names: Iterable[str] = ()) -> None:
        """Add a scrape-time collector; ``names`` reserves the family names it emits."""
        for name in names:
            self._claim(name)
        self._collected_names.update(names)
        self._collectors.append(collector)

    def unregister(self, name: str) -> None:
        self._families.pop(name, None)

    def family(self, name: str) -> Family[Counter] | Family[Gauge] | Family[Histogram]:
        return self._families[name]

    def names(self) -> frozenset[str]:
        """Every registered family name, collectors' included, with or without series yet."""
        return frozenset(self._families) | frozenset(self._collected_names)

    def expire_idle(self, now: float, retain: float = 600.0) -> int:
        """Expire idle series in every family (Linkerd retains idle series for 10 minutes)."""
        return sum(f.expire_idle(now, retain) for f in self._families.values())

    def render(self) -> bytes:
        """Render the text exposition format (0.0.4)."""
        out: list[str] = []
        for family in self._families.values():
            if family._children:
                family._render(out)
        for collector in self._collectors:
            for snapshot in collector():
                snapshot._render(out)
        return "".join(out).encode()
