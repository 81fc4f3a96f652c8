"""``skaffold dev -p node`` on the real node: an edit in one service rebuilds that image only,
and only that service's pods roll to it.

Run last by scripts/e2e-node.sh, after ``skaffold run -p node`` and ``skaffold delete``: the
control plane is not installed, and ``.dev/`` holds the chart's trust anchor and issuer. The
dev loop runs on a copy of the repository (the edit never touches the clone), through
scripts/skaffold-node.sh as the README gives it, and is stopped with SIGINT, after which
skaffold uninstalls what it deployed. Skipped on kind (no node network namespace, and the kind
profile builds with Docker).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    not os.environ.get("GOSSAMER_NODE_NETNS"), reason="needs the real node (scripts/e2e-node.sh)"
)

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "gossamer"
REGISTRY = "localhost:5000/gossamer/"
DEPLOYMENTS = {
    "destination": "gossamer-destination",
    "identity": "gossamer-identity",
    "injector": "gossamer-proxy-injector",
}
#: skaffold prints this once each deploy has stabilised and it watches the sources again.
WATCHING = "Watching for changes"
#: Bounds for a cold first iteration (five images) and for the one rebuild after the edit.
FIRST_DEPLOY_LIMIT = 900.0
REBUILD_LIMIT = 600.0

GetJson = Callable[..., Any]


def _copy_repository(target: Path) -> None:
    """The clone's tracked and untracked (not ignored) files, plus .dev/ (ignored by git)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True, timeout=60,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():  # deleted in the work tree but still in the index
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)
    shutil.copytree(ROOT / ".dev", target / ".dev")


def _controller(get_json: GetJson, deployment: str) -> tuple[str, frozenset[str]]:
    """The deployment's controller image and the uids of its live pods, once rolled out."""
    spec = get_json("deployment", deployment, "-n", NAMESPACE)
    image = spec["spec"]["template"]["spec"]["containers"][0]["image"]
    selector = ",".join(f"{k}={v}" for k, v in spec["spec"]["selector"]["matchLabels"].items())
    pods = get_json("pods", "-n", NAMESPACE, "-l", selector)["items"]
    uids = frozenset(
        p["metadata"]["uid"] for p in pods if not p["metadata"].get("deletionTimestamp")
    )
    return image, uids


def _rolled_out(get_json: GetJson, deployment: str) -> bool:
    d = get_json("deployment", deployment, "-n", NAMESPACE)
    status, want = d["status"], d["spec"]["replicas"]
    return bool(
        status.get("observedGeneration", 0) >= d["metadata"]["generation"]
        and status.get("updatedReplicas", 0) == want
        and status.get("availableReplicas", 0) == want
        and status.get("replicas", 0) == want
    )


def _wait_for(what: str, proc: subprocess.Popen[bytes], log: Path, check: Callable[[], bool],
              limit: float) -> None:  # fmt: skip
    deadline = time.monotonic() + limit
    while not check():
        if proc.poll() is not None:
            raise AssertionError(
                f"skaffold dev exited ({proc.returncode}) before {what}:\n{_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:.0f}s waiting for {what}:\n{_tail(log)}")
        time.sleep(2)


def _tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT, as Ctrl-C: skaffold deletes what it deployed, then exits; SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_skaffold_dev_rebuilds_and_rolls_only_the_edited_service(
    tmp_path: Path, get_json: GetJson
) -> None:
    repo = tmp_path / "repo"
    _copy_repository(repo)
    log = tmp_path / "skaffold-dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "scripts/skaffold-node.sh", "dev", "--port-forward=off", "--cleanup=true"],
            cwd=repo, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for(
            "the first deploy", proc, log,
            lambda: log.read_text(errors="replace").count(WATCHING) >= 1,
            FIRST_DEPLOY_LIMIT,
        )  # fmt: skip
        before = {c: _controller(get_json, d) for c, d in DEPLOYMENTS.items()}
        for component, (image, uids) in before.items():
            assert image.startswith(f"{REGISTRY}{component}:"), image
            assert uids, f"no {component} pod"
        built_before = log.read_text(errors="replace").count("Building [")

        # The edit: a marker in the destination's package, read back from the new pod below.
        marker = uuid.uuid4().hex
        init = repo / "services/destination/src/gossamer_destination/__init__.py"
        init.write_text(init.read_text() + f'\nDEV_LOOP_MARKER = "{marker}"\n')

        def destination_rolled() -> bool:
            image, _ = _controller(get_json, DEPLOYMENTS["destination"])
            return image != before["destination"][0] and _rolled_out(
                get_json, DEPLOYMENTS["destination"]
            )

        _wait_for("the destination to roll", proc, log, destination_rolled, REBUILD_LIMIT)
        _wait_for(
            "skaffold to watch again", proc, log,
            lambda: log.read_text(errors="replace").count(WATCHING) >= 2, REBUILD_LIMIT,
        )  # fmt: skip

        after = {c: _controller(get_json, d) for c, d in DEPLOYMENTS.items()}
        assert after["destination"][0].startswith(f"{REGISTRY}destination:")
        assert not after["destination"][1] & before["destination"][1], "destination pods kept"
        for component in ("identity", "injector"):
            assert after[component] == before[component], f"{component} was rebuilt or rolled"
        rebuilt = log.read_text(errors="replace").split("Building [")[built_before + 1 :]
        assert [b.split("]", 1)[0].rsplit("/", 1)[-1] for b in rebuilt] == ["destination"], _tail(
            log
        )

        served = subprocess.run(
            ["kubectl", "--context", os.environ["GOSSAMER_KIND_CONTEXT"], "exec", "-n", NAMESPACE,
             f"deploy/{DEPLOYMENTS['destination']}", "-c", "destination", "--", "python", "-c",
             "import gossamer_destination as d; print(d.DEV_LOOP_MARKER)"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert served.stdout.strip() == marker, served.stderr
    finally:
        _stop(proc)
    assert proc.returncode == 0, _tail(log)
