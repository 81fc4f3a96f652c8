"""Where ``gossamer install`` finds the charts: env override, packaged copy, then checkout."""

from __future__ import annotations

from pathlib import Path

import pytest
from gossamer_cli.manifests import crds
from gossamer_cli.manifests_values import CHARTS_ENV, ValuesError, charts_dir, find_charts_dir

REPO_CHARTS = Path(__file__).resolve().parents[2] / "charts"


def make_charts(root: Path) -> Path:
    (root / "gossamer").mkdir(parents=True)
    (root / "gossamer" / "Chart.yaml").write_text("name: gossamer\n")
    return root


def test_the_environment_override_wins(tmp_path: Path) -> None:
    env = make_charts(tmp_path / "elsewhere")
    package = tmp_path / "site-packages" / "gossamer_cli"
    make_charts(package / "charts")
    assert find_charts_dir(str(env), package) == env


def test_an_override_without_charts_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValuesError, match=f"{CHARTS_ENV}=.* has no gossamer/Chart.yaml"):
        find_charts_dir(str(tmp_path), tmp_path / "gossamer_cli")


def test_an_installed_wheel_uses_its_packaged_copy(tmp_path: Path) -> None:
    # No checkout anywhere above site-packages: only the copy inside the package.
    package = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "gossamer_cli"
    packaged = make_charts(package / "charts")
    assert find_charts_dir(None, package) == packaged
    assert find_charts_dir("", package) == packaged


def test_the_packaged_copy_beats_a_checkout_around_the_venv(tmp_path: Path) -> None:
    make_charts(tmp_path / "charts")  # a checkout whose venv holds a non-editable install
    package = tmp_path / ".venv" / "lib" / "python3.11" / "site-packages" / "gossamer_cli"
    packaged = make_charts(package / "charts")
    assert find_charts_dir(None, package) == packaged


def test_an_editable_install_uses_its_checkout(tmp_path: Path) -> None:
    checkout = make_charts(tmp_path / "charts")
    package = tmp_path / "cli" / "src" / "gossamer_cli"
    package.mkdir(parents=True)
    assert find_charts_dir(None, package) == checkout


def test_nothing_found_names_both_places(tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "gossamer_cli"
    package.mkdir(parents=True)
    with pytest.raises(ValuesError) as info:
        find_charts_dir(None, package)
    assert str(package / "charts") in str(info.value)
    assert CHARTS_ENV in str(info.value)


def test_this_checkout_is_found_and_renders_crds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CHARTS_ENV, raising=False)
    assert charts_dir() == REPO_CHARTS
    kinds = {c["spec"]["names"]["kind"] for c in crds()}
    assert {"ServerAuthorization", "HTTPLocalRateLimitPolicy", "EgressNetwork"} <= kinds
    assert "ExternalWorkload" in kinds
