"""The dashboard's HTML (pure): every value is HTML-escaped where it is written.

Pages carry no script (the Content-Security-Policy forbids any) and refresh themselves. Each
table row names its resource in ``data-name`` and each figure cell its column in its class,
so a reader (or a test) finds a figure without parsing text.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Iterable, Sequence

from gossamer_cli.viz import stat as stat_mod
from gossamer_cli.viz.edges import SECURED_MARK, Edge
from gossamer_cli.viz.web.data import Detail, Table, TapView

REFRESH_SECONDS = 5
STYLESHEET_PATH = "/static/dashboard.css"
STYLESHEET = """
body { font-family: sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { background: #1d2330; color: #fff; padding: 0.6em 1.2em; }
header a { color: #fff; text-decoration: none; margin-right: 0.6em; }
header .brand { font-weight: bold; }
main { padding: 1em 1.2em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; background: #fff; min-width: 60%; }
th, td { padding: 0.35em 0.8em; border-bottom: 1px solid #dde1e7; text-align: right; }
th { background: #eef0f4; } td.name, th.name, td.namespace { text-align: left; }
table.edges td { word-break: break-all; }
table.tap td { text-align: left; font-family: monospace; }
td.good { color: #18794e; } td.warn { color: #a35200; } td.bad { color: #c62828; }
p.notice { color: #a35200; } p.error { color: #c62828; font-weight: bold; }
svg.edges { background: #fff; border: 1px solid #dde1e7; }
svg.edges text { font-size: 13px; }
footer { color: #667; font-size: 0.8em; padding: 0 1.2em 1em; }
"""

COLUMNS = (
    ("meshed", "Meshed"),
    ("success", "Success"),
    ("rps", "RPS"),
    ("p50", "P50 latency"),
    ("p95", "P95 latency"),
    ("p99", "P99 latency"),
    ("tcp", "TCP conns"),
)
PLURAL = {"deployment": "deployments", "pod": "pods", "namespace": "namespaces"}


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def href(*segments: str) -> str:
    """A path built from names, each percent-encoded (and the whole escaped for HTML)."""
    return esc("/" + "/".join(urllib.parse.quote(s, safe="") for s in segments))


def layout(title: str, body: str, *, crumbs: Sequence[tuple[str, str]] = (), now: str = "") -> str:
    nav = "".join(f'<a href="{link}">{esc(text)}</a>' for text, link in crumbs)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        f"<title>{esc(title)} · Gossamer</title>"
        f'<link rel="stylesheet" href="{STYLESHEET_PATH}"></head>\n'
        f'<body><header><a class="brand" href="/namespaces">Gossamer</a>{nav}</header>\n'
        f"<main><h1>{esc(title)}</h1>\n{body}</main>\n"
        f"<footer>Updated {esc(now)}, every {REFRESH_SECONDS}s.</footer></body></html>\n"
    )


def _success_class(row: stat_mod.StatRow) -> str:
    rate = row.success_rate
    if rate is None:
        return ""
    return " good" if rate >= 0.95 else " warn" if rate >= 0.8 else " bad"


def stat_table(
    table_id: str,
    rows: Iterable[stat_mod.StatRow],
    *,
    link: tuple[str, str] | None = None,
    show_namespace: bool = False,
    empty: str = "No resources found.",
) -> str:
    """``link``: (namespace segment prefix, kind plural) to link each name to its page; for
    namespaces, ("", "namespaces")."""
    rows = list(rows)
    if not rows:
        return f'<p class="empty" id="{esc(table_id)}">{esc(empty)}</p>\n'
    head = '<th class="name">Name</th>'
    if show_namespace:
        head = '<th class="name">Namespace</th>' + head
    head += "".join(f'<th class="{key}">{esc(title)}</th>' for key, title in COLUMNS)
    lines = [f'<table class="stat" id="{esc(table_id)}"><thead><tr>{head}</tr></thead><tbody>']
    for row in rows:
        cells = stat_mod.row_cells(row)
        name = esc(row.name)
        if link is not None:
            segments = ["namespaces", row.name] if link[1] == "namespaces" else [
                "namespaces", row.namespace, link[1], row.name
            ]  # fmt: skip
            name = f'<a href="{href(*segments)}">{name}</a>'
        tds = f'<td class="name">{name}</td>'
        if show_namespace:
            tds = f'<td class="namespace">{esc(row.namespace)}</td>' + tds
        for key, _ in COLUMNS:
            extra = _success_class(row) if key == "success" else ""
            tds += f'<td class="{key}{extra}">{esc(cells[key])}</td>'
        lines.append(f'<tr data-name="{esc(row.name)}">{tds}</tr>')
    lines.append("</tbody></table>\n")
    return "\n".join(lines)


def _notice(kube_error: str) -> str:
    if not kube_error:
        return ""
    return f'<p class="notice">MESHED unknown: {esc(kube_error)}</p>\n'


def namespaces_page(table: Table, *, now: str) -> str:
    body = _notice(table.kube_error) + stat_table("namespaces", table.rows, link=("", "namespaces"))
    return layout("Namespaces", body, now=now)


def namespace_page(namespace: str, deployments: Table, pods: Table, *, now: str) -> str:
    body = _notice(deployments.kube_error or pods.kube_error)
    body += f'<p><a id="edges-link" href="{href("namespaces", namespace, "edges")}">'
    body += "Edges between the deployments</a></p>\n"
    body += "<h2>Deployments</h2>\n"
    body += stat_table("deployments", deployments.rows, link=(namespace, "deployments"))
    body += "<h2>Pods</h2>\n"
    body += stat_table("pods", pods.rows, link=(namespace, "pods"))
    return layout(
        f"Namespace {namespace}",
        body,
        crumbs=[("namespaces", "/namespaces"), (namespace, href("namespaces", namespace))],
        now=now,
    )


def detail_page(detail: Detail, *, now: str) -> str:
    ns, kind, name = detail.namespace, detail.kind, detail.name
    plural = PLURAL[kind]
    body = _notice(detail.kube_error)
    if not detail.exists:
        body += f'<p class="notice">No {esc(kind)} {esc(name)} in {esc(ns)}, and no traffic.</p>\n'
    body += stat_table("resource", [detail.row])
    body += f'<p><a id="tap-link" href="{href("namespaces", ns, plural, name, "tap")}">'
    body += f"Live requests of {esc(name)} (tap)</a></p>\n"
    if kind == "deployment":
        body += "<h2>Pods</h2>\n"
        body += stat_table("pods", detail.pods, link=(ns, "pods"), empty="No pods.")
    body += f"<h2>Inbound: {esc(plural)} that call {esc(name)}</h2>\n"
    body += stat_table(
        "inbound", detail.inbound, link=("", plural), show_namespace=True, empty="No callers."
    )
    body += f"<h2>Outbound: what {esc(name)} calls</h2>\n"
    body += stat_table(
        "outbound", detail.outbound, link=("", plural), show_namespace=True, empty="No calls."
    )
    return layout(
        f"{kind.capitalize()} {name}",
        body,
        crumbs=[
            ("namespaces", "/namespaces"),
            (ns, href("namespaces", ns)),
            (name, href("namespaces", ns, plural, name)),
        ],
        now=now,
    )


def edges_page(namespace: str, edges: Sequence[Edge], *, now: str) -> str:
    body = edges_svg(edges) + edges_table(edges)
    return layout(
        f"Edges in {namespace}",
        body,
        crumbs=[
            ("namespaces", "/namespaces"),
            (namespace, href("namespaces", namespace)),
            ("edges", href("namespaces", namespace, "edges")),
        ],
        now=now,
    )


def edges_table(edges: Sequence[Edge]) -> str:
    if not edges:
        return '<p class="empty" id="edges">No edges found.</p>\n'
    head = "".join(
        f'<th class="name">{t}</th>'
        for t in ("Source", "Destination", "Client identity", "Server identity", "Secured")
    )
    lines = [f'<table class="edges" id="edges"><thead><tr>{head}</tr></thead><tbody>']
    for e in edges:
        secured = SECURED_MARK if e.secured else (e.reason or "-")
        lines.append(
            f'<tr data-src="{esc(e.src)}" data-dst="{esc(e.dst)}">'
            f'<td class="name src">{esc(e.src_namespace)}/{esc(e.src)}</td>'
            f'<td class="name dst">{esc(e.dst_namespace)}/{esc(e.dst)}</td>'
            f'<td class="name client-id">{esc(e.client_id or "-")}</td>'
            f'<td class="name server-id">{esc(e.server_id or "-")}</td>'
            f'<td class="name secured">{esc(secured)}</td></tr>'
        )
    lines.append("</tbody></table>\n")
    return "\n".join(lines)


# -- the graph -------------------------------------------------------------------------------

NODE_W, NODE_H, COL_GAP, ROW_GAP, MARGIN = 170, 36, 90, 28, 20


def graph_columns(
    nodes: Sequence[tuple[str, str]], edges: Sequence[Edge]
) -> list[list[tuple[str, str]]]:
    """Nodes in columns by their longest distance from a node nobody calls (cycles cut)."""
    callers: dict[tuple[str, str], set[tuple[str, str]]] = {n: set() for n in nodes}
    for e in edges:
        callers[(e.dst_namespace, e.dst)].add((e.src_namespace, e.src))
    depth: dict[tuple[str, str], int] = {}

    def visit(node: tuple[str, str], path: frozenset[tuple[str, str]]) -> int:
        if node in depth:
            return depth[node]
        up = [c for c in callers[node] if c not in path and c != node]
        found = 1 + max((visit(c, path | {node}) for c in up), default=-1)
        depth[node] = found
        return found

    for node in nodes:
        visit(node, frozenset())
    columns: list[list[tuple[str, str]]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node in sorted(nodes):
        columns[depth[node]].append(node)
    return columns


def edges_svg(edges: Sequence[Edge]) -> str:
    """Server-side SVG: a box per workload, an arrow per edge (green mTLS, red dashed not)."""
    nodes = sorted(
        {(e.src_namespace, e.src) for e in edges} | {(e.dst_namespace, e.dst) for e in edges}
    )
    if not nodes:
        return ""
    columns = graph_columns(nodes, edges)
    place: dict[tuple[str, str], tuple[int, int]] = {}
    for c, column in enumerate(columns):
        for r, node in enumerate(column):
            place[node] = (MARGIN + c * (NODE_W + COL_GAP), MARGIN + r * (NODE_H + ROW_GAP))
    width = 2 * MARGIN + len(columns) * NODE_W + (len(columns) - 1) * COL_GAP
    rows = max(len(c) for c in columns)
    height = 2 * MARGIN + rows * NODE_H + (rows - 1) * ROW_GAP
    parts = [
        f'<svg class="edges" id="edges-graph" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="edges between workloads">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#555"/></marker></defs>',
    ]
    for e in edges:
        sx, sy = place[(e.src_namespace, e.src)]
        dx, dy = place[(e.dst_namespace, e.dst)]
        x1, y1, x2, y2 = _edge_ends(sx, sy, dx, dy)
        colour = "#18794e" if e.secured else "#c62828"
        dash = "" if e.secured else ' stroke-dasharray="6 4"'
        parts.append(
            f'<line class="edge" data-src="{esc(e.src)}" data-dst="{esc(e.dst)}" '
            f'data-secured="{str(e.secured).lower()}" x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" '
            f'stroke="{colour}" stroke-width="2"{dash} marker-end="url(#arrow)"/>'
        )
    for (ns, name), (x, y) in place.items():
        parts.append(
            f'<g class="node" data-name="{esc(name)}"><rect x="{x}" y="{y}" width="{NODE_W}" '
            f'height="{NODE_H}" rx="6" fill="#eef0f4" stroke="#1d2330"/>'
            f'<text x="{x + NODE_W // 2}" y="{y + NODE_H // 2 + 5}" text-anchor="middle">'
            f"{esc(_short(f'{ns}/{name}'))}</text></g>"
        )
    parts.append("</svg>\n")
    return "\n".join(parts)


def _edge_ends(sx: int, sy: int, dx: int, dy: int) -> tuple[int, int, int, int]:
    """From the source box's side to the destination box's side facing it."""
    scx, scy, dcx, dcy = sx + NODE_W // 2, sy + NODE_H // 2, dx + NODE_W // 2, dy + NODE_H // 2
    if dx > sx:
        return sx + NODE_W, scy, dx, dcy
    if dx < sx:
        return sx, scy, dx + NODE_W, dcy
    # Same column: bottom to top (or top to bottom).
    if dy >= sy:
        return scx, sy + NODE_H, dcx, dy
    return scx, sy, dcx, dy + NODE_H


def _short(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


#: Newest requests a tap page shows.
TAP_ROWS = 200
TAP_COLUMNS = (
    ("direction", "Dir"),
    ("source", "Source"),
    ("destination", "Destination"),
    ("method", "Method"),
    ("authority", "Authority"),
    ("path", "Path"),
    ("status", "Status"),
    ("latency", "Latency"),
    ("tls", "mTLS"),
)


def tap_page(view: TapView, *, now: str) -> str:
    """The requests one bounded tap saw, newest first (the page refreshes into a new tap)."""
    ns, kind, name = view.namespace, view.kind, view.name
    plural = PLURAL[kind]
    body = f'<p class="summary" id="tap-summary">Requests seen by the proxies of {esc(kind)} '
    shown = min(len(view.requests), TAP_ROWS)
    body += f"{esc(name)} in {view.seconds:g}s, newest first ({shown} of "
    body += f"{len(view.requests)} shown).</p>\n"
    if view.error:
        body += f'<p class="error" id="tap-error">{esc(view.error)}</p>\n'
    for pod, error in view.proxy_errors:
        body += f'<p class="notice">cannot tap {esc(pod)}: {esc(error)}</p>\n'
    if not view.requests:
        body += '<p class="empty" id="tap">No requests seen.</p>\n'
    else:
        head = "".join(f'<th class="{key}">{esc(title)}</th>' for key, title in TAP_COLUMNS)
        lines = [f'<table class="tap" id="tap"><thead><tr>{head}</tr></thead><tbody>']
        for r in view.requests[:TAP_ROWS]:
            cells = {
                "direction": r.direction,
                "source": r.source,
                "destination": r.destination,
                "method": r.method,
                "authority": r.authority,
                "path": r.path,
                "status": r.status_text + (f" {r.end}" if r.end else ""),
                "latency": r.latency,
                "tls": r.tls or "-",
            }
            bad = " bad" if r.failed else ""
            tds = "".join(
                f'<td class="{key}{bad if key == "status" else ""}">{esc(cells[key])}</td>'
                for key, _ in TAP_COLUMNS
            )
            lines.append(f'<tr data-name="{esc(r.proxy)}">{tds}</tr>')
        lines.append("</tbody></table>\n")
        body += "\n".join(lines)
    return layout(
        f"Tap {kind} {name}",
        body,
        crumbs=[
            ("namespaces", "/namespaces"),
            (ns, href("namespaces", ns)),
            (name, href("namespaces", ns, plural, name)),
            ("tap", href("namespaces", ns, plural, name, "tap")),
        ],
        now=now,
    )


def message_page(title: str, message: str, *, now: str) -> str:
    return layout(title, f'<p class="error">{esc(message)}</p>\n', now=now)
