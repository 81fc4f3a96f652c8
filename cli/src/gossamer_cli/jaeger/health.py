"""``gossamer jaeger check``: is the tracing extension up, and do proxies trace? (pure)

The command reads the extension's Deployments and the pods from Kubernetes;
:func:`judge` turns them into Linkerd-style results, each with a hint when it fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gossamer_cli.viz.health import Result

TRACING_ANNOTATION = "jaeger.linkerd.io/tracing-enabled"


def _available(deployment: Mapping[str, Any] | None) -> bool:
    if deployment is None:
        return False
    status = deployment.get("status") or {}
    return int(status.get("availableReplicas") or 0) >= 1


def judge(
    namespace: str,
    namespace_found: bool,
    deployments: Mapping[str, Mapping[str, Any] | None],
    pods: Sequence[Mapping[str, Any]],
) -> list[Result]:
    results = [
        Result(
            f"the {namespace} namespace exists",
            namespace_found,
            hint="install the extension: gossamer jaeger install | kubectl apply -f -",
        )
    ]
    if not namespace_found:
        return results
    for name, deployment in deployments.items():
        results.append(
            Result(
                f"{name} is running",
                _available(deployment),
                hint=f"kubectl -n {namespace} describe deploy/{name}",
            )
        )
    traced = [
        p
        for p in pods
        if ((p.get("metadata") or {}).get("annotations") or {}).get(TRACING_ANNOTATION) == "true"
    ]
    results.append(
        Result(
            "data-plane proxies send spans to a collector",
            bool(traced),
            warning=True,
            hint="annotate a namespace with config.linkerd.io/trace-collector=<host:port> "
            "and restart its workloads",
        )
    )
    return results


def render(results: list[Result]) -> str:
    from gossamer_cli.viz.health import render as render_checks

    lines = render_checks(results).splitlines()
    lines[0:2] = ["gossamer-jaeger", "---------------"]
    return "\n".join(lines)
