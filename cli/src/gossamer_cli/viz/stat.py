"""``gossamer viz stat``: golden metrics per resource, from PromQL over the proxies' series (pure).

:func:`stat_queries` says what to ask Prometheus; :func:`stat_rows` turns the answers (and the
meshed-pod counts read from Kubernetes) into rows; :func:`render_table` and
:func:`render_json` print them as ``linkerd viz stat`` does.

Which series answer the question follows Linkerd's metrics API:
- ``stat deploy -n ns``: the inbound series of the deployments' own proxies (what they served).
- ``--to RES``: the outbound series of the listed resources towards ``RES`` (``dst_*`` labels).
- ``--from RES``: the outbound series of ``RES``'s proxies, grouped by destination (``dst_*``).
- Services and authorities exist only client side: always outbound series.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gossamer_cli.viz.promapi import Sample
from gossamer_cli.viz.resources import Resource

QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class Scope:
    """Which series to read and how to group them into one row per resource."""

    direction: str
    selector: Mapping[str, str]
    #: (namespace label, name label) of the rows' resource in the result.
    namespace_label: str
    name_label: str

    @property
    def group(self) -> str:
        if self.name_label == self.namespace_label:
            return self.name_label
        return f"{self.namespace_label}, {self.name_label}"


def stat_scope(
    target: Resource,
    namespace: str | None,
    *,
    from_resource: Resource | None = None,
    from_namespace: str | None = None,
    to_resource: Resource | None = None,
    to_namespace: str | None = None,
) -> Scope:
    """``namespace`` None means every namespace (``--all-namespaces``)."""
    if from_resource is not None and to_resource is not None:
        raise ValueError("--from and --to cannot be combined")
    selector: dict[str, str] = {}
    label = target.kind.label
    if from_resource is not None or target.kind.outbound_only:
        # Rows are destinations: dst_* labels (authority has no dst_ prefix).
        name_label = label if target.kind.name == "authority" else f"dst_{label}"
        if namespace is not None:
            selector["dst_namespace"] = namespace
        if target.name:
            selector[name_label] = target.name
        if from_resource is not None:
            if from_namespace is not None:
                selector["namespace"] = from_namespace
            if from_resource.name:
                selector[from_resource.kind.label] = from_resource.name
        ns_label = "dst_namespace"
        if target.kind.name == "namespace":
            name_label = "dst_namespace"
        return Scope("outbound", selector, ns_label, name_label)
    if namespace is not None:
        selector["namespace"] = namespace
    if target.name:
        selector[label] = target.name
    if to_resource is not None:
        if to_namespace is not None:
            selector["dst_namespace"] = to_namespace
        if to_resource.name:
            to_label = to_resource.kind.label
            selector[to_label if to_label == "authority" else f"dst_{to_label}"] = to_resource.name
        return Scope("outbound", selector, "namespace", label)
    return Scope("inbound", selector, "namespace", label)


def _matchers(scope: Scope, **extra: str) -> str:
    pairs = {"direction": scope.direction, **scope.selector, **extra}
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in pairs.items())


def stat_queries(scope: Scope, window: str) -> dict[str, str]:
    """PromQL for each figure, keyed by name; every query is grouped by the scope's labels."""
    peer = "src" if scope.direction == "inbound" else "dst"
    group = scope.group
    queries = {
        "responses": f"sum(increase(response_total{{{_matchers(scope)}}}[{window}])) "
        f"by ({group}, classification)",
        "tcp_open": f"sum(tcp_open_connections{{{_matchers(scope, peer=peer)}}}) by ({group})",
        "tcp_read": f"sum(rate(tcp_read_bytes_total{{{_matchers(scope, peer=peer)}}}[{window}]))"
        f" by ({group})",
        "tcp_write": f"sum(rate(tcp_write_bytes_total{{{_matchers(scope, peer=peer)}}}"
        f"[{window}])) by ({group})",
    }
    for q in QUANTILES:
        queries[f"p{round(q * 100)}"] = (
            f"histogram_quantile({q}, sum(rate(response_latency_ms_bucket{{{_matchers(scope)}}}"
            f"[{window}])) by (le, {group}))"
        )
    return queries


@dataclass
class StatRow:
    namespace: str
    kind: str
    name: str
    meshed: tuple[int, int] | None = None  # (meshed, total) pods
    successes: float = 0.0
    failures: float = 0.0
    rps: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)  # "p50" -> ms
    tcp_open: float | None = None
    tcp_read_rate: float | None = None
    tcp_write_rate: float | None = None

    @property
    def has_traffic(self) -> bool:
        return self.successes + self.failures > 0

    @property
    def success_rate(self) -> float | None:
        total = self.successes + self.failures
        return self.successes / total if total > 0 else None


def window_seconds(window: str) -> float:
    """``30s``, ``1m``, ``1h`` as seconds; anything else is refused."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = window[:-1], window[-1:]
    if unit not in units or not number.isdigit() or int(number) == 0:
        raise ValueError(f"bad time window {window!r}: use e.g. 30s, 1m or 1h")
    return float(int(number) * units[unit])


def stat_rows(
    scope: Scope,
    kind: str,
    answers: Mapping[str, list[Sample]],
    window: str,
    *,
    known: Iterable[tuple[str, str]] = (),
    meshed: Mapping[tuple[str, str], tuple[int, int]] | None = None,
) -> list[StatRow]:
    """One row per resource: those ``known`` from Kubernetes (shown even without traffic)
    and those seen in the series, sorted by namespace and name."""
    rows: dict[tuple[str, str], StatRow] = {}

    def row(sample: Sample) -> StatRow | None:
        name = sample.labels.get(scope.name_label, "")
        ns = "" if kind == "namespace" else sample.labels.get(scope.namespace_label, "")
        if not name:
            return None
        return rows.setdefault((ns, name), StatRow(ns, kind, name))

    for ns, name in known:
        rows.setdefault((ns, name), StatRow(ns, kind, name))
    seconds = window_seconds(window)
    for sample in answers.get("responses", []):
        r = row(sample)
        if r is None:
            continue
        if sample.labels.get("classification") == "success":
            r.successes += sample.value
        else:
            r.failures += sample.value
    for r in rows.values():
        if r.has_traffic:
            r.rps = (r.successes + r.failures) / seconds
    for q in QUANTILES:
        key = f"p{round(q * 100)}"
        for sample in answers.get(key, []):
            r = row(sample)
            if r is not None and r.has_traffic:
                r.latency_ms[key] = sample.value
    for key, attr in (
        ("tcp_open", "tcp_open"),
        ("tcp_read", "tcp_read_rate"),
        ("tcp_write", "tcp_write_rate"),
    ):
        for sample in answers.get(key, []):
            r = row(sample)
            if r is not None:
                setattr(r, attr, sample.value)
    for resource, counts in (meshed or {}).items():
        if resource in rows:
            rows[resource].meshed = counts
    return sorted(rows.values(), key=lambda r: (r.namespace, r.name))


# -- output ------------------------------------------------------------------------------------


def _latency(row: StatRow, key: str) -> str:
    value = row.latency_ms.get(key)
    return "-" if value is None else f"{round(value)}ms"


def row_cells(r: StatRow) -> dict[str, str]:
    """The figures of a row as ``linkerd viz stat`` prints them (``-`` when unknown)."""
    success = r.success_rate
    return {
        "meshed": "-" if r.meshed is None else f"{r.meshed[0]}/{r.meshed[1]}",
        "success": "-" if success is None else f"{success * 100:.2f}%",
        "rps": "-" if r.rps is None else f"{r.rps:.1f}rps",
        "p50": _latency(r, "p50"),
        "p95": _latency(r, "p95"),
        "p99": _latency(r, "p99"),
        "tcp": "-" if r.tcp_open is None else str(round(r.tcp_open)),
    }


def render_table(rows: list[StatRow], *, wide: bool = False, all_namespaces: bool = False) -> str:
    if not rows:
        return "No traffic found."
    header = ["NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"]
    header.append("TCP_CONN")
    if wide:
        header += ["READ_BYTES/SEC", "WRITE_BYTES/SEC"]
    if all_namespaces:
        header.insert(0, "NAMESPACE")
    table = [header]
    for r in rows:
        shown = row_cells(r)
        cells = [r.name, *(shown[k] for k in ("meshed", "success", "rps", "p50", "p95", "p99"))]
        cells.append(shown["tcp"])
        if wide:
            cells += [
                "-" if r.tcp_read_rate is None else f"{r.tcp_read_rate:.1f}B/s",
                "-" if r.tcp_write_rate is None else f"{r.tcp_write_rate:.1f}B/s",
            ]
        if all_namespaces:
            cells.insert(0, r.namespace)
        table.append(cells)
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = []
    for line in table:
        # Names left-aligned, figures right-aligned, as Linkerd's tabwriter output.
        text = []
        for i, cell in enumerate(line):
            left = header[i] in ("NAME", "NAMESPACE")
            text.append(cell.ljust(widths[i]) if left else cell.rjust(widths[i]))
        lines.append("   ".join(text).rstrip())
    return "\n".join(lines)


def render_json(rows: list[StatRow]) -> str:
    out = []
    for r in rows:
        out.append(
            {
                "namespace": r.namespace,
                "kind": r.kind,
                "name": r.name,
                "meshed": None if r.meshed is None else f"{r.meshed[0]}/{r.meshed[1]}",
                "success": r.success_rate,
                "rps": r.rps,
                "latency_ms_p50": r.latency_ms.get("p50"),
                "latency_ms_p95": r.latency_ms.get("p95"),
                "latency_ms_p99": r.latency_ms.get("p99"),
                "tcp_open_connections": r.tcp_open,
                "tcp_read_bytes_rate": r.tcp_read_rate,
                "tcp_write_bytes_rate": r.tcp_write_rate,
            }
        )
    return json.dumps(out, indent=2)
