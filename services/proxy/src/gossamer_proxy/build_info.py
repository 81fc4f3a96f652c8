"""``proxy_build_info``: Linkerd's constant gauge whose labels describe the running build.

Labels as linkerd2-proxy's ``BuildInfo``: ``date``, ``git_sha``, ``profile``, ``vendor`` and
``version``. The version is the installed ``gossamer-proxy`` package's; the image sets
``GOSSAMER_BUILD_REVISION`` and ``GOSSAMER_BUILD_DATE`` from its build arguments (a source
checkout reports ``unknown``). ``profile`` is ``release`` (Python has no debug build of ours).
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping

from gossamer_common.metrics import MetricSnapshot, Registry, Sample

__all__ = ["build_labels", "register_build_info"]

VENDOR = "gossamer"


def build_labels(environ: Mapping[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    env = os.environ if environ is None else environ
    try:
        version = importlib.metadata.version("gossamer-proxy")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return (
        ("date", env.get("GOSSAMER_BUILD_DATE") or "unknown"),
        ("git_sha", env.get("GOSSAMER_BUILD_REVISION") or "unknown"),
        ("profile", "release"),
        ("vendor", VENDOR),
        ("version", version),
    )


def register_build_info(registry: Registry, environ: Mapping[str, str] | None = None) -> None:
    labels = build_labels(environ)
    snapshot = [
        MetricSnapshot("proxy_build_info", "Proxy build info", "gauge", (Sample(1, labels),))
    ]
    registry.register_collector(lambda: snapshot, ("proxy_build_info",))
