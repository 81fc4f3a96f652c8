"""``gossamer viz edges``: who opens connections to whom, and with which identities (pure).

Edges come from the clients' outbound ``tcp_open_total`` (``peer="dst"``), whose ``dst_*``
labels name the server and whose ``tls``/``server_id`` say whether the connection was mTLS to
the expected identity. The client's identity is read on the server side, from the inbound
``tcp_open_total`` (``peer="src"``) ``client_id`` of connections from the client's namespace.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from gossamer_cli.viz.promapi import Sample

SECURED_MARK = "\u221a"


def edges_queries(label: str, namespace: str | None) -> dict[str, str]:
    """PromQL for the client side (``outbound``) and the server side (``inbound``)."""
    out_sel = 'direction="outbound", peer="dst"'
    in_sel = 'direction="inbound", peer="src"'
    if namespace is not None:
        ns = json.dumps(namespace)
        out_sel += f", namespace={ns}"
        in_sel += f", namespace={ns}"
    return {
        "outbound": f"sum(tcp_open_total{{{out_sel}}}) by (namespace, {label}, dst_namespace, "
        f"dst_{label}, tls, server_id, no_tls_reason)",
        "inbound": f"sum(tcp_open_total{{{in_sel}}}) by (namespace, {label}, client_id, tls)",
    }


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    src_namespace: str
    dst_namespace: str
    client_id: str
    server_id: str
    secured: bool
    reason: str  # why not secured; "" when secured


def identity_namespace(identity: str) -> str:
    """``sa.ns.serviceaccount.identity...`` → ``ns`` ("" when not a workload identity)."""
    parts = identity.split(".")
    return parts[1] if len(parts) > 3 and parts[2] == "serviceaccount" else ""


def build_edges(label: str, answers: Mapping[str, list[Sample]]) -> list[Edge]:
    client_ids: dict[tuple[str, str], set[str]] = {}  # (server ns, server) -> client ids
    for s in answers.get("inbound", []):
        cid = s.labels.get("client_id", "")
        if s.value > 0 and cid:
            key = (s.labels.get("namespace", ""), s.labels.get(label, ""))
            client_ids.setdefault(key, set()).add(cid)
    edges: dict[tuple[str, str, str, str], Edge] = {}
    for s in answers.get("outbound", []):
        src, dst = s.labels.get(label, ""), s.labels.get(f"dst_{label}", "")
        src_ns, dst_ns = s.labels.get("namespace", ""), s.labels.get("dst_namespace", "")
        if s.value <= 0 or not src or not dst:
            continue
        secured = s.labels.get("tls") == "true"
        server_id = s.labels.get("server_id", "") if secured else ""
        candidates = sorted(
            c for c in client_ids.get((dst_ns, dst), set()) if identity_namespace(c) == src_ns
        )
        # Prefer the identity of the service account named as the workload, Linkerd's habit.
        named = [c for c in candidates if c.split(".", 1)[0] == src]
        client_id = (named or candidates or [""])[0] if secured else ""
        reason = "" if secured else (s.labels.get("no_tls_reason") or s.labels.get("tls", ""))
        edge_key = (src_ns, src, dst_ns, dst)
        previous = edges.get(edge_key)
        if previous is None or (secured and not previous.secured):
            edges[edge_key] = Edge(src, dst, src_ns, dst_ns, client_id, server_id, secured, reason)
    return sorted(edges.values(), key=lambda e: (e.src_namespace, e.src, e.dst_namespace, e.dst))


def render_table(edges: list[Edge], *, wide: bool = False) -> str:
    if not edges:
        return "No edges found."
    header = ["SRC", "DST", "SRC_NS", "DST_NS"]
    if wide:
        header += ["CLIENT_ID", "SERVER_ID"]
    header += ["SECURED"]
    table = [header]
    for e in edges:
        cells = [e.src, e.dst, e.src_namespace, e.dst_namespace]
        if wide:
            cells += [e.client_id or "-", e.server_id or "-"]
        cells.append(SECURED_MARK if e.secured else (e.reason or "-"))
        table.append(cells)
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join(
        "   ".join(c.ljust(widths[i]) for i, c in enumerate(line)).rstrip() for line in table
    )


def render_json(edges: list[Edge]) -> str:
    return json.dumps(
        [
            {
                "src": e.src,
                "src_namespace": e.src_namespace,
                "dst": e.dst,
                "dst_namespace": e.dst_namespace,
                "client_id": e.client_id,
                "server_id": e.server_id,
                "no_tls_reason": e.reason,
            }
            for e in edges
        ],
        indent=2,
    )
