"""Driving a running local mesh from tests: kubectl, commands inside pods, proxy metrics.

The mesh runs as ``gossamer dev up --headless`` in its own node network namespace; tests
reach it only through ``ip netns exec`` (kubectl in the node namespace, clients inside pod
namespaces), so nothing here ever touches the host's network.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from gossamer_cli.dev import promtext
from gossamer_cli.dev.layout import CONTROL_PLANE_SANDBOXES, NodeLayout
from gossamer_kube.testing.binaries import locate_kubectl

T = TypeVar("T")

RUNTIME_VENV = Path(os.environ.get("GOSSAMER_RUNTIME_VENV", "/opt/gossamer/runtime"))
CLIENT_UID = 2300  # a test client inside a pod: neither the proxy (2102) nor the app (2200)
APPS = Path(__file__).resolve().parent / "apps"
#: Admin ports of the control plane (cli/.../dev/controlplane.py).
CONTROL_PLANE_ADMIN_PORTS = {"identity": 9990, "destination": 9996, "injector": 9995}


@dataclass
class LocalMeshHandle:
    process: subprocess.Popen[bytes] | None  # None: attached to a mesh someone else runs
    state_dir: Path
    layout: NodeLayout
    kubeconfig: str
    log: Path

    # -- kubectl ---------------------------------------------------------------------------

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        argv = [
            "ip", "netns", "exec", self.layout.node_netns,
            str(locate_kubectl()), "--kubeconfig", self.kubeconfig, *args,
        ]  # fmt: skip
        out = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120)
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def apply(self, manifest: str) -> None:
        self.kubectl("apply", "-f", "-", stdin=manifest)

    def get(self, kind: str, name: str = "", namespace: str = "default") -> Any:
        args = ["get", kind] + ([name] if name else []) + ["-n", namespace, "-o", "json"]
        return json.loads(self.kubectl(*args))

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("pods", "", namespace)["items"]
        key, _, value = selector.partition("=")
        return [p for p in items if (p["metadata"].get("labels") or {}).get(key) == value]

    def wait_ready(
        self, namespace: str, selector: str, count: int, limit: float = 120.0
    ) -> list[dict[str, Any]]:
        """Exactly ``count`` pods match, all Ready (and none terminating)."""
        deadline = time.monotonic() + limit
        pods: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            self.check_alive()
            pods = self.pods(namespace, selector)
            ready = [p for p in pods if is_ready(p) and not p["metadata"].get("deletionTimestamp")]
            if len(ready) == count and len(pods) == count:
                return ready
            time.sleep(0.5)
        summary = [(p["metadata"]["name"], (p.get("status") or {}).get("phase")) for p in pods]
        logs = "".join(self.pod_logs(p) for p in pods)
        raise AssertionError(
            f"{namespace}/{selector}: wanted {count} ready pods, have {summary}\n{logs}"
        )

    def pod_logs(self, pod: dict[str, Any], tail: int = 600) -> str:
        """The end of each container's log (local mode keeps them in its state directory)."""
        logs = self.state_dir / "node" / "pods" / pod["metadata"]["uid"] / "logs"
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        parts = [
            f"--- runtime: {line}\n"
            for line in self._mesh_log_lines()
            if key in line and '"level": "error"' in line
        ][-3:]
        for log in sorted(logs.glob("*.log")) if logs.is_dir() else []:
            text = log.read_text(errors="replace")[-tail:]
            parts.append(f"--- {pod['metadata']['name']}/{log.stem}:\n{text}\n")
        return "".join(parts)

    def proxy_log_events(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        """The JSON events of the pod's proxy log (lines that are not JSON are left out)."""
        log = self.state_dir / "node" / "pods" / pod["metadata"]["uid"] / "logs"
        events = []
        for line in (log / "linkerd-proxy.log").read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def _mesh_log_lines(self) -> list[str]:
        try:
            return self.log.read_text(errors="replace").splitlines()
        except OSError:
            return []

    # -- inside pods -----------------------------------------------------------------------

    def pod_netns(self, pod: dict[str, Any]) -> str:
        return self.layout.pod_netns(pod["metadata"]["uid"])

    def run_in_pod(
        self, pod: dict[str, Any], argv: Sequence[str], *, uid: int = CLIENT_UID, limit: float = 120
    ) -> subprocess.CompletedProcess[str]:
        full = [
            "ip", "netns", "exec", self.pod_netns(pod),
            "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv,
        ]  # fmt: skip
        return subprocess.run(full, capture_output=True, text=True, timeout=limit)

    def python_in_pod(self, pod: dict[str, Any], code: str, *, limit: float = 120) -> Any:
        """Run ``code`` with the runtime venv's Python inside the pod; it prints one JSON value."""
        out = self.run_in_pod(pod, [str(RUNTIME_VENV / "bin" / "python"), "-c", code], limit=limit)
        if out.returncode != 0:
            raise AssertionError(f"in-pod client failed ({out.returncode}): {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def script_argv(self, script: str, args: Sequence[str]) -> list[str]:
        """``python -c <tests/e2e/apps/script> args``: the pod's uid may not read the repo."""
        source = (APPS / script).read_text()
        return [str(RUNTIME_VENV / "bin" / "python"), "-c", source, *args]

    def spawn_in_pod(
        self, pod: dict[str, Any], argv: Sequence[str], *, uid: int = CLIENT_UID
    ) -> subprocess.Popen[str]:
        """Like :meth:`run_in_pod` but in the background; the caller must wait or kill it."""
        full = [
            "ip", "netns", "exec", self.pod_netns(pod),
            "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv,
        ]  # fmt: skip
        return subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def load(
        self, pod: dict[str, Any], url: str, count: int, *, max_seconds: float = 60, **flags: Any
    ) -> dict[str, Any]:
        """Run tests/e2e/apps/loadgen.py inside ``pod`` against ``url``; its JSON summary."""
        summary: dict[str, Any] = self.start_load(
            pod, url, count, max_seconds=max_seconds, **flags
        ).result()
        return summary

    def start_load(
        self, pod: dict[str, Any], url: str, count: int, *, max_seconds: float = 60, **flags: Any
    ) -> InPodRun:
        """Start loadgen.py in ``pod`` in the background (bounded by count and max_seconds)."""
        args = ["--url", url, "--count", str(count), "--max-seconds", str(max_seconds)]
        for key, value in flags.items():
            option = "--" + key.replace("_", "-")
            if value is True:
                args.append(option)
            elif value is not False and value is not None:
                args += [option, str(value)]
        process = self.spawn_in_pod(pod, self.script_argv("loadgen.py", args))
        return InPodRun(process, limit=max_seconds + 60)

    def node_run(
        self, argv: Sequence[str], *, check: bool = True, limit: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """A command in the node namespace (as root)."""
        full = ["ip", "netns", "exec", self.layout.node_netns, *argv]
        return subprocess.run(full, capture_output=True, text=True, timeout=limit, check=check)

    def node_curl(self, url: str) -> str:
        argv = ["ip", "netns", "exec", self.layout.node_netns, "curl", "-sS", "-m", "5", url]
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout

    def metrics(self, pod: dict[str, Any]) -> str:
        return self.node_curl(f"http://{pod['status']['podIP']}:4191/metrics")

    def admin_status(self, url: str) -> int:
        """The HTTP status of a GET from the node (0 when nothing answers)."""
        argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "3", url]
        out = self.node_run(argv, check=False, limit=10).stdout.strip()
        return int(out) if out.isdigit() else 0

    # -- Gossamer's control plane ----------------------------------------------------------

    def control_plane_pid(self, component: str) -> int:
        """The pid of a supervised control-plane component (rewritten when it restarts)."""
        return int((self.state_dir / "control-plane" / f"{component}.pid").read_text())

    def control_plane_ready(self, component: str) -> bool:
        return self.admin_status(f"http://{self.control_plane_admin(component)}/ready") == 200

    def control_plane_admin(self, component: str) -> str:
        """``host:port`` of a component's admin server, seen from the node: identity and
        destination answer in their sandboxes (behind their proxies), the injector on the
        node's loopback."""
        port = CONTROL_PLANE_ADMIN_PORTS[component]
        if component in CONTROL_PLANE_SANDBOXES:
            return f"{self.layout.control_plane_address(component)}:{port}"
        return f"127.0.0.1:{port}"

    # -- namespaces ------------------------------------------------------------------------

    def meshed_namespace(self, name: str) -> str:
        """Create namespace ``name`` annotated ``linkerd.io/inject: enabled``."""
        self.apply(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n"
            f"  name: {name}\n  annotations:\n    linkerd.io/inject: enabled\n"
        )
        return name

    def deploy(self, namespace: str, *manifests: str, ready: dict[str, int]) -> None:
        """Create the meshed namespace, apply ``manifests``, wait for ``{app: ready pods}``."""
        self.meshed_namespace(namespace)
        for manifest in manifests:
            self.apply(manifest)
        for app, count in ready.items():
            self.wait_ready(namespace, f"app={app}", count, limit=180)

    def delete_namespace(self, name: str, limit: int = 90) -> None:
        """Delete the namespace and wait (bounded) until its pods are gone, which frees the
        node for the next test module; a namespace that lingers is left to the mesh's stop."""
        self.kubectl(
            "delete", "namespace", name, "--ignore-not-found", f"--timeout={limit}s", check=False
        )

    # -- lifecycle -------------------------------------------------------------------------

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the local mesh exited:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL ``gossamer dev up``, as a crash would: what it started stays behind."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, limit: float = 90) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class InPodRun:
    """A client running in a pod in the background; ``result`` waits for its JSON line."""

    def __init__(self, process: subprocess.Popen[str], limit: float) -> None:
        self.process = process
        self.limit = limit

    def result(self) -> Any:
        try:
            stdout, stderr = self.process.communicate(timeout=self.limit)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"in-pod client still running after {self.limit}s") from None
        if self.process.returncode != 0:
            raise AssertionError(
                f"in-pod client failed ({self.process.returncode}): {stderr[-2000:]}"
            )
        return json.loads(stdout.strip().splitlines()[-1])

    def stop(self) -> Any:
        """Ask the client to stop early (SIGTERM); it still prints its summary."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.result()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def attach_local_mesh(state_dir: Path, prefix: str) -> LocalMeshHandle:
    """A handle on a mesh already running (``gossamer dev up --headless``); never stopped here."""
    info = json.loads((state_dir / "ready.json").read_text())
    log = state_dir.parent / f"{prefix}-mesh.log"
    return LocalMeshHandle(None, state_dir, NodeLayout(prefix=prefix), info["kubeconfig"], log)


def start_local_mesh(state_dir: Path, prefix: str, image_maps: Sequence[Path]) -> LocalMeshHandle:
    layout = NodeLayout(prefix=prefix)
    log = state_dir.parent / f"{prefix}-mesh.log"
    argv = [
        sys.executable, "-m", "gossamer_cli.main", "dev", "up", "--headless",
        "--state-dir", str(state_dir), "--prefix", prefix, "--duration", "3000",
    ]  # fmt: skip
    for path in image_maps:
        argv += ["--images", str(path)]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    ready = state_dir / "ready.json"
    deadline = time.monotonic() + 180
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"local mesh did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    info = json.loads(ready.read_text())
    return LocalMeshHandle(process, state_dir, layout, info["kubeconfig"], log)


# -- what a mesh leaves behind -----------------------------------------------------------------

FIREWALL_SAVERS = ("iptables-nft-save", "iptables-legacy-save", "ip6tables-nft-save",
                   "ip6tables-legacy-save")  # fmt: skip


def host_firewall() -> dict[str, list[str]]:
    """The host's own iptables rules and chains (both backends), counters left out."""
    rules: dict[str, list[str]] = {}
    for saver in FIREWALL_SAVERS:
        try:
            out = subprocess.run([saver], capture_output=True, text=True, timeout=30).stdout
        except FileNotFoundError:
            continue
        rules[saver] = [
            line.split(" [", 1)[0] if line.startswith(":") else line
            for line in out.splitlines()
            if line and not line.startswith("#")
        ]
    return rules


def proc_start(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def mesh_processes(layout: NodeLayout) -> dict[int, int]:
    """Every process inside the mesh's node and pod namespaces: {pid: start time}."""
    from gossamer_cli.dev import node

    found = {pid: proc_start(pid) for pid in node.processes_inside(layout)}
    return {pid: start for pid, start in found.items() if start is not None}


def still_running(processes: dict[int, int]) -> list[str]:
    """Those of ``processes`` that still run (the same pid and start time, not a zombie)."""
    alive = []
    for pid, start in processes.items():
        if proc_start(pid) != start:
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            alive.append(f"{pid}: {cmdline.strip()[:200]}")
    return alive


def leftovers(state: Path, prefix: str) -> list[str]:
    """Namespaces, /etc/netns entries and processes named after ``prefix`` or ``state``."""
    found = []
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [line.split()[0] for line in namespaces.splitlines() if line.startswith(prefix)]
    if Path("/etc/netns").exists():
        found += [p.name for p in Path("/etc/netns").iterdir() if p.name.startswith(prefix)]
    procs = subprocess.run(["pgrep", "-af", f"{state}|{prefix}-"], capture_output=True, text=True)
    found += [line for line in procs.stdout.splitlines() if "pgrep" not in line]
    return found


# -- manifests ---------------------------------------------------------------------------------

E2E_IMAGE = "gossamer/e2e-app:dev"


def echo_app(
    namespace: str,
    name: str,
    *,
    replicas: int = 1,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    service: bool = True,
    service_account: str | None = None,
    annotations: dict[str, str] | None = None,
) -> str:
    """A ServiceAccount, a Deployment of echo.py (port ``http`` 8080) and its Service.

    Pods carry ``app: <name>`` plus ``labels`` and ``annotations`` (such as
    ``config.linkerd.io/proxy-log-level``); the Service selects ``app: <name>``.
    """
    sa = service_account or name
    pod_labels = {"app": name, **(labels or {})}
    env_list: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    env_list += [{"name": k, "value": v} for k, v in (env or {}).items()]
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": sa, "namespace": namespace},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": pod_labels, "annotations": dict(annotations or {})},
                    "spec": {
                        "serviceAccountName": sa,
                        "terminationGracePeriodSeconds": 10,
                        "containers": [
                            {
                                "name": "app",
                                "image": E2E_IMAGE,
                                "args": ["--listen", "0.0.0.0:8080", *args],
                                "env": env_list,
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8080},
                                    "periodSeconds": 1,
                                },
                            }
                        ],
                    },
                },
            },
        },
    ]
    if service:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "selector": {"app": name},
                    "ports": [{"name": "http", "port": 8080, "targetPort": "http"}],
                },
            }
        )
    return yaml.safe_dump_all(docs, sort_keys=False)


def service_url(namespace: str, name: str, path: str = "/") -> str:
    return f"http://{name}.{namespace}.svc.cluster.local:8080{path}"


def identity(namespace: str, service_account: str) -> str:
    return f"{service_account}.{namespace}.serviceaccount.identity.gossamer.cluster.local"


def counter(metrics: str, name: str, **labels: str) -> float:
    """Sum of a counter's samples whose labels include ``labels`` (Prometheus text)."""
    return sum(
        s.value
        for s in promtext.parse(metrics)
        if s.name == name and all(s.label(k) == v for k, v in labels.items())
    )


def fetch_code(
    url: str, *, method: str = "GET", body: str = "", headers: dict[str, str] | None = None
) -> str:
    """Python (for :meth:`LocalMeshHandle.python_in_pod`) that makes one request with urllib
    and prints ``{"status", "headers", "body"}`` (an HTTP error status is an answer too)."""
    return f"""
import json, urllib.error, urllib.request
req = urllib.request.Request({url!r}, data={body.encode()!r} or None, method={method!r},
                             headers={headers or {}!r})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        out = {{"status": r.status, "headers": dict(r.headers), "body": r.read().decode()}}
except urllib.error.HTTPError as e:
    out = {{"status": e.code, "headers": dict(e.headers), "body": e.read().decode()}}
print(json.dumps(out))
"""


def converge(attempt: Callable[[], T], done: Callable[[T], bool], limit: float = 60.0) -> T:
    """Repeat ``attempt`` until ``done`` says its result shows the wanted state, for at most
    ``limit`` seconds; returns the last result (the caller asserts on it)."""
    deadline = time.monotonic() + limit
    while True:
        result = attempt()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(1)
