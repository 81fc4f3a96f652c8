"""Pod status as a kubelet reports it, built from the state of local processes (pure)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def timestamp(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerState:
    """What the runtime knows of one container."""

    name: str
    image: str
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    ready: bool = False
    restart_count: int = 0
    waiting_reason: str = "ContainerCreating"
    pid: int | None = None
    #: A native sidecar (init container with ``restartPolicy: Always``): like a main
    #: container, its readiness gates the pod's, so a pod whose proxy cannot serve is
    #: never added to endpoints.
    sidecar: bool = False

    @property
    def running(self) -> bool:
        return self.started_at is not None and self.exit_code is None

    def as_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.running,
        }
        if self.pid is not None:
            status["containerID"] = f"local://{self.pid}"
        if self.running:
            assert self.started_at is not None
            status["state"] = {"running": {"startedAt": timestamp(self.started_at)}}
        elif self.exit_code is not None and self.started_at is not None:
            status["state"] = {
                "terminated": {
                    "exitCode": self.exit_code,
                    "reason": "Completed" if self.exit_code == 0 else "Error",
                    "startedAt": timestamp(self.started_at),
                    "finishedAt": timestamp(self.finished_at or self.started_at),
                }
            }
        else:
            status["state"] = {"waiting": {"reason": self.waiting_reason}}
        return status


@dataclass
class PodState:
    init_containers: list[ContainerState] = field(default_factory=list)
    containers: list[ContainerState] = field(default_factory=list)
    initialized: bool = False
    phase: str = "Pending"
    #: The address on the pod's eth0 and the node's: the runtime owns both, as a kubelet does.
    pod_ip: str = ""
    host_ip: str = ""
    #: When the runtime took the pod on (``status.startTime``).
    started_at: float | None = None


def _condition(
    kind: str, ok: bool, now: float, previous: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    status = "True" if ok else "False"
    for old in previous:
        if old.get("type") == kind and old.get("status") == status and "lastTransitionTime" in old:
            return {"type": kind, "status": status, "lastTransitionTime": old["lastTransitionTime"]}
    return {"type": kind, "status": status, "lastTransitionTime": timestamp(now)}


def pod_status_patch(
    state: PodState, now: float, previous: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The body of a merge patch to ``pods/<name>/status``."""
    gating = state.containers + [c for c in state.init_containers if c.sidecar]
    containers_ready = bool(state.containers) and all(c.ready for c in gating)
    addresses: dict[str, Any] = {}
    if state.host_ip:
        addresses["hostIP"] = state.host_ip
        addresses["hostIPs"] = [{"ip": state.host_ip}]
    if state.pod_ip:
        addresses["podIP"] = state.pod_ip
        addresses["podIPs"] = [{"ip": state.pod_ip}]
    if state.started_at is not None:
        addresses["startTime"] = timestamp(state.started_at)
    return {
        "status": {
            **addresses,
            "phase": state.phase,
            "conditions": [
                _condition("PodScheduled", True, now, previous),
                _condition("Initialized", state.initialized, now, previous),
                _condition("ContainersReady", containers_ready, now, previous),
                _condition("Ready", containers_ready and state.phase == "Running", now, previous),
            ],
            "initContainerStatuses": [c.as_status() for c in state.init_containers],
            "containerStatuses": [c.as_status() for c in state.containers],
        }
    }


def phase_for(state: PodState, restart_policy: str) -> str:
    """Kubernetes' pod phase from the containers' states."""
    if not state.initialized:
        return "Pending"
    if any(c.running for c in state.containers):
        return "Running"
    finished = [c for c in state.containers if c.exit_code is not None]
    if state.containers and len(finished) == len(state.containers) and restart_policy != "Always":
        return "Succeeded" if all(c.exit_code == 0 for c in finished) else "Failed"
    return "Running" if any(c.started_at for c in state.containers) else "Pending"
