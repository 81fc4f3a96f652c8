"""The local kubelet: runs the pods placed on the local node, keeps their /etc/hosts current.

Pods and Services come from informers. A pod scheduled to the node gets its IP from the
runtime (:mod:`.addresses`, the one source of a pod's address) and is started; when it gets a
deletionTimestamp it is drained (preStop, SIGTERM, grace period) and its namespace removed,
and only then is its address free again and the object deleted for good, as a kubelet does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import structlog
from gossamer_kube.client import KubeApiError
from gossamer_kube.informer import Informer
from gossamer_kube.resources import PODS, SERVICES
from gossamer_kube.sources import ClientSource
from gossamer_kube.store import StoreEvent

from gossamer_cli.dev.addresses import PodAddresses
from gossamer_cli.dev.layout import ServiceAddress, render_hosts
from gossamer_cli.dev.pod import LocalPod, RuntimeContext

log = structlog.get_logger("gossamer.dev.runtime")


class NodeRuntime:
    def __init__(self, ctx: RuntimeContext, fixed_hosts: Mapping[str, str]) -> None:
        self.ctx = ctx
        self.fixed_hosts = dict(fixed_hosts)
        self.pods: dict[str, LocalPod] = {}
        self.addresses = PodAddresses(ctx.layout.pod_cidr, reserved=[ctx.layout.node_address])
        self._pod_informer = Informer(ClientSource(ctx.client, PODS))
        self._svc_informer = Informer(ClientSource(ctx.client, SERVICES))
        self._pending: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._terminating: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._svc_informer.add_handler(lambda _: self._refresh_hosts())
        self._pod_informer.add_handler(self._on_pods)
        self._tasks += [self._svc_informer.start(), self._pod_informer.start()]
        await self._svc_informer.synced.wait()
        self._tasks.append(asyncio.create_task(self._reconcile_loop()))

    def _on_pods(self, events: list[StoreEvent]) -> None:
        for event in events:
            if event.new is None:  # deleted for good
                uid = event.obj["metadata"]["uid"]
                pod = self.pods.get(uid)
                if pod is not None and not pod.stopping:
                    self._terminate(pod, grace=0, delete=False)
                continue
            self._pending.put_nowait(event.new)

    async def _reconcile_loop(self) -> None:
        while True:
            pod = await self._pending.get()
            try:
                await self._reconcile(pod)
            except Exception as exc:  # one bad pod must not stop the node
                log.error("reconcile failed", pod=_key(pod), error=str(exc))

    async def _reconcile(self, obj: Mapping[str, Any]) -> None:
        meta, spec, status = obj["metadata"], obj["spec"], obj.get("status") or {}
        if spec.get("nodeName") != self.ctx.layout.node_name:
            return
        uid = meta["uid"]
        running = self.pods.get(uid)
        if meta.get("deletionTimestamp"):
            if running is not None:
                if not running.stopping:
                    grace = meta.get("deletionGracePeriodSeconds")
                    self._terminate(running, grace=float(grace) if grace is not None else None)
            else:
                await self._finalize(obj)
            return
        if running is not None:
            running.observe(obj)
            return
        if spec.get("hostNetwork"):
            log.warning("hostNetwork pods are not supported in local mode", pod=_key(obj))
            return
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        ip = self.addresses.claim(uid, preferred=str(status.get("podIP") or ""))
        pod = LocalPod(obj, self.ctx, ip)
        self.pods[uid] = pod
        log.info("starting pod", pod=pod.key, ip=pod.pod_ip, netns=pod.netns)
        pod.start()

    def _terminate(self, pod: LocalPod, grace: float | None, delete: bool = True) -> None:
        async def run() -> None:
            await pod.terminate(grace)
            self.pods.pop(pod.uid, None)
            self.addresses.release(pod.uid)  # its namespace is gone
            log.info("pod stopped", pod=pod.key)
            if delete:
                await self._finalize(pod.pod)

        task = asyncio.create_task(run())
        self._terminating.add(task)
        task.add_done_callback(self._terminating.discard)

    async def _finalize(self, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        with contextlib.suppress(KubeApiError):
            await self.ctx.client.delete(
                PODS, meta["name"], namespace=meta["namespace"], grace_period_seconds=0
            )

    def _refresh_hosts(self) -> None:
        services = [
            ServiceAddress(
                s["metadata"]["name"],
                s["metadata"]["namespace"],
                str((s.get("spec") or {}).get("clusterIP", "")),
            )
            for s in self._svc_informer.store.objects()
        ]
        self.ctx.hosts_text = render_hosts(
            pod_name="{pod}", pod_ip="{ip}", services=services, fixed=self.fixed_hosts
        )
        for pod in list(self.pods.values()):
            pod.update_hosts(self.hosts_for(pod))

    def hosts_for(self, pod: LocalPod) -> str:
        name = pod.pod["metadata"]["name"]
        return self.ctx.hosts_text.replace("{ip} {pod}", f"{pod.pod_ip} {name}", 1)

    async def stop(self, grace: float | None = None) -> None:
        """Drain every pod (their grace periods, or ``grace``), then stop watching."""
        for t in self._tasks:
            t.cancel()
        for pod in list(self.pods.values()):
            if not pod.stopping:
                self._terminate(pod, grace, delete=False)
        if self._terminating:
            await asyncio.gather(*list(self._terminating), return_exceptions=True)
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"
