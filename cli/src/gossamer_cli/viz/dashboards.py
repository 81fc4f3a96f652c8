"""Grafana dashboards for the viz extension (pure).

The dashboards ship as Grafana JSON beside this module (``grafana/*.json``): top line,
deployment, pod, route and authority, as Linkerd's. Their queries use Linkerd's metric names,
which the proxy exports, and the labels the ``linkerd-proxy`` scrape job gives every series
(``namespace``, ``deployment``, ``pod``…); Grafana's template variables (``$namespace``,
``$deployment``, ``$pod``, ``$route``, ``$authority``) pick the subject, each filled by a
``label_values(...)`` query, as Linkerd's dashboards do.

``gossamer viz install`` renders each one as a ConfigMap labelled ``grafana_dashboard: "1"``,
the label Grafana's dashboard sidecar (kube-prometheus-stack, the Grafana chart) loads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

#: The label Grafana's dashboard sidecar watches for.
SIDECAR_LABEL = "grafana_dashboard"
#: Histogram series carry their family's name plus one of these.
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_BRACED = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right"}
)
_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>[A-Za-z_]\w*)\)$")
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


class DashboardError(ValueError):
    """A dashboard that Grafana could not use, or a query that cannot be read."""


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref_id: str
    expr: str


@dataclass(frozen=True)
class Variable:
    """A ``label_values(selector, label)`` template variable."""

    name: str
    label: str
    selector: str | None


def names() -> list[str]:
    """The shipped dashboards' file stems, sorted (``authority``, ``deployment``…)."""
    folder = resources.files("gossamer_cli.viz").joinpath("grafana")
    return sorted(
        p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")
    )


def load(name: str) -> dict[str, Any]:
    text = resources.files("gossamer_cli.viz").joinpath("grafana", f"{name}.json").read_text()
    try:
        dashboard = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DashboardError(f"grafana/{name}.json is not JSON: {exc}") from exc
    if not isinstance(dashboard, dict):
        raise DashboardError(f"grafana/{name}.json is not a JSON object")
    return dashboard


def data_panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every panel that shows data: rows (layout only) left out, collapsed rows opened."""
    for panel in dashboard.get("panels") or []:
        if panel.get("type") == "row":
            yield from panel.get("panels") or []
        else:
            yield panel


def queries(name: str, dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    found = []
    for panel in data_panels(dashboard):
        for target in panel.get("targets") or []:
            expr = str(target.get("expr") or "").strip()
            found.append(PanelQuery(name, str(panel.get("title")), str(target.get("refId")), expr))
    return found


def variables(dashboard: Mapping[str, Any]) -> list[Variable]:
    """The query variables, in the order Grafana resolves them."""
    found = []
    for entry in (dashboard.get("templating") or {}).get("list") or []:
        if entry.get("type") != "query":
            continue
        query = entry.get("query")
        text = str(query.get("query") if isinstance(query, Mapping) else query).strip()
        match = _LABEL_VALUES.match(text)
        if match is None:
            raise DashboardError(f"variable ${entry.get('name')}: not label_values(...): {text}")
        found.append(Variable(str(entry["name"]), match["label"], match["selector"]))
    return found


def substitute(text: str, values: Mapping[str, str]) -> str:
    """``$name`` and ``${name}`` replaced by ``values``; an unknown variable is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise DashboardError(f"no value for ${name} in {text}")
        return values[name]

    return _VARIABLE.sub(replace, text)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (histogram suffixes kept).

    Strings, label matchers, range windows and grouping clauses are dropped first; what is
    left is functions and aggregations (an identifier followed by ``(``), keywords, numbers
    and the metric names.
    """
    text = _STRING.sub('""', expr)
    text = _BRACED.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    found = set()
    for match in _IDENT.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        start = match.start()
        if start and (text[start - 1].isdigit() or text[start - 1] == "."):
            continue  # the exponent or unit of a number (1e3)
        found.add(match.group())
    return found


def family_of(metric: str) -> str:
    """The family a series name belongs to: ``x_bucket``/``x_sum``/``x_count`` → ``x``."""
    for suffix in _HISTOGRAM_SUFFIXES:
        if metric.endswith(suffix):
            return metric.removesuffix(suffix)
    return metric


def configmaps(namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """One ConfigMap per dashboard, for Grafana's dashboard sidecar."""
    maps = []
    for name in names():
        text = json.dumps(load(name), indent=1, sort_keys=False)
        maps.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": f"grafana-dashboard-{name}",
                    "namespace": namespace,
                    "labels": {**labels, SIDECAR_LABEL: "1"},
                },
                "data": {f"gossamer-{name}.json": text},
            }
        )
    return maps
