"""Running the real destination service against a real (test) apiserver.

Used by the integration tests and by ``bench/destination_bench.py``: apply the Gossamer CRDs,
start ``python -m gossamer_destination`` on loopback ports, wait for ``/ready``, and read a
``Get`` stream into an endpoint set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Protocol

import grpc
import yaml
from gossamer_api.proxy import destination_pb2
from gossamer_kube.errors import KubeApiError
from gossamer_kube.resources import CUSTOMRESOURCEDEFINITIONS

from gossamer_destination.wire import ip_from_proto

CRD_DIR = Path(__file__).resolve().parents[4] / "charts" / "gossamer-crds" / "templates"


class SyncAdmin(Protocol):
    def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]: ...


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def apply_crds(admin: SyncAdmin, crd_dir: Path = CRD_DIR, timeout: float = 60.0) -> None:
    """Create the Gossamer CRDs and wait until established (idempotent)."""
    names = []
    for path in sorted(crd_dir.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        names.append(crd["metadata"]["name"])
        try:
            admin.request("POST", CUSTOMRESOURCEDEFINITIONS.path(), crd)
        except KubeApiError as exc:
            if not exc.conflict:
                raise
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            crd = admin.request("GET", CUSTOMRESOURCEDEFINITIONS.path(name=name))
            status = crd.get("status") or {}
            conds = {c["type"]: c["status"] for c in status.get("conditions") or ()}
            if conds.get("Established") == "True":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not established")
            time.sleep(0.1)


class DestinationProcess:
    """``python -m gossamer_destination`` on loopback ports, reading the given cluster."""

    def __init__(self, kubeconfig: Path, log: Path, extra_env: dict[str, str] | None = None):
        self.grpc_port = free_port()
        self.admin_port = free_port()
        env = dict(os.environ)
        env.update(
            {
                "GOSSAMER_DESTINATION_KUBECONFIG": str(kubeconfig),
                "GOSSAMER_DESTINATION_GRPC_ADDR": f"127.0.0.1:{self.grpc_port}",
                "GOSSAMER_DESTINATION_POLICY_ADDR": "",
                "GOSSAMER_DESTINATION_ADMIN_ADDR": f"127.0.0.1:{self.admin_port}",
                "GOSSAMER_DESTINATION_CONTROLLER_NAMESPACE": "gossamer",
            }
        )
        env.update(extra_env or {})
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gossamer_destination"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.admin_port}/ready"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"destination exited:\n{self._tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"destination not ready:\n{self._tail()}")

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class EndpointView:
    """Applies a ``Get`` stream's updates to an endpoint set, keeping every message."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.addrs: dict[tuple[str, int], destination_pb2.WeightedAddr] = {}
        self.messages: list[destination_pb2.Update] = []

    async def read(self, limit: float = 60.0) -> destination_pb2.Update:
        update: Any = await asyncio.wait_for(self.call.read(), limit)
        if update is grpc.aio.EOF:  # type: ignore[attr-defined]
            raise EOFError("Get stream ended")
        self.messages.append(update)
        kind = update.WhichOneof("update")
        if kind == "add":
            for wa in update.add.addrs:
                self.addrs[(ip_from_proto(wa.addr.ip), wa.addr.port)] = wa
        elif kind == "remove":
            for a in update.remove.addrs:
                key = (ip_from_proto(a.ip), a.port)
                if key not in self.addrs:
                    raise AssertionError(f"remove of unknown address {key}")
                del self.addrs[key]
        return update  # type: ignore[no-any-return]

    async def until_size(self, n: int, limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        while len(self.addrs) != n:
            await self.read(max(0.1, deadline - time.monotonic()))
