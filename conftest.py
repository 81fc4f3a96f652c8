"""Test-run policy shared by every test in the repository.

Tests that need root, network namespaces, the real Kubernetes control plane or an external
program skip with the reason on a laptop. Under CI (``GOSSAMER_REQUIRE_E2E=1``) that would let
a test pass without exercising its claim, so ONE rule applies there: every skip is turned into
a failure, whoever raised it (``pytest.skip`` in a test or fixture, a ``skipif`` marker, a
fixture of a plugin, a module-level skip). Nothing else in the repository reads the setting;
``tests/test_prerequisites.py`` checks that.

External programs go through the ``require_program`` fixture, which gives the program's path
or skips saying which Debian package (in the Makefile's ``DEB_PACKAGES``) provides it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Generator
from pathlib import Path

import pytest

pytest_plugins = ["gossamer_kube.testing.pytest_plugin"]

REQUIRE_E2E = os.environ.get("GOSSAMER_REQUIRE_E2E") == "1"
ROOT = Path(__file__).resolve().parent
#: Every test under these needs a Go-built binary (kube-apiserver & co., kwok, kubectl, helm).
BINARY_DIRS = tuple(ROOT / d for d in ("tests/integration", "tests/e2e", "tests/kind"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``binaries`` the tests that need the Go-built binaries: ``make test`` runs the
    others while those build."""
    from gossamer_kube.testing.pytest_plugin import KUBE_FIXTURES  # registered by then

    for item in items:
        if (
            item.get_closest_marker("kube") is not None
            or KUBE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
            or any(item.path.is_relative_to(d) for d in BINARY_DIRS)
        ):
            item.add_marker(pytest.mark.binaries)


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
            pytest.skip(reason)


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _forbid_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Under GOSSAMER_REQUIRE_E2E=1 a skipped report becomes a failure with the skip's reason."""
    if REQUIRE_E2E and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (
            f"GOSSAMER_REQUIRE_E2E=1 turns every skip into a failure: {_skip_reason(report)}"
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _forbid_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _forbid_skip(report)
    return report


@pytest.fixture(scope="session")
def require_program() -> Callable[..., str]:
    """``require_program("nginx")``: the program's path, or a skip naming the program.

    ``also`` lists absolute paths to try when the program is not on ``PATH`` (Go's
    ``/usr/local/go/bin/go``).

    The guard in ``tests/test_prerequisites.py`` finds these calls and checks that ``make
    test`` installs every program named (Debian package in ``DEB_PACKAGES``, the locked Python
    environment, or the kube-bins cache).
    """

    def require(name: str, also: tuple[str, ...] = ()) -> str:
        path = shutil.which(name) or next((p for p in also if os.access(p, os.X_OK)), None)
        if path is None:
            pytest.skip(f"needs the program {name!r}, which `make test` installs")
        return path

    return require
