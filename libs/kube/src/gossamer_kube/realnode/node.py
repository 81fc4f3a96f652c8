"""A real single-node Kubernetes cluster on this machine (``make node-up`` / ``make node-down``).

The test control plane (etcd, kube-apiserver, controller-manager, scheduler) plus a real node:
containerd with runc, the bridge CNI plugin, kubelet, kube-proxy in iptables mode, cluster DNS
and a local image registry (the CNCF distribution server) on ``localhost:5000``. Pods run in
real containers through the CRI, and their images are pulled from that registry.

Like local mode, everything lives in one network namespace (``gossamer-node``) joined to the
host by a veth pair: the apiserver listens on the node's address there, so ``kubectl`` on the
host reaches it, while the bridge, the routes, kube-proxy's rules and the pod networks never
touch the host's. All state sits under one directory; ``down`` stops every process, removes
every mount, namespace and cgroup that the node made, and restores the global sysctls that
kubelet changes. The quirks of this machine kind (design.md section 8) are handled here.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from gossamer_kube.errors import KubeApiError, KubeError
from gossamer_kube.realnode.clusterdns import query_a
from gossamer_kube.testing.admin import AdminHTTP
from gossamer_kube.testing.cluster import ClusterOptions, ClusterStartError, KubeTestCluster
from gossamer_kube.testing.process import ComponentProcess, ProcessRecord

__all__ = ["NodeError", "NodeOptions", "RealNode"]

STATE_FILE = "node.json"
CLONE_NEWNET = 0x40000000
#: Global (not per-namespace) sysctls that kubelet or its plugins set; restored by ``down``.
GLOBAL_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
#: Host directories kubelet and the CNI plugins write to whatever their configuration says.
HOST_DIRS = (Path("/var/log/pods"), Path("/var/log/containers"), Path("/var/lib/cni"))
PAUSE_TAG = "gossamer-1"
#: Every pod's cgroup sits below this one, in each cgroup v1 hierarchy.
CGROUP_ROOT = "/gossamer-node"


class NodeError(RuntimeError):
    """The node could not be brought up or torn down; the message says which part failed."""


@dataclass(frozen=True)
class NodeOptions:
    state_dir: Path = Path("/var/lib/gossamer-node")
    netns: str = "gossamer-node"
    host_veth: str = "gsn-host"
    host_ip: str = "10.231.0.1"
    node_ip: str = "10.231.0.2"
    link_prefix: int = 24
    node_name: str = "gossamer-node"
    bridge: str = "gsn0"
    pod_cidr: str = "10.238.0.0/24"
    service_cidr: str = "10.239.0.0/24"
    service_ip: str = "10.239.0.1"
    dns_ip: str = "10.239.0.10"
    cluster_domain: str = "cluster.local"
    registry_port: int = 5000
    start_timeout: float = 240.0

    @property
    def registry(self) -> str:
        return f"localhost:{self.registry_port}"

    @property
    def pause_image(self) -> str:
        return f"{self.registry}/gossamer/pause:{PAUSE_TAG}"

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns


def _run(argv: list[str], *, check: bool = True, timeout: float = 120.0) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return proc.stdout


def enter_netns(path: Path) -> None:
    """Move this (single-threaded) process into the network namespace at ``path``.

    Every child started afterwards inherits it; the mount namespace stays the host's, so
    kubelet's volume mounts and containerd's bind mounts see each other.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NodeError(f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _read_sysctl(name: str) -> str:
    return Path("/proc/sys", name).read_text().strip()


class RealNode:
    """``up()`` brings the node up and leaves it running; ``down()`` undoes all of it."""

    def __init__(self, node_bin: Path, options: NodeOptions | None = None) -> None:
        self.options = options or NodeOptions()
        self.node_bin = node_bin
        self.state_dir = self.options.state_dir
        self.processes: list[ComponentProcess] = []

    # -- paths --------------------------------------------------------------------------------

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def cluster_dir(self) -> Path:
        return self.state_dir / "cluster"

    @property
    def kubeconfig(self) -> Path:
        return self.cluster_dir / "kubeconfig"

    @property
    def containerd_sock(self) -> Path:
        return self.state_dir / "containerd" / "containerd.sock"

    # -- up -----------------------------------------------------------------------------------

    def up(self) -> None:
        opts = self.options
        if (self.state_dir / STATE_FILE).exists():
            raise NodeError(f"a node is already recorded in {self.state_dir}; run node-down")
        for tool in (
            "ip",
            "iptables",
            "containerd",
            "containerd-shim-runc-v2",
            "runc",
            "docker-registry",
            "buildah",
            "ctr",
            "conntrack",
        ):
            if shutil.which(tool) is None:
                raise NodeError(
                    f"{tool} is not installed (make node-up installs NODE_DEB_PACKAGES)"
                )
        for binary in ("kubelet", "kube-proxy", "kubectl", "pause"):
            if not os.access(self.node_bin / binary, os.X_OK):
                raise NodeError(f"{self.node_bin / binary} missing (scripts/kube-bins.sh --node)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self._state: dict[str, Any] = {
            "options": {k: str(v) for k, v in asdict(opts).items()},
            "sysctls": {name: _read_sysctl(name) for name in GLOBAL_SYSCTLS},
            "host_dirs": {
                str(d): (sorted(p.name for p in d.iterdir()) if d.is_dir() else None)
                for d in HOST_DIRS
            },
            "processes": [],
            "netns": None,
            "started": time.time(),
            "cni_netns_before": sorted(p.name for p in _cni_netns_files()),
        }
        self._write_state()
        try:
            self._up()
        except BaseException:
            self.detach()
            # Keep the logs of a failed start where the next start does not clear them.
            saved = self.state_dir.with_name(self.state_dir.name + "-failed-logs")
            shutil.rmtree(saved, ignore_errors=True)
            shutil.copytree(self.log_dir, saved, ignore_dangling_symlinks=True)
            with contextlib.suppress(OSError):
                shutil.copytree(self.cluster_dir / "logs", saved / "cluster")
            down(self.state_dir, keep_failed_logs=True)
            raise
        self.detach()

    def _up(self) -> None:
        opts = self.options
        deadline = time.monotonic() + opts.start_timeout
        self._make_netns()
        enter_netns(opts.netns_path)
        self._start_registry(deadline)
        self._push_pause_image()
        self._start_containerd(deadline)
        cluster = KubeTestCluster(
            self.cluster_dir,
            options=ClusterOptions(
                node_name=opts.node_name,
                node_ip=opts.node_ip,
                pod_cidr=opts.pod_cidr,
                node_pod_cidr=opts.pod_cidr,
                service_cidr=opts.service_cidr,
                service_ip=opts.service_ip,
                api_address=opts.node_ip,
                fake_node=False,
            ),
        )
        try:
            cluster.start()
        except ClusterStartError as exc:
            raise NodeError(str(exc)) from exc
        cluster.detach()
        admin = AdminHTTP(cluster.config)
        self._start_kubelet(admin, deadline)
        self._start_kube_proxy()
        self._start_dns(admin, deadline)

    def _make_netns(self) -> None:
        opts = self.options
        _run(["ip", "netns", "add", opts.netns])
        self._state["netns"] = opts.netns
        self._write_state()
        ns = ["ip", "-n", opts.netns]
        _run(
            [
                "ip",
                "link",
                "add",
                opts.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                opts.netns,
            ]
        )
        _run(["ip", "addr", "add", f"{opts.host_ip}/{opts.link_prefix}", "dev", opts.host_veth])
        _run(["ip", "link", "set", opts.host_veth, "up"])
        _run([*ns, "link", "set", "lo", "up"])
        _run([*ns, "addr", "add", f"{opts.node_ip}/{opts.link_prefix}", "dev", "eth0"])
        _run([*ns, "link", "set", "eth0", "up"])
        # kubelet and kube-proxy want a default route; the host side does not forward it on.
        _run([*ns, "route", "add", "default", "via", opts.host_ip])

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> ComponentProcess:
        proc = ComponentProcess.start(name, argv, self.log_dir / f"{name}.log", env=env)
        self.processes.append(proc)
        self._state["processes"].append(proc.record.to_json())
        self._write_state()
        return proc

    def _wait(
        self, owner: ComponentProcess, what: str, check: Callable[[], bool], deadline: float
    ) -> None:
        while True:
            for proc in self.processes:
                code = proc.exited()
                if code is not None:
                    raise NodeError(
                        f"{proc.name} exited with status {code}; see {proc.record.log}"
                        " (kept in <state-dir>-failed-logs)"
                    )
            with contextlib.suppress(KubeError, OSError):
                if check():
                    return
            if time.monotonic() > deadline:
                raise NodeError(
                    f"{owner.name}: timed out waiting for {what}; see {owner.record.log}"
                )
            time.sleep(0.2)

    def _start_registry(self, deadline: float) -> None:
        opts = self.options
        root = self.state_dir / "registry"
        root.mkdir(exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{opts.registry_port}"},
        }
        path = self.state_dir / "registry.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = self._spawn("registry", ["docker-registry", "serve", str(path)])

        def ready() -> bool:
            with urllib.request.urlopen(f"http://{opts.registry}/v2/", timeout=2) as resp:
                return bool(resp.status == 200)

        self._wait(proc, "registry /v2/", ready, deadline)

    def _push_pause_image(self) -> None:
        """The sandbox image: the static pause binary FROM scratch, via the local registry."""
        opts = self.options
        container = _run(["buildah", "from", "scratch"]).strip()
        try:
            _run(["buildah", "copy", container, str(self.node_bin / "pause"), "/pause"])
            _run(
                [
                    "buildah",
                    "config",
                    "--entrypoint",
                    '["/pause"]',
                    "--user",
                    "65535:65535",
                    container,
                ]
            )
            image = _run(["buildah", "commit", "--quiet", "--rm", container]).strip()
        except BaseException:
            _run(["buildah", "rm", container], check=False)
            raise
        try:
            _run(
                [
                    "buildah",
                    "push",
                    "--quiet",
                    "--tls-verify=false",
                    image,
                    f"docker://{opts.pause_image}",
                ]
            )
        finally:
            _run(["buildah", "rmi", image], check=False)

    def _start_containerd(self, deadline: float) -> None:
        opts = self.options
        base = self.state_dir / "containerd"
        certs = base / "certs.d" / opts.registry
        certs.mkdir(parents=True, exist_ok=True)
        (certs / "hosts.toml").write_text(
            f'server = "http://{opts.registry}"\n\n'
            f'[host."http://{opts.registry}"]\n  capabilities = ["pull", "resolve"]\n'
        )
        cni_conf = self.state_dir / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "0.4.0",
            "name": "gossamer-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": opts.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(self.state_dir / "cni" / "ipam"),
                        "ranges": [[{"subnet": opts.pod_cidr}]],
                        # host-local hands out no routes unless asked (design.md section 8).
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (cni_conf / "10-gossamer-node.conflist").write_text(json.dumps(conflist, indent=2))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{self.containerd_sock}"
[ttrpc]
  address = "{self.containerd_sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"

[{cri}]
  sandbox_image = "{opts.pause_image}"
  # root lacks CAP_SYS_RESOURCE here: without this every sandbox fails (design.md section 8).
  restrict_oom_score_adj = true
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{base / "runc"}"
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
  [{cri}.registry]
    config_path = "{base / "certs.d"}"
"""
        path = base / "config.toml"
        path.write_text(config)
        proc = self._spawn("containerd", ["containerd", "--config", str(path)])
        ctr = ["ctr", "--address", str(self.containerd_sock)]
        self._wait(proc, "containerd socket", lambda: _ok([*ctr, "version"]), deadline)

    def _start_kubelet(self, admin: AdminHTTP, deadline: float) -> None:
        opts = self.options
        base = self.state_dir / "kubelet"
        base.mkdir(exist_ok=True)
        resolv = self.state_dir / "resolv.conf"
        # Pods with dnsPolicy Default get this (no upstream: the node has no outside world).
        resolv.write_text("nameserver 127.0.0.1\noptions ndots:1\n")
        pki = self.cluster_dir / "pki"
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": opts.node_ip,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            # cgroup v1 without systemd; pods under their own root so down removes them all.
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": CGROUP_ROOT,
            "failSwapOn": False,
            # kubelet's own KUBE-* chains would go into the namespace anyway; kube-proxy makes
            # what it needs.
            "makeIPTablesUtilChains": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_sock}",
            "clusterDNS": [opts.dns_ip],
            "clusterDomain": opts.cluster_domain,
            "resolvConf": str(resolv),
            "hairpinMode": "hairpin-veth",
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            "protectKernelDefaults": False,
            "rotateCertificates": False,
            "kernelMemcgNotification": False,
            "localStorageCapacityIsolation": False,
            "maxPods": 60,
            "shutdownGracePeriod": "0s",
        }
        _make_cgroup_root(CGROUP_ROOT)
        path = self.state_dir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = self._spawn(
            "kubelet",
            [
                str(self.node_bin / "kubelet"),
                f"--config={path}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={base}",
                f"--cert-dir={base / 'pki'}",
                f"--hostname-override={opts.node_name}",
                f"--node-ip={opts.node_ip}",
                f"--pod-infra-container-image={opts.pause_image}",
                "--node-labels=gossamer.io/real-node=true",
                "--v=1",
            ],
        )
        self._wait(
            proc,
            f"node {opts.node_name} Ready",
            lambda: _node_ready(admin, opts.node_name),
            deadline,
        )

    def _start_kube_proxy(self) -> None:
        opts = self.options
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(self.kubeconfig)},
            "hostnameOverride": opts.node_name,
            "clusterCIDR": opts.pod_cidr,
            "bindAddress": opts.node_ip,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # Leave the conntrack sysctls alone: some of them are global.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        path = self.state_dir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        self._spawn("kube-proxy", [str(self.node_bin / "kube-proxy"), f"--config={path}", "--v=1"])

    def _start_dns(self, admin: AdminHTTP, deadline: float) -> None:
        """Cluster DNS: our kube-dns-compatible server on the node, behind Service kube-dns."""
        opts = self.options
        labels = {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "clusterIP": opts.dns_ip,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        }
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-node",
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": "gossamer-node",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [opts.node_ip], "conditions": {"ready": True}}],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ],
        }
        admin.request("POST", "/api/v1/namespaces/kube-system/services", service)
        admin.request(
            "POST", "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices", slice_
        )
        proc = self._spawn(
            "cluster-dns",
            [
                sys.executable,
                "-m",
                "gossamer_kube.realnode.clusterdns",
                f"--kubeconfig={self.kubeconfig}",
                f"--listen={opts.node_ip}:53",
                f"--domain={opts.cluster_domain}",
            ],
        )
        self._wait(
            proc, "cluster DNS", lambda: _dns_answers(opts.node_ip, opts.cluster_domain), deadline
        )

    # -- state --------------------------------------------------------------------------------

    def detach(self) -> None:
        for proc in self.processes:
            proc.popen = None
        self.processes.clear()

    def _write_state(self) -> None:
        tmp = self.state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(self._state, indent=2))
        tmp.replace(self.state_dir / STATE_FILE)


def _ok(argv: list[str]) -> bool:
    return subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0


def _node_ready(admin: AdminHTTP, name: str) -> bool:
    try:
        node = admin.request("GET", f"/api/v1/nodes/{name}")
    except KubeApiError as exc:
        if exc.not_found:
            return False
        raise
    for cond in node.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _dns_answers(server: str, domain: str) -> bool:
    return bool(query_a(server, f"kubernetes.default.svc.{domain}"))


# -- down -------------------------------------------------------------------------------------


def _mounts_under(prefixes: tuple[str, ...]) -> list[str]:
    """Mount points at or below any prefix, deepest first (from this mount namespace)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def _make_cgroup_root(root: str) -> None:
    """kubelet wants its cgroup root to exist in every hierarchy; cpuset's must be populated."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if hierarchy.name == "unified" or not hierarchy.is_dir() or hierarchy.is_symlink():
            continue
        path = hierarchy / root.lstrip("/")
        path.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (hierarchy / name).exists() and not (path / name).read_text().strip():
                (path / name).write_text((hierarchy / name).read_text())


def _cgroup_dirs(root: str) -> Iterator[Path]:
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        path = hierarchy / root.lstrip("/")
        if path.is_dir():
            yield path


def _cgroup_tree(top: Path) -> list[Path]:
    """Every cgroup directory below ``top``, deepest first; cgroups that vanish while walked
    (runc removes a container's as it exits) are simply not listed."""
    found: list[Path] = []
    for dirpath, _dirs, _files in os.walk(top, onerror=lambda _err: None):
        found.append(Path(dirpath))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _kill_cgroup_tree(root: str) -> None:
    """SIGKILL every process in the node's pod cgroups, then remove the cgroups bottom-up."""
    for _ in range(50):
        alive = False
        for top in _cgroup_dirs(root):
            for cgroup in _cgroup_tree(top):
                try:
                    pids = (cgroup / "cgroup.procs").read_text().split()
                except OSError:
                    continue
                for pid in pids:
                    alive = True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), 9)
        if not alive:
            break
        time.sleep(0.1)
    for top in _cgroup_dirs(root):
        for cgroup in _cgroup_tree(top):
            with contextlib.suppress(OSError):
                cgroup.rmdir()


def _sandbox_netns_paths(sock: Path) -> list[str]:
    """Network namespace files of containerd's pod sandboxes (``/run/netns/cni-*``)."""
    ctr = ["ctr", "--address", str(sock), "-n", "k8s.io"]
    try:
        ids = _run([*ctr, "containers", "ls", "-q"], timeout=20).split()
    except (NodeError, subprocess.TimeoutExpired):
        return []
    paths = []
    for cid in ids:
        try:
            info = json.loads(_run([*ctr, "containers", "info", cid], timeout=20))
        except (NodeError, ValueError, subprocess.TimeoutExpired):
            continue
        for ns in (info.get("Spec") or {}).get("linux", {}).get("namespaces", []) or []:
            path = ns.get("path") or ""
            if ns.get("type") == "network" and path.startswith(("/var/run/netns/", "/run/netns/")):
                paths.append(path.replace("/var/run/", "/run/", 1))
    return sorted(set(paths))


def _cni_netns_files() -> list[Path]:
    netns_dir = Path("/run/netns")
    return sorted(netns_dir.glob("cni-*")) if netns_dir.is_dir() else []


def _our_cni_netns(state: dict[str, Any]) -> list[str]:
    """Pod network namespace files made by our containerd since the node started.

    containerd names them ``cni-<uuid>`` under /run/netns; those that existed before node-up
    or are older than it are not ours.
    """
    before = set(state.get("cni_netns_before") or [])
    started = float(state.get("started") or 0.0)
    ours = []
    for path in _cni_netns_files():
        with contextlib.suppress(OSError):
            if path.name not in before and path.stat().st_mtime >= started:
                ours.append(str(path))
    return ours


def _kill_shims(sock: Path) -> None:
    """containerd's shims run in their own sessions: find them by our socket's address."""
    needle = str(sock).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and needle in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), 9)


def down(state_dir: Path, *, keep_failed_logs: bool = False) -> list[str]:
    """Stop and remove everything the node recorded in ``state_dir``; return what was done.

    The logs a failed start saved next to ``state_dir`` go too, unless ``keep_failed_logs``.
    """
    done: list[str] = []
    path = state_dir / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        state = None
    if state is None:
        if state_dir.exists():
            raise NodeError(f"{state_dir} exists but holds no {STATE_FILE}; remove it by hand")
        return done
    opts = state.get("options", {})
    netns = state.get("netns")
    sock = state_dir / "containerd" / "containerd.sock"
    records = [ProcessRecord.from_json(p) for p in state.get("processes", [])]
    by_name = {r.name: r for r in records}
    # kubelet first, so nothing restarts what is being removed.
    for name in ("kubelet", "kube-proxy", "cluster-dns"):
        if name in by_name:
            by_name[name].stop(timeout=10.0)
            done.append(name)
    netns_files = _our_cni_netns(state)
    if netns and Path("/run/netns", netns).exists() and sock.exists():
        netns_files = sorted(set(netns_files) | set(_sandbox_netns_paths(sock)))
    _kill_cgroup_tree(CGROUP_ROOT)
    _kill_shims(sock)
    for name in ("containerd", "registry"):
        if name in by_name:
            by_name[name].stop(timeout=10.0)
            done.append(name)
    _kill_shims(sock)
    stopped = KubeTestCluster.stop_detached(state_dir / "cluster")
    done += stopped
    for point in _mounts_under((str(state_dir), *netns_files)):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    for netns_file in netns_files:
        with contextlib.suppress(OSError):
            Path(netns_file).unlink()
    if netns and Path("/run/netns", netns).exists():
        _run(["ip", "netns", "del", netns], check=False)
        done.append(f"netns {netns}")
    host_veth = opts.get("host_veth")
    if host_veth and Path("/sys/class/net", host_veth).exists():
        _run(["ip", "link", "del", host_veth], check=False)
    for name, value in (state.get("sysctls") or {}).items():
        if name in GLOBAL_SYSCTLS and _read_sysctl(name) != value:
            Path("/proc/sys", name).write_text(value)
            done.append(f"sysctl {name}={value}")
    for directory, before in (state.get("host_dirs") or {}).items():
        host_dir = Path(directory)
        if Path(directory) not in HOST_DIRS or not host_dir.is_dir():
            continue
        if before is None:
            shutil.rmtree(host_dir, ignore_errors=True)
        else:
            for entry in host_dir.iterdir():
                if entry.name not in before:
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
    left = _mounts_under((str(state_dir),))
    if left:
        raise NodeError(f"mounts still under {state_dir}: {left[:5]}; not removing it")
    shutil.rmtree(state_dir, ignore_errors=True)
    if not keep_failed_logs:
        shutil.rmtree(state_dir.with_name(state_dir.name + "-failed-logs"), ignore_errors=True)
    return done


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m gossamer_kube.realnode.node")
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--node-bin", type=Path, help="kubelet, kube-proxy, kubectl, pause")
    parser.add_argument("--state-dir", type=Path, default=NodeOptions.state_dir)
    args = parser.parse_args(argv)
    options = NodeOptions(state_dir=args.state_dir)
    if args.command == "down":
        try:
            done = down(args.state_dir)
        except NodeError as exc:
            print(f"node-down: {exc}", file=sys.stderr)
            return 1
        print("node-down: " + (", ".join(done) if done else "no node was running"))
        return 0
    if args.command == "status":
        state_path = args.state_dir / STATE_FILE
        if not state_path.exists():
            print("no node")
            return 1
        records = [
            ProcessRecord.from_json(p) for p in json.loads(state_path.read_text())["processes"]
        ]
        for record in records:
            print(
                f"{record.name:12} pid {record.pid:7} {'running' if record.is_ours() else 'GONE'}"
            )
        return 0
    if args.node_bin is None:
        parser.error("up needs --node-bin (scripts/kube-bins.sh --node prints it)")
    node = RealNode(args.node_bin, options)
    start = time.monotonic()
    try:
        node.up()
    except (NodeError, KubeError) as exc:
        print(f"node-up failed: {exc}", file=sys.stderr)
        return 1
    print(f"node-up: {options.node_name} Ready in {time.monotonic() - start:.0f}s")
    print(f"export KUBECONFIG={node.kubeconfig}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
