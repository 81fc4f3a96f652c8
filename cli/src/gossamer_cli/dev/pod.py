"""One pod on the local node: its network namespace, volumes and processes.

The lifecycle follows a kubelet's: sandbox (network namespace wired to the node's bridge,
/etc/hosts), volumes, init containers in order (a native sidecar, an init container with
``restartPolicy: Always``, keeps running once started), then the containers in order, each
container's ``postStart`` hook finishing before the next one starts. Readiness and liveness
probes run from the node. On deletion: ``preStop`` hooks, SIGTERM, the grace period, SIGKILL,
and the namespace removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from gossamer_kube.client import KubeClient
from gossamer_kube.resources import PODS

from gossamer_cli.dev import garp, images, launch, probes, status, volumes
from gossamer_cli.dev.layout import NodeLayout, render_resolv_conf

log = structlog.get_logger("gossamer.dev.pod")

RESTART_BACKOFF_MAX = 30.0
#: While a readiness probe keeps failing, its reason is logged again every this many attempts.
READINESS_LOG_EVERY = 10
NETNS_ETC = Path("/etc/netns")


@dataclass
class RuntimeContext:
    """What every pod shares: the client, the node, how images run, where state lives."""

    client: KubeClient
    layout: NodeLayout
    images: Mapping[str, images.LocalImage]
    state_dir: Path
    hosts_text: str = ""
    now: Any = time.time


@dataclass
class Container:
    spec: Mapping[str, Any]
    state: status.ContainerState
    is_init: bool = False
    sidecar: bool = False
    process: asyncio.subprocess.Process | None = None
    readiness: probes.ProbeSpec | None = None
    liveness: probes.ProbeSpec | None = None
    failures: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class LocalPod:
    def __init__(self, pod: Mapping[str, Any], ctx: RuntimeContext, ip: str) -> None:
        self.pod = pod
        self.ctx = ctx
        meta = pod["metadata"]
        self.key = f"{meta['namespace']}/{meta['name']}"
        self.uid: str = meta["uid"]
        #: The pod's address, fixed for its life: on its eth0, probed, reported as podIP.
        self.ip = ip
        self.netns = ctx.layout.pod_netns(self.uid)
        self.veth = ctx.layout.pod_veth(self.uid)
        self.dir = ctx.state_dir / "pods" / self.uid
        self.state = status.PodState(
            pod_ip=ip, host_ip=ctx.layout.node_address, started_at=ctx.now()
        )
        self.init = [self._container(c, init=True) for c in pod["spec"].get("initContainers") or []]
        self.main = [self._container(c) for c in pod["spec"]["containers"]]
        self.state.init_containers = [c.state for c in self.init]
        self.state.containers = [c.state for c in self.main]
        self.volumes: volumes.PodVolumes | None = None
        self.stopping = False
        self._status_dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._status_task: asyncio.Task[None] | None = None
        self._announce_task: asyncio.Task[None] | None = None

    def _container(self, spec: Mapping[str, Any], init: bool = False) -> Container:
        sidecar = init and spec.get("restartPolicy") == "Always"
        c = Container(
            spec,
            status.ContainerState(spec["name"], spec.get("image", ""), sidecar=sidecar),
            is_init=init,
            sidecar=sidecar,
        )
        ports = spec.get("ports") or []
        if "readinessProbe" in spec:
            c.readiness = probes.parse_probe(spec["readinessProbe"], ports)
        if "livenessProbe" in spec:
            c.liveness = probes.parse_probe(spec["livenessProbe"], ports)
        return c

    @property
    def pod_ip(self) -> str:
        return self.ip

    def observe(self, obj: Mapping[str, Any]) -> None:
        """A newer version of the pod object; a podIP that is not the runtime's is put right."""
        self.pod = obj
        reported = (obj.get("status") or {}).get("podIP")
        if reported and reported != self.ip and not self.stopping:
            log.warning(
                "the pod's status names another IP than its namespace has: reporting the "
                "namespace's again",
                pod=self.key,
                status_ip=reported,
                ip=self.ip,
            )
            self._changed()

    @property
    def view(self) -> Mapping[str, Any]:
        """The pod object with the status this runtime reports (for the downward API)."""
        state = self.state
        own = {
            "podIP": state.pod_ip,
            "podIPs": [{"ip": state.pod_ip}],
            "hostIP": state.host_ip,
            "hostIPs": [{"ip": state.host_ip}],
        }
        return {**self.pod, "status": {**(self.pod.get("status") or {}), **own}}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"pod {self.key}")

    async def _run(self) -> None:
        try:
            await self._sandbox()
            # The namespace has its address: from now on the status says so.
            self._status_task = asyncio.create_task(self._report_status())
            self._changed()
            self.volumes = await volumes.materialize(
                self.ctx.client, self.view, self.dir / "volumes", self.ctx.now()
            )
            for c in self.init:
                if self.stopping:
                    return
                await self._start_init(c)
            self.state.initialized = True
            self._changed()
            for c in self.main:
                if self.stopping:
                    return
                await self._start(c)
                await self._post_start(c)
            await self._refresh_tokens_forever()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("pod failed to start", pod=self.key, error=str(exc))
            for c in self.init + self.main:
                if not c.state.running and c.state.exit_code is None:
                    c.state.waiting_reason = "CreateContainerError"
            self._changed()

    # -- sandbox ---------------------------------------------------------------------------

    async def _sandbox(self) -> None:
        await create_netns(
            self.ctx.layout,
            netns=self.netns,
            veth=self.veth,
            ip=self.pod_ip,
            hosts_text=self.ctx.hosts_text,
            namespace=self.pod["metadata"]["namespace"],
        )
        layout = self.ctx.layout
        # Pod IPs are reused: forget the previous owner's MAC here (the node, where probes
        # come from) at once, and tell every other pod on the bridge (see garp).
        await _run("ip", "neigh", "flush", "to", self.pod_ip, "dev", layout.bridge, check=False)
        self._announce_task = asyncio.create_task(self._announce(), name=f"garp {self.key}")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)

    async def _announce(self) -> None:
        try:
            announced = await garp.announce(self.netns, self.pod_ip)
            if announced.conflict is not None and not self.stopping:
                log.warning(
                    "another host answers for this pod's IP: probes and connections may "
                    "reach it instead (a leftover pod namespace?)",
                    pod=self.key,
                    ip=self.pod_ip,
                    other_mac=announced.conflict,
                )
        except (OSError, RuntimeError, ValueError) as exc:
            if not self.stopping:
                log.warning(
                    "gratuitous ARP failed: neighbours may reach this IP's previous pod",
                    pod=self.key,
                    ip=self.pod_ip,
                    error=str(exc),
                )

    def update_hosts(self, text: str) -> None:
        path = NETNS_ETC / self.netns / "hosts"
        if path.exists() and path.read_text() != text:
            # Rewrite in place: processes see the bind-mounted inode, not a new file.
            with path.open("r+") as f:
                f.write(text)
                f.truncate()

    # -- containers ------------------------------------------------------------------------

    async def _start_init(self, c: Container) -> None:
        backoff = 1.0
        while not self.stopping:
            await self._start(c)
            if c.sidecar:
                await self._post_start(c)
                await self._wait_started(c)
                return
            assert c.process is not None
            code = await c.process.wait()
            if code == 0:
                return
            c.state.restart_count += 1
            self._changed()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX)

    async def _start(self, c: Container) -> None:
        spec = c.spec
        image = self._image(spec)
        argv = images.container_argv(image, spec.get("command"), spec.get("args"))
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOSTNAME": self.pod["metadata"]["name"]}
        env.update(image.env)
        env.update(await self._env(spec))
        identity = launch.identity_for(
            dict(spec), dict(self.pod["spec"].get("securityContext") or {})
        )
        full = launch.launch_argv(
            netns=self.netns,
            identity=identity,
            argv=argv,
            mounts=self._mounts(spec),
            workdir=spec.get("workingDir") or image.workdir,
        )
        logfile = (self.dir / "logs" / f"{spec['name']}.log").open("ab")
        try:
            c.process = await asyncio.create_subprocess_exec(
                *full, stdout=logfile, stderr=logfile, env=env, start_new_session=True
            )
        finally:
            logfile.close()
        c.state.started_at = self.ctx.now()
        c.state.exit_code = None
        c.state.finished_at = None
        c.state.pid = c.process.pid
        # Without a readiness probe a running container (or native sidecar) counts as ready.
        c.state.ready = c.readiness is None and (c.sidecar or not c.is_init)
        log.info("container started", pod=self.key, container=spec["name"], pid=c.process.pid)
        self._changed()
        c.tasks.append(asyncio.create_task(self._supervise(c)))
        if c.readiness is not None:
            c.tasks.append(asyncio.create_task(self._probe_loop(c, c.readiness, liveness=False)))
        if c.liveness is not None:
            c.tasks.append(asyncio.create_task(self._probe_loop(c, c.liveness, liveness=True)))

    def _identity(self, spec: Mapping[str, Any]) -> launch.ProcessIdentity:
        return launch.identity_for(dict(spec), dict(self.pod["spec"].get("securityContext") or {}))

    def _image(self, spec: Mapping[str, Any]) -> images.LocalImage:
        repo = images.image_repository(spec.get("image", ""))
        found = self.ctx.images.get(repo)
        if found is None:
            raise images.ImageError(f"image {spec.get('image')!r} has no local mapping")
        return found

    async def _env(self, spec: Mapping[str, Any]) -> dict[str, str]:
        return resolve_env(spec, self.view)

    def _mounts(self, spec: Mapping[str, Any]) -> list[launch.Mount]:
        assert self.volumes is not None
        mounts = []
        for m in spec.get("volumeMounts") or []:
            source = self.volumes.dirs.get(m["name"])
            if source is None:
                raise volumes.VolumeError(
                    f"container {spec['name']} mounts unknown volume {m['name']}"
                )
            if m.get("subPath"):
                source = source / m["subPath"]
            mounts.append(launch.Mount(str(source), m["mountPath"], bool(m.get("readOnly"))))
        return mounts

    async def _post_start(self, c: Container) -> None:
        hook = ((c.spec.get("lifecycle") or {}).get("postStart") or {}).get("exec")
        if hook:
            code = await self._exec(c, hook["command"], limit=120)
            if code != 0:
                log.warning(
                    "postStart hook failed", pod=self.key, container=c.spec["name"], code=code
                )

    async def _wait_started(self, c: Container, limit: float = 120) -> None:
        """A native sidecar counts as started once its startup/readiness probe passes."""
        probe = c.readiness
        startup = c.spec.get("startupProbe")
        if startup is not None:
            probe = probes.parse_probe(startup, c.spec.get("ports") or [])
        if probe is None:
            return
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and not self.stopping and c.state.running:
            if await probes.check(probe, self.pod_ip, lambda cmd, t: self._exec(c, cmd, t)):
                return
            await asyncio.sleep(0.2)

    async def _exec(self, c: Container, command: Sequence[str], limit: float) -> int:
        identity = launch.identity_for(
            dict(c.spec), dict(self.pod["spec"].get("securityContext") or {})
        )
        argv = launch.launch_argv(
            netns=self.netns, identity=identity, argv=command, mounts=self._mounts(c.spec)
        )
        image = self._image(c.spec)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", **image.env, **(await self._env(c.spec))}
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            return await asyncio.wait_for(proc.wait(), limit)
        except TimeoutError:
            _kill_group(proc.pid, signal.SIGKILL)
            await proc.wait()
            return -1

    async def _supervise(self, c: Container) -> None:
        assert c.process is not None
        code = await c.process.wait()
        c.state.exit_code = code
        c.state.finished_at = self.ctx.now()
        c.state.ready = False
        log.info("container exited", pod=self.key, container=c.spec["name"], code=code)
        self._changed()
        if self.stopping or (c.is_init and not c.sidecar):
            return
        policy = self.pod["spec"].get("restartPolicy", "Always")
        if c.sidecar or policy == "Always" or (policy == "OnFailure" and code != 0):
            delay = min(2.0 ** min(c.state.restart_count, 5), RESTART_BACKOFF_MAX)
            await asyncio.sleep(delay)
            if not self.stopping:
                c.state.restart_count += 1
                await self._start(c)

    async def _probe_loop(self, c: Container, spec: probes.ProbeSpec, *, liveness: bool) -> None:
        process = c.process
        await asyncio.sleep(spec.initial_delay)
        successes = failures = 0
        where = probes.target(spec, self.pod_ip)
        name = c.spec["name"]
        while not self.stopping and c.process is process and c.state.running:
            result = await probes.check(spec, self.pod_ip, lambda cmd, t: self._exec(c, cmd, t))
            if self.stopping or c.process is not process:
                return  # the answer of a container being stopped means nothing
            successes, failures = (successes + 1, 0) if result.ok else (0, failures + 1)
            if liveness:
                if not result.ok:
                    log.warning(
                        "liveness probe failed",
                        pod=self.key,
                        container=name,
                        probe=where,
                        reason=result.reason,
                        failures=failures,
                        threshold=spec.failure_threshold,
                    )
                if failures >= spec.failure_threshold and c.process is not None:
                    log.warning(
                        "liveness probe failed too often: restarting the container",
                        pod=self.key,
                        container=name,
                        reason=result.reason,
                        network=await self._network_state(),
                    )
                    _kill_group(c.process.pid, signal.SIGTERM)
                    return
            elif result.ok and successes >= spec.success_threshold and not c.state.ready:
                c.state.ready = True
                log.info("readiness probe passed", pod=self.key, container=name, probe=where)
                self._changed()
            elif not result.ok:
                becomes_unready = failures >= spec.failure_threshold and c.state.ready
                if failures == 1 or becomes_unready or failures % READINESS_LOG_EVERY == 0:
                    log.warning(
                        "readiness probe failed",
                        pod=self.key,
                        container=name,
                        probe=where,
                        reason=result.reason,
                        failures=failures,
                        ready=c.state.ready and not becomes_unready,
                    )
                if becomes_unready:
                    c.state.ready = False
                    self._changed()
            await asyncio.sleep(spec.period if c.state.ready or liveness else min(spec.period, 1.0))

    async def _network_state(self) -> dict[str, str]:
        """The pod's interfaces and addresses and the node's ARP entry for its IP, for a
        log line when a probe from the node keeps failing (whose fault: app or network?)."""
        layout = self.ctx.layout
        commands = {
            "pod_addr": ("ip", "-n", self.netns, "-br", "addr"),
            "pod_link": ("ip", "-n", self.netns, "-br", "link"),
            "node_neigh": ("ip", "neigh", "show", "to", self.pod_ip, "dev", layout.bridge),
        }
        state = {}
        for key, argv in commands.items():
            state[key] = await _output(*argv)
        return state

    # -- status ----------------------------------------------------------------------------

    def _changed(self) -> None:
        self._status_dirty.set()

    async def _report_status(self) -> None:
        previous: list[dict[str, Any]] = []
        while True:
            await self._status_dirty.wait()
            self._status_dirty.clear()
            restart_policy = self.pod["spec"].get("restartPolicy", "Always")
            self.state.phase = status.phase_for(self.state, restart_policy)
            body = status.pod_status_patch(self.state, self.ctx.now(), previous)
            meta = self.pod["metadata"]
            try:
                await self.ctx.client.patch(
                    PODS, meta["name"], body, namespace=meta["namespace"], subresource="status"
                )
                previous = body["status"]["conditions"]
            except Exception as exc:
                log.warning("status update failed", pod=self.key, error=str(exc))
                await asyncio.sleep(1)
                self._status_dirty.set()
            if self.stopping and self._task is None:
                return

    async def _refresh_tokens_forever(self) -> None:
        while not self.stopping and self.volumes is not None:
            await asyncio.sleep(30)
            with contextlib.suppress(Exception):
                await volumes.refresh_tokens(
                    self.ctx.client, self.view, self.volumes, self.ctx.now()
                )

    # -- termination -----------------------------------------------------------------------

    async def terminate(self, grace: float | None = None) -> None:
        """preStop hooks, SIGTERM, wait out the grace period, SIGKILL, remove the sandbox."""
        if self.stopping:
            return
        self.stopping = True
        if grace is None:
            grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        deadline = time.monotonic() + grace
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        # Containers first, then native sidecars, as Kubernetes orders them.
        for group in (self.main, [c for c in self.init if c.sidecar]):
            await asyncio.gather(*(self._stop(c, deadline) for c in group))
        for c in self.init + self.main:
            for t in c.tasks:
                t.cancel()
        await self.teardown()

    async def _stop(self, c: Container, deadline: float) -> None:
        if c.process is None or c.process.returncode is not None:
            return
        hook = ((c.spec.get("lifecycle") or {}).get("preStop") or {}).get("exec")
        if hook:
            remaining = max(0.0, deadline - time.monotonic())
            await self._exec(c, hook["command"], limit=remaining)
        _kill_group(c.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(c.process.wait(), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            _kill_group(c.process.pid, signal.SIGKILL)
            await c.process.wait()

    async def teardown(self) -> None:
        for c in self.init + self.main:
            if c.process is not None and c.process.returncode is None:
                _kill_group(c.process.pid, signal.SIGKILL)
                await c.process.wait()
        if self._announce_task is not None:
            self._announce_task.cancel()
        await _run("ip", "netns", "delete", self.netns, check=False)
        await _run("ip", "link", "delete", self.veth, check=False)
        if self.pod_ip:  # the node must not keep sending to this pod's MAC once the IP moves
            await _run("ip", "neigh", "flush", "to", self.pod_ip, check=False)
        shutil.rmtree(NETNS_ETC / self.netns, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` references to earlier variables; unknown ones stay as written."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), value).replace("$$", "$")


def _resource_value(spec: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    kind, _, name = str(ref.get("resource", "")).partition(".")
    value = ((spec.get("resources") or {}).get(kind) or {}).get(name)
    return str(value) if value is not None else "0"


async def create_netns(
    layout: NodeLayout, *, netns: str, veth: str, ip: str, hosts_text: str, namespace: str
) -> None:
    """A pod's network namespace: loopback, an ``eth0`` on the node's bridge with ``ip``, a
    default route via the node, and its /etc/netns hosts and resolv.conf."""
    etc = NETNS_ETC / netns
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "hosts").write_text(hosts_text)
    (etc / "resolv.conf").write_text(render_resolv_conf(namespace))
    await _run("ip", "netns", "add", netns)
    await _run("ip", "-n", netns, "link", "set", "lo", "up")
    await _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    await _run("ip", "link", "set", veth, "master", layout.bridge, "up")
    await _run(
        "ip", "-n", netns, "addr", "add", f"{ip}/{layout.bridge_prefix_len}", "dev", "eth0"
    )  # fmt: skip
    await _run("ip", "-n", netns, "link", "set", "eth0", "up")
    await _run("ip", "-n", netns, "route", "add", "default", "via", layout.node_address)


def resolve_env(spec: Mapping[str, Any], pod: Mapping[str, Any]) -> dict[str, str]:
    """A container's ``env`` as the kubelet resolves it: ``$(VAR)`` expansion, the downward
    API (``fieldRef``, ``resourceFieldRef``); other sources resolve to ""."""
    env: dict[str, str] = {}
    for item in spec.get("env") or []:
        name = item["name"]
        if "value" in item:
            env[name] = _expand(str(item["value"]), env)
            continue
        source = item.get("valueFrom") or {}
        if "fieldRef" in source:
            env[name] = volumes.field_value(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            env[name] = _resource_value(spec, source["resourceFieldRef"])
        else:
            env[name] = ""
    return env


async def _output(*argv: str, limit: float = 5.0) -> str:
    """A diagnostic command's output (or what went wrong), never raising."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
    except OSError as exc:
        return f"{argv[0]}: {exc}"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return f"timed out after {limit:g}s"
    return out.decode(errors="replace").strip()


async def _run(*argv: str, check: bool = True) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {err.decode(errors='replace').strip()}")
