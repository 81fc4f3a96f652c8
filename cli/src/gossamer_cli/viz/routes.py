"""``gossamer viz routes``: golden metrics per ServiceProfile route (pure).

The proxies count profile routes on the client side: ``route_response_total`` and
``route_response_latency_ms`` with ``dst="<service fqn>:<port>"`` and ``rt_route``. Every route
of the profile is listed, with ``-`` when it saw no traffic; requests that matched no route
are the ``[DEFAULT]`` route, as in ``linkerd viz routes``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gossamer_cli.viz.promapi import Sample
from gossamer_cli.viz.stat import QUANTILES, window_seconds

DEFAULT_ROUTE = "[DEFAULT]"


def service_fqn(service: str, namespace: str, cluster_domain: str = "cluster.local") -> str:
    return f"{service}.{namespace}.svc.{cluster_domain}"


def routes_selector(
    *,
    service: str | None,
    service_namespace: str,
    client: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Matchers: outbound, towards ``service`` (any port; every service when None), from the
    clients ``client`` selects (label → value, e.g. ``{"deployment": "web"}``)."""
    if service:
        dst = re.escape(service_fqn(service, service_namespace)) + ":[0-9]+"
    else:
        dst = f".+\\.{re.escape(service_namespace)}\\.svc\\..+:[0-9]+"
    return {"direction": "outbound", "dst=~": dst, **(client or {})}


def _matchers(selector: Mapping[str, str]) -> str:
    parts = []
    for key, value in selector.items():
        name, op = (key[:-2], "=~") if key.endswith("=~") else (key, "=")
        parts.append(f"{name}{op}{json.dumps(value)}")
    return ", ".join(parts)


def routes_queries(selector: Mapping[str, str], window: str) -> dict[str, str]:
    m = _matchers(selector)
    queries = {
        "responses": f"sum(increase(route_response_total{{{m}}}[{window}])) "
        "by (dst, rt_route, classification)"
    }
    for q in QUANTILES:
        queries[f"p{round(q * 100)}"] = (
            f"histogram_quantile({q}, sum(rate(route_response_latency_ms_bucket{{{m}}}"
            f"[{window}])) by (le, dst, rt_route))"
        )
    return queries


@dataclass
class RouteRow:
    route: str
    service: str
    successes: float = 0.0
    failures: float = 0.0
    rps: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def success_rate(self) -> float | None:
        total = self.successes + self.failures
        return self.successes / total if total > 0 else None


def _service_of(dst: str) -> str:
    """``web.demo.svc.cluster.local:8080`` → ``web``."""
    return dst.rsplit(":", 1)[0].split(".", 1)[0]


def route_rows(
    answers: Mapping[str, list[Sample]],
    window: str,
    *,
    profile_routes: Mapping[str, Iterable[str]] | None = None,
) -> list[RouteRow]:
    """Rows for the routes seen in ``answers`` and every route of ``profile_routes``
    (service name → the names of its profile's routes)."""
    rows: dict[tuple[str, str], RouteRow] = {}
    for service, names in (profile_routes or {}).items():
        for name in names:
            rows.setdefault((service, name), RouteRow(name, service))

    def row(sample: Sample) -> RouteRow:
        service = _service_of(sample.labels.get("dst", ""))
        route = sample.labels.get("rt_route") or DEFAULT_ROUTE
        return rows.setdefault((service, route), RouteRow(route, service))

    for sample in answers.get("responses", []):
        r = row(sample)
        if sample.labels.get("classification") == "success":
            r.successes += sample.value
        else:
            r.failures += sample.value
    seconds = window_seconds(window)
    for r in rows.values():
        total = r.successes + r.failures
        if total > 0:
            r.rps = total / seconds
    for q in QUANTILES:
        key = f"p{round(q * 100)}"
        for sample in answers.get(key, []):
            r = row(sample)
            if r.rps is not None:
                r.latency_ms[key] = sample.value
    # Linkerd lists the profile's routes by name, the default route last, per service.
    return sorted(
        (r for r in rows.values() if r.rps is not None or r.route != DEFAULT_ROUTE),
        key=lambda r: (r.service, r.route == DEFAULT_ROUTE, r.route),
    )


def render_table(rows: list[RouteRow]) -> str:
    if not rows:
        return "No routes found."
    header = ["ROUTE", "SERVICE", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"]
    table = [header]
    for r in rows:
        rate = r.success_rate
        table.append(
            [
                r.route,
                r.service,
                "-" if rate is None else f"{rate * 100:.2f}%",
                "-" if r.rps is None else f"{r.rps:.1f}rps",
                *(
                    "-"
                    if f"p{round(q * 100)}" not in r.latency_ms
                    else f"{round(r.latency_ms[f'p{round(q * 100)}'])}ms"
                    for q in QUANTILES
                ),
            ]
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join(
        "   ".join(
            c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(line)
        ).rstrip()
        for line in table
    )


def render_json(rows: list[RouteRow]) -> str:
    return json.dumps(
        [
            {
                "route": r.route,
                "service": r.service,
                "success": r.success_rate,
                "rps": r.rps,
                "latency_ms_p50": r.latency_ms.get("p50"),
                "latency_ms_p95": r.latency_ms.get("p95"),
                "latency_ms_p99": r.latency_ms.get("p99"),
            }
            for r in rows
        ],
        indent=2,
    )
