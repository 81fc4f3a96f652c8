"""The kind suite: Gossamer installed by the Helm chart on a real kind cluster.

Run by ``make e2e`` (scripts/e2e-kind.sh), which creates the cluster, loads the images,
installs the chart and the demo app, and sets ``GOSSAMER_KIND_CONTEXT``. Without that variable
every test here is deselected: ``make test`` collects this directory but does NOT run it (no
Docker on the test machine). Deselected, not skipped: this suite is not a missing
prerequisite, and under GOSSAMER_REQUIRE_E2E=1 every skip is a failure. Tests talk to the
cluster only through kubectl and the apiserver's proxy subresource, never directly to pod IPs.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

CONTEXT_ENV = "GOSSAMER_KIND_CONTEXT"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(CONTEXT_ENV):
        return
    kind = [item for item in items if "tests/kind/" in str(item.path).replace(os.sep, "/")]
    if kind:
        config.hook.pytest_deselected(items=kind)
        chosen = {id(item) for item in kind}
        items[:] = [item for item in items if id(item) not in chosen]


@pytest.fixture(scope="session")
def context() -> str:
    return os.environ[CONTEXT_ENV]


@pytest.fixture(scope="session")
def control_plane_namespace() -> str:
    return os.environ.get("GOSSAMER_NAMESPACE", "gossamer")


Kubectl = Callable[..., str]


@pytest.fixture(scope="session")
def kubectl(context: str) -> Kubectl:
    def run(*args: str, check: bool = True) -> str:
        result = subprocess.run(
            ["kubectl", "--context", context, *args],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
        return result.stdout

    return run


@pytest.fixture(scope="session")
def get_json(kubectl: Kubectl) -> Callable[..., Any]:
    def get(*args: str) -> Any:
        return json.loads(kubectl("get", *args, "-o", "json"))

    return get
