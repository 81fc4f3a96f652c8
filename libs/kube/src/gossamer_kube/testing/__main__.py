"""``python -m gossamer_kube.testing up|down|status``: the local-mode cluster (make kube-up).

``up`` starts the cluster and exits, leaving the components running in their own process
groups; their pids and start times are recorded in the state directory (``.kube-local/`` in
the repository, or ``$GOSSAMER_KUBE_STATE``) so that ``down`` stops exactly those processes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gossamer_kube.config import KubeConfig
from gossamer_kube.errors import KubeError
from gossamer_kube.testing.admin import AdminHTTP
from gossamer_kube.testing.binaries import KubeBinariesMissingError, find_repo_root
from gossamer_kube.testing.cluster import ClusterStartError, KubeTestCluster
from gossamer_kube.testing.process import ProcessRecord


def state_dir() -> Path:
    env = os.environ.get("GOSSAMER_KUBE_STATE")
    if env:
        return Path(env).resolve()
    root = find_repo_root()
    return (root if root is not None else Path.cwd()) / ".kube-local"


def _live(state: dict[str, object]) -> list[ProcessRecord]:
    raw = state.get("processes")
    records = [ProcessRecord.from_json(p) for p in raw] if isinstance(raw, list) else []
    return [r for r in records if r.is_ours()]


def cmd_up(directory: Path) -> int:
    state = KubeTestCluster.read_state(directory)
    if state is not None:
        if _live(state):
            print(f"cluster already running (state in {directory})")
            print(f"export KUBECONFIG={state.get('kubeconfig')}")
            return 0
        KubeTestCluster.stop_detached(directory)  # leftovers of a crashed cluster
    cluster = KubeTestCluster(directory)
    try:
        cluster.start()
    except (ClusterStartError, KubeBinariesMissingError) as exc:
        print(f"kube-up failed: {exc}", file=sys.stderr)
        return 1
    cluster.detach()
    print(f"cluster up: {cluster.server} (logs in {cluster.log_dir})")
    print(f"kubeconfig: {cluster.kubeconfig}")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def cmd_down(directory: Path) -> int:
    stopped = KubeTestCluster.stop_detached(directory)
    print(f"stopped: {', '.join(stopped)}" if stopped else "no cluster was running")
    return 0


def cmd_status(directory: Path) -> int:
    state = KubeTestCluster.read_state(directory)
    if state is None:
        print(f"no cluster recorded in {directory}")
        return 1
    raw = state.get("processes")
    records = [ProcessRecord.from_json(p) for p in raw] if isinstance(raw, list) else []
    for record in records:
        print(f"{record.name:<24} pid {record.pid:<8} {'running' if record.is_ours() else 'DEAD'}")
    kubeconfig = state.get("kubeconfig")
    ready = "unknown"
    if isinstance(kubeconfig, str):
        try:
            status, body = AdminHTTP(KubeConfig.from_kubeconfig(kubeconfig)).raw("GET", "/readyz")
            ready = body.decode(errors="replace").strip() if status == 200 else f"HTTP {status}"
        except KubeError as exc:
            ready = f"unreachable ({exc})"
    print(f"apiserver {state.get('server')} readyz: {ready}")
    print(f"export KUBECONFIG={kubeconfig}")
    return 0 if records and all(r.is_ours() for r in records) and ready == "ok" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gossamer_kube.testing", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    directory: Path = args.state_dir.resolve() if args.state_dir else state_dir()
    handlers = {"up": cmd_up, "down": cmd_down, "status": cmd_status}
    return handlers[args.command](directory)


if __name__ == "__main__":
    sys.exit(main())
