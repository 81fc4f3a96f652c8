"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, controller-manager,
kube-scheduler and kwok, for Gossamer's integration tests and local mode.

Everything a test touches is the real thing (watch semantics and resourceVersions, admission
webhooks, TokenRequest/TokenReview, EndpointSlices made by the real controller) except the
kubelet, which kwok replaces: pods on the fake node become Running with IPs from a pod CIDR
that exists only as API data. All ports are free loopback ports chosen at start, all state
(PKI, kubeconfig, logs) lives in one directory and etcd's data on tmpfs, and stopping kills
exactly the process groups this cluster started.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml

from gossamer_kube.config import KubeConfig
from gossamer_kube.errors import KubeApiError, KubeError
from gossamer_kube.testing.admin import AdminHTTP
from gossamer_kube.testing.binaries import KubeBinaries
from gossamer_kube.testing.pki import FRONT_PROXY_CLIENT_NAME, ClusterPKI, PKIFiles
from gossamer_kube.testing.process import ComponentProcess, ProcessRecord, tail
from gossamer_kube.testing.stages import KWOK_STAGES_YAML

__all__ = ["ClusterOptions", "ClusterStartError", "KubeTestCluster"]

SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
STATE_FILE = "cluster.json"

# The controllers Gossamer relies on. node-lifecycle, taint-eviction and pod-GC are left out:
# nothing real heartbeats the fake node, and they would evict or delete pods after a while.
CONTROLLERS = (
    "endpointslice-controller",
    "endpoints-controller",
    "endpointslice-mirroring-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
    "root-ca-certificate-publisher-controller",
)


class ClusterStartError(RuntimeError):
    """A component failed to start; the message carries the tail of its log."""

    def __init__(self, component: str, problem: str, log: Path | None) -> None:
        text = f"{component}: {problem}"
        if log is not None:
            text += f"\n--- last lines of {log} ---\n{tail(log)}"
        super().__init__(text)
        self.component = component
        self.log = log


@dataclass(frozen=True)
class ClusterOptions:
    """Addresses that exist only as API data (no traffic is ever sent to them)."""

    node_name: str = "gossamer-node"
    node_ip: str = "10.240.0.1"
    pod_cidr: str = "10.244.0.0/16"
    node_pod_cidr: str = "10.244.0.0/24"
    service_cidr: str = "10.96.0.0/16"
    service_ip: str = "10.96.0.1"
    scheduler: bool = True
    start_timeout: float = 120.0
    kwok_stages: str = KWOK_STAGES_YAML
    """kwok's configuration and stages; local mode swaps the pod stages for its own."""
    api_address: str = "127.0.0.1"
    """Where kube-apiserver listens and what it advertises (the ``kubernetes`` Service)."""
    fake_node: bool = True
    """kwok and its fake node; False for a real kubelet (``gossamer_kube.realnode.node``),
    which also makes the apiserver keep the ``kubernetes`` endpoints and reach kubelets."""


def free_port() -> int:
    """A loopback TCP port that is free right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tmpfs_dir(prefix: str) -> Path:
    shm = Path("/dev/shm")  # noqa: S108 - mkdtemp below makes a private 0700 dir inside
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


class KubeTestCluster:
    """Start with :meth:`start` (or ``with``), stop with :meth:`stop`.

    ``state_dir=None`` makes a private temporary directory that :meth:`stop` removes; a given
    ``state_dir`` (local mode's ``.kube-local``) is created if needed and emptied on stop.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        binaries: KubeBinaries | None = None,
        options: ClusterOptions | None = None,
    ) -> None:
        self.options = options or ClusterOptions()
        self._binaries = binaries
        self._given_state_dir = state_dir
        self.state_dir = state_dir or Path("/nonexistent")
        self.etcd_data_dir: Path | None = None
        self.processes: list[ComponentProcess] = []
        self.server = ""
        self.etcd_url = ""
        self._pki: PKIFiles | None = None
        self._config: KubeConfig | None = None
        self._started = False

    # -- public attributes --------------------------------------------------------------------

    @property
    def node_name(self) -> str:
        return self.options.node_name

    @property
    def bin_dir(self) -> Path:
        return self.binaries.bin_dir

    @property
    def binaries(self) -> KubeBinaries:
        if self._binaries is None:
            self._binaries = KubeBinaries.locate()
        return self._binaries

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "pki" / "ca.crt"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def config(self) -> KubeConfig:
        if self._config is None:
            raise RuntimeError("cluster not started")
        return self._config

    def admin(self) -> AdminHTTP:
        return AdminHTTP(self.config)

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._started:
            raise RuntimeError("cluster already started")
        if self._given_state_dir is not None and (self._given_state_dir / STATE_FILE).exists():
            # Checked before anything is touched: cleaning up after this failure must not
            # remove the files of the cluster that is recorded there.
            raise RuntimeError(f"a cluster is already recorded in {self._given_state_dir}")
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        binaries = self.binaries
        if self._given_state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix="gossamer-kube-"))
        else:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self.etcd_data_dir = _tmpfs_dir("gossamer-etcd-")
        opts = self.options
        pki = ClusterPKI.generate(opts.service_ip, api_address=opts.api_address)
        self._pki = files = pki.write(self.state_dir / "pki")
        self._write_state()

        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        self.server = f"https://{opts.api_address}:{api_port}"
        self._write_kubeconfig(pki)
        self._config = KubeConfig.from_kubeconfig(self.kubeconfig)
        deadline = time.monotonic() + opts.start_timeout

        peer = f"http://127.0.0.1:{peer_port}"
        etcd = self._spawn(
            "etcd",
            [
                str(binaries.etcd),
                "--name=gossamer",
                f"--data-dir={self.etcd_data_dir}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=gossamer={peer}",
                "--initial-cluster-state=new",
                "--logger=zap",
                "--log-outputs=stderr",
            ],
        )
        self._wait(etcd, "etcd /health", self._etcd_healthy, deadline)

        if opts.fake_node:
            node_args = ["--endpoint-reconciler-type=none"]
        else:
            # The admin credential (system:masters) doubles as the apiserver's kubelet client
            # for logs/exec/port-forward; kubelets are reached at their InternalIP.
            node_args = [
                "--endpoint-reconciler-type=lease",
                f"--kubelet-client-certificate={files.admin_cert}",
                f"--kubelet-client-key={files.admin_key}",
                "--kubelet-preferred-address-types=InternalIP",
            ]
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(binaries.path("kube-apiserver")),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={opts.api_address}",
                f"--advertise-address={opts.api_address}",
                f"--secure-port={api_port}",
                f"--tls-cert-file={files.apiserver_cert}",
                f"--tls-private-key-file={files.apiserver_key}",
                f"--client-ca-file={files.ca_cert}",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-signing-key-file={files.sa_key}",
                f"--service-account-key-file={files.sa_pub}",
                "--authorization-mode=Node,RBAC",
                # The aggregation layer, as kubeadm sets it up: APIServices are proxied to
                # with the front-proxy client certificate, users named in X-Remote-*.
                f"--requestheader-client-ca-file={files.front_proxy_ca_cert}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT_NAME}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={files.front_proxy_client_cert}",
                f"--proxy-client-key-file={files.front_proxy_client_key}",
                "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,"
                "MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
                # Nodes are born with a not-ready taint that only node-lifecycle-controller
                # lifts; that controller is not run (nothing real heartbeats), so the fake
                # node is created untainted instead.
                "--disable-admission-plugins=TaintNodesByCondition",
                f"--service-cluster-ip-range={opts.service_cidr}",
                "--allow-privileged=true",
                *node_args,
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--shutdown-delay-duration=0s",
                # Core Events bypass the watch cache, so compact_etcd() yields a real 410 Gone
                # for them (cached kinds keep serving old versions from memory for a while).
                "--watch-cache-sizes=events#0",
                "--v=1",
            ],
        )
        admin = self.admin()
        self._wait(apiserver, "kube-apiserver /readyz", lambda: _readyz(admin), deadline)

        kubeconfig = str(self.kubeconfig)
        self._spawn(
            "kube-controller-manager",
            [
                str(binaries.path("kube-controller-manager")),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={files.sa_key}",
                f"--root-ca-file={files.ca_cert}",
                f"--service-cluster-ip-range={opts.service_cidr}",
                "--concurrent-endpoint-syncs=5",
                "--endpointslice-updates-batch-period=0s",
                "--v=1",
            ],
        )
        if opts.scheduler:
            self._spawn(
                "kube-scheduler",
                [
                    str(binaries.path("kube-scheduler")),
                    f"--kubeconfig={kubeconfig}",
                    f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}",
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    "--secure-port=0",
                    "--v=1",
                ],
            )
        if opts.fake_node:
            self._start_fake_node(admin, deadline)
        kcm = self._component("kube-controller-manager")
        self._wait(kcm, "default ServiceAccount", lambda: _default_sa(admin), deadline)
        self._write_state()

    def _start_fake_node(self, admin: AdminHTTP, deadline: float) -> None:
        opts = self.options
        binaries = self.binaries
        kubeconfig = str(self.kubeconfig)
        kwok_config = self.state_dir / "kwok.yaml"
        kwok_config.write_text(opts.kwok_stages)
        kwok = self._spawn(
            "kwok",
            [
                str(binaries.path("kwok")),
                f"--kubeconfig={kubeconfig}",
                f"--config={kwok_config}",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                f"--cidr={opts.pod_cidr}",
                f"--node-ip={opts.node_ip}",
                "--node-lease-duration-seconds=40",
            ],
            env={**os.environ, "HOME": str(self.state_dir)},
        )
        self._create_node(admin)
        self._wait(kwok, f"node {opts.node_name} Ready", lambda: _node_ready(admin, opts), deadline)

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> ComponentProcess:
        proc = ComponentProcess.start(name, argv, self.log_dir / f"{name}.log", env=env)
        self.processes.append(proc)
        self._write_state()
        return proc

    def restart_apiserver(self, limit: float = 60.0) -> None:
        """Stop kube-apiserver and start it again with the same arguments and log.

        etcd and every other component keep running, so clients see exactly what they see
        when a real apiserver restarts: broken watches, then the same data.
        """
        old = self._component("kube-apiserver")
        if old.popen is None:
            raise RuntimeError("kube-apiserver was not started by this cluster object")
        argv = [str(a) for a in old.popen.args]  # type: ignore[union-attr]
        old.stop()
        new = ComponentProcess.start("kube-apiserver", argv, Path(old.record.log))
        self.processes[self.processes.index(old)] = new
        self._write_state()
        admin = self.admin()
        self._wait(new, "kube-apiserver /readyz", lambda: _readyz(admin), time.monotonic() + limit)

    def _component(self, name: str) -> ComponentProcess:
        for proc in self.processes:
            if proc.name == name:
                return proc
        raise KeyError(name)

    def _wait(
        self,
        owner: ComponentProcess,
        what: str,
        check: Callable[[], bool],
        deadline: float,
    ) -> None:
        """Poll ``check`` until true; fail fast if any component died, with its log tail."""
        log = Path(owner.record.log)
        while True:
            for proc in self.processes:
                code = proc.exited()
                if code is not None:
                    raise ClusterStartError(
                        proc.name, f"exited with status {code}", Path(proc.record.log)
                    )
            try:
                if check():
                    return
            except KubeError:
                pass
            if time.monotonic() > deadline:
                raise ClusterStartError(owner.name, f"timed out waiting for {what}", log)
            time.sleep(0.1)

    def _etcd_healthy(self) -> bool:
        host, port = self.etcd_url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=2.0)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            body = resp.read()
        except OSError:
            return False
        finally:
            conn.close()
        return resp.status == 200 and b'"health":"true"' in body.replace(b" ", b"")

    def _etcd_post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        host, port = self.etcd_url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10.0)
        try:
            conn.request(
                "POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"}
            )
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise RuntimeError(f"etcd {path}: HTTP {resp.status} {raw[:200]!r}")
        doc = json.loads(raw)
        return doc if isinstance(doc, dict) else {}

    def compact_etcd(self) -> int:
        """Compact etcd up to its current revision and return that revision.

        Afterwards a watch of an uncached kind (core ``events``) from an older resourceVersion
        fails with 410 Gone, which is how informer tests exercise their relist path.
        """
        key = base64.b64encode(b"/registry/").decode()
        revision = int(self._etcd_post("/v3/kv/range", {"key": key})["header"]["revision"])
        self._etcd_post("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def _create_node(self, admin: AdminHTTP) -> None:
        opts = self.options
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": opts.node_name,
                "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                "labels": {
                    "kubernetes.io/hostname": opts.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "topology.kubernetes.io/zone": "zone-a",
                    "type": "kwok",
                },
            },
            "spec": {"podCIDR": opts.node_pod_cidr, "podCIDRs": [opts.node_pod_cidr]},
        }
        admin.request("POST", "/api/v1/nodes", node)

    def _write_kubeconfig(self, pki: ClusterPKI) -> None:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "gossamer-test",
            "clusters": [
                {
                    "name": "gossamer-test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(pki.ca.cert_pem),
                    },
                }
            ],
            "users": [
                {
                    "name": "gossamer-admin",
                    "user": {
                        "client-certificate-data": b64(pki.admin.cert_pem),
                        "client-key-data": b64(pki.admin.key_pem),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "gossamer-test",
                    "context": {"cluster": "gossamer-test", "user": "gossamer-admin"},
                }
            ],
        }
        fd = os.open(self.kubeconfig, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(doc, fh)

    def _write_state(self) -> None:
        state = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "etcd_data_dir": str(self.etcd_data_dir) if self.etcd_data_dir else None,
            "node_name": self.node_name,
            "processes": [p.record.to_json() for p in self.processes],
        }
        tmp = self.state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_dir / STATE_FILE)

    def stop(self) -> None:
        """Stop every component (newest first) and remove the cluster's files."""
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()
        if self.etcd_data_dir is not None:
            shutil.rmtree(self.etcd_data_dir, ignore_errors=True)
            self.etcd_data_dir = None
        if self.state_dir.exists():
            if self._given_state_dir is None:
                shutil.rmtree(self.state_dir, ignore_errors=True)
            else:
                _clear_state_dir(self.state_dir)

    # -- detached clusters (``up`` / ``down``) ------------------------------------------------

    def detach(self) -> None:
        """Forget the processes so this Python process can exit with the cluster running."""
        for proc in self.processes:
            proc.popen = None
        self.processes.clear()

    @staticmethod
    def read_state(state_dir: Path) -> dict[str, Any] | None:
        path = state_dir / STATE_FILE
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    @classmethod
    def stop_detached(cls, state_dir: Path) -> list[str]:
        """Stop the cluster recorded in ``state_dir`` by another process; return what stopped."""
        state = cls.read_state(state_dir)
        stopped: list[str] = []
        if state is not None:
            records = [ProcessRecord.from_json(p) for p in state.get("processes", [])]
            for record in reversed(records):
                if record.is_ours():
                    stopped.append(record.name)
                record.stop()
            etcd_dir = state.get("etcd_data_dir")
            if etcd_dir:
                shutil.rmtree(etcd_dir, ignore_errors=True)
        if state_dir.exists():
            _clear_state_dir(state_dir)
        return stopped


def _clear_state_dir(state_dir: Path) -> None:
    """Remove what a cluster wrote into a caller-owned directory, and the directory if empty."""
    for name in (STATE_FILE, STATE_FILE + ".tmp", "kubeconfig", "kwok.yaml"):
        with contextlib.suppress(FileNotFoundError):
            (state_dir / name).unlink()
    for sub in ("pki", "logs", ".kwok"):
        shutil.rmtree(state_dir / sub, ignore_errors=True)
    with contextlib.suppress(OSError):
        state_dir.rmdir()


def _readyz(admin: AdminHTTP) -> bool:
    status, body = admin.raw("GET", "/readyz")
    return status == 200 and body.strip() == b"ok"


def _node_ready(admin: AdminHTTP, opts: ClusterOptions) -> bool:
    node = admin.request("GET", f"/api/v1/nodes/{opts.node_name}")
    for cond in node.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _default_sa(admin: AdminHTTP) -> bool:
    try:
        admin.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
    except KubeApiError as exc:
        if exc.not_found:
            return False
        raise
    return True
