"""Hatch build hook: put the Helm charts inside the gossamer-cli wheel.

``gossamer install`` renders from ``charts/gossamer`` and ``charts/gossamer-crds``. A wheel
installed away from the checkout (the runtime venv, ``pip install gossamer-cli``) has no
checkout to find them in, so the wheel carries a copy at ``gossamer_cli/charts``. The charts
live at the repository root (``../charts`` from this project) when building from the checkout
and at ``charts/`` inside an sdist, whose own force-include put them there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# hatchling exists only in the build environment, not in the workspace venv mypy runs in.
from hatchling.builders.hooks.plugin.interface import (  # type: ignore[import-not-found, unused-ignore]
    BuildHookInterface,
)


class ChartsBuildHook(BuildHookInterface):  # type: ignore[misc, unused-ignore]
    PLUGIN_NAME = "gossamer-charts"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return  # editable installs read the checkout's charts directly
        root = Path(self.root)
        for candidate in (root / "charts", root.parent / "charts"):
            if (candidate / "gossamer" / "Chart.yaml").is_file():
                build_data["force_include"][str(candidate)] = "gossamer_cli/charts"
                return
        raise RuntimeError(
            f"gossamer-cli: no charts/gossamer/Chart.yaml next to {root} or in its parent; "
            "the wheel would be unable to render manifests"
        )
