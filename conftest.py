"""Test-run policy shared by every test in the repository.

Tests that need root, network namespaces or the real Kubernetes control plane carry the
``netns`` or ``kube`` marker. On a laptop they skip with the reason; under CI
(``GOSSAMER_REQUIRE_E2E=1``) a missing prerequisite fails the test instead.
"""

from __future__ import annotations

import os
import shutil

import pytest

pytest_plugins = ["gossamer_kube.testing.pytest_plugin"]

REQUIRE_E2E = os.environ.get("GOSSAMER_REQUIRE_E2E") == "1"


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip) for network namespaces"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netns") is not None:
        reason = _netns_unavailable()
        if reason is not None:
            if REQUIRE_E2E:
                pytest.fail(f"GOSSAMER_REQUIRE_E2E=1 but this test {reason}")
            pytest.skip(reason)
