"""``make demo``'s own path: ``gossamer dev up --demo --duration N`` on a terminal.

One run of the real command, in a state directory and namespace prefix of its own (it starts
before the shared headless mesh of the other e2e tests, which sort after this file): the live
table shows the demo's deployments with traffic and mTLS, ``gossamer dev kubectl -- get pods
-A`` lists the demo pods while it runs, the webhook injected every demo pod and every hop is
mTLS with the caller's identity, and at the end of ``--duration`` it exits by itself with
status 0, leaving no namespace, process, /etc/netns entry or host iptables rule behind.
(Crash cleanup, SIGKILL then ``gossamer dev down``, is checked by conftest's teardown.)
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gossamer_cli.dev.layout import NodeLayout
from localmesh import (
    RUNTIME_VENV,
    LocalMeshHandle,
    attach_local_mesh,
    converge,
    counter,
    host_firewall,
    leftovers,
    mesh_processes,
    still_running,
)

pytestmark = pytest.mark.netns

PREFIX = f"gsd{os.getpid()}"
#: The clock starts with the command, and the test waits for it to run out. The table shows
#: the demo's traffic about 20 s in on a quiet machine and the checks take 5 s more; 90 leaves
#: room for a busy one without idling much longer than needed.
DURATION = 90
DEMO_PODS = {"flaky": 2, "slow": 2, "traffic": 1, "web": 1}
#: The in-place redraw: back up over the last frame's lines, clear each rewritten line's end.
LINES_UP = re.compile(r"\x1b\[\d+F")
ERASE = re.compile(r"\x1b\[[KJ]")
LOGS = re.compile(r"^logs: (?P<path>\S+) ", re.MULTILINE)
ROW = re.compile(
    r"^(?P<deployment>\S+)\s+(?P<pods>\d+)\s+(?P<direction>inbound|outbound)\s+"
    r"(?P<success>\S+)\s+(?P<rps>[\d.]+)\s+\S+\s+\S+\s+\S+\s+(?P<mtls>\S+)$"
)


class Terminal:
    """The reading end of a pseudo-terminal, drained by a thread so the writer never blocks."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.text = ""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not chunk:
                return
            with self._lock:
                self.text += chunk.decode(errors="replace")
                self.text = self.text[-200_000:]  # bounded: only recent frames matter

    def frames(self) -> list[str]:
        with self._lock:
            return [ERASE.sub("", frame) for frame in LINES_UP.split(self.text)]

    def raw(self) -> str:
        with self._lock:
            return self.text

    def close(self) -> None:
        os.close(self.master)
        self._thread.join(timeout=10)


def rows(frame: str) -> dict[str, dict[str, str]]:
    lines = [ROW.match(line.strip()) for line in frame.splitlines()]
    return {m["deployment"]: m.groupdict() for m in lines if m}


def shows_the_demo(frame: str) -> bool:
    """Every demo deployment with its pods and traffic; the served hops all mTLS."""
    table = rows(frame)
    if {name: int(r["pods"]) for name, r in table.items()} != DEMO_PODS:
        return False
    if any(float(r["rps"]) <= 0 for r in table.values()):
        return False
    return all(table[name]["mtls"] == "100.0%" for name in ("web", "slow", "flaky"))


def webhook_injected_every_demo_pod(mesh: LocalMeshHandle) -> None:
    for pod in mesh.get("pods", "", "demo")["items"]:
        init = [c["name"] for c in pod["spec"].get("initContainers") or []]
        assert init[:2] == ["linkerd-init", "linkerd-proxy"], pod["metadata"]["name"]
        annotations = pod["metadata"]["annotations"]
        assert annotations["linkerd.io/proxy-version"]
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["linkerd.io/trust-root-sha256"])


def meshed_requests(mesh: LocalMeshHandle) -> tuple[dict[str, float], float]:
    """Inbound requests over mTLS from the expected caller, per deployment, and plaintext ones."""
    identity = "{}.demo.serviceaccount.identity.gossamer.cluster.local".format
    scraped = {app: [mesh.metrics(p) for p in mesh.pods("demo", f"app={app}")]
               for app in ("web", "slow", "flaky")}  # fmt: skip
    callers = {"web": identity("traffic"), "slow": identity("web"), "flaky": identity("web")}
    meshed = {
        app: sum(
            counter(m, "request_total", direction="inbound", tls="true", client_id=callers[app])
            for m in texts
        )
        for app, texts in scraped.items()
    }
    plaintext = sum(
        counter(m, "request_total", direction="inbound", tls="no_identity")
        for texts in scraped.values()
        for m in texts
    )
    return meshed, plaintext


def gossamer(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "gossamer_cli.main", "dev", *args]
    argv[5:5] = ["--state-dir", str(state), "--prefix", PREFIX]  # after the subcommand
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_demo_draws_the_table_answers_kubectl_and_exits_cleanly_after_duration() -> None:
    state = Path("/var/tmp") / f"{PREFIX}-state"
    log = state.parent / f"{PREFIX}-demo.log"
    firewall = host_firewall()
    master, terminal_side = pty.openpty()
    argv = [
        sys.executable, "-m", "gossamer_cli.main", "dev", "up", "--demo",
        "--duration", str(DURATION), "--state-dir", str(state), "--prefix", PREFIX,
        "--runtime-venv", str(RUNTIME_VENV),
    ]  # fmt: skip
    with log.open("wb") as errors:
        process = subprocess.Popen(argv, stdout=terminal_side, stderr=errors)
    os.close(terminal_side)
    terminal = Terminal(master)
    started = time.monotonic()
    processes: dict[int, int] = {}
    try:
        frame = ""
        while not shows_the_demo(frame):
            assert process.poll() is None, f"dev up exited early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() - started < DURATION, (
                f"no table with the demo's traffic before --duration ran out; last frame:\n"
                f"{frame}\n{log.read_text()[-3000:]}"
            )
            frames = [f for f in terminal.frames() if f.strip()]
            frame = frames[-1] if frames else ""
            time.sleep(0.5)
        assert frame.lstrip().startswith("gossamer demo ·")
        # Redrawn in place, never the whole screen cleared; no log line on the terminal: the
        # process's own log goes to the file whose path it printed once.
        screen = terminal.raw()
        assert "\x1b[2J" not in screen
        assert '"event":' not in screen
        printed = LOGS.findall(log.read_text())
        assert len(printed) == 1, log.read_text()[-3000:]
        dev_log = Path(printed[0])
        assert dev_log.parent == state / "logs"
        assert '"event": "kubernetes is up"' in dev_log.read_text()

        pods = gossamer("kubectl", "--", "get", "pods", "-A", state=state)
        assert pods.returncode == 0, pods.stderr
        listed = [line.split() for line in pods.stdout.splitlines()[1:]]
        demo = [(p[1].rsplit("-", 2)[0], p[3]) for p in listed if p[0] == "demo"]
        assert sorted({name for name, _ in demo}) == sorted(DEMO_PODS)
        assert all(status == "Running" for _, status in demo), pods.stdout

        mesh = attach_local_mesh(state, PREFIX)
        webhook_injected_every_demo_pod(mesh)
        meshed, plaintext = converge(
            lambda: meshed_requests(mesh), lambda r: all(v > 0 for v in r[0].values()), limit=30
        )
        assert all(v > 0 for v in meshed.values()), meshed
        assert plaintext == 0

        processes = mesh_processes(NodeLayout(prefix=PREFIX))
        assert len(processes) > 2 * sum(DEMO_PODS.values())  # proxies, apps, control planes
        code = process.wait(timeout=DURATION + 120)
        assert code == 0, log.read_text()[-3000:]
        assert time.monotonic() - started >= DURATION
        assert "local mesh stopped" in log.read_text()

        after = gossamer("kubectl", "--", "get", "pods", "-A", state=state)
        assert after.returncode != 0
        assert "the local mesh is not running" in after.stderr
        assert leftovers(state, PREFIX) + still_running(processes) == []
        assert host_firewall() == firewall
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
            gossamer("down", state=state)
        terminal.close()
        shutil.rmtree(state, ignore_errors=True)
        log.unlink(missing_ok=True)
