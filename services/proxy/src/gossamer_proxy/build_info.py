"""``proxy_build_info``: Linkerd's constant gauge whose labels describe the running build.

Labels as linkerd2-proxy's ``BuildInfo``: ``date``, ``git_sha``, ``profile``, ``vendor`` and
``version``. The version is the installed ``gossamer-proxy`` package's, read from its
``.dist-info/METADATA`` directly: :mod:`importlib.metadata` would bring ``email``, ``zipfile``,
``csv`` and ``pathlib`` into the sidecar (about 3 MB of RSS) for one string. The image sets
``GOSSAMER_BUILD_REVISION`` and ``GOSSAMER_BUILD_DATE`` from its build arguments (a source
checkout reports ``unknown``). ``profile`` is ``release`` (Python has no debug build of ours).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping

from gossamer_common.metrics import MetricSnapshot, Registry, Sample

__all__ = ["build_labels", "installed_version", "register_build_info"]

VENDOR = "gossamer"
_DISTRIBUTION = "gossamer_proxy"  # the dist-info directory's normalized name


def installed_version(distribution: str = _DISTRIBUTION, path: Iterable[str] | None = None) -> str:
    """The ``Version:`` of the first ``<distribution>-*.dist-info`` on ``path`` (sys.path).

    ``distribution`` is the normalized name (lower case, ``_`` for ``-`` and ``.``), as
    installers name the directory. ``unknown`` when none is installed or it has no version.
    """
    prefix = distribution + "-"
    for entry in sys.path if path is None else path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:  # not a directory (a zip, a missing path entry)
            continue
        for name in names:
            if name.startswith(prefix) and name.endswith(".dist-info"):
                version = _metadata_version(os.path.join(entry, name, "METADATA"))
                if version:
                    return version
    return "unknown"


def _metadata_version(metadata: str) -> str:
    try:
        with open(metadata, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if not line.strip():  # the headers end; the description follows
                    break
                key, _, value = line.partition(":")
                if key.strip().lower() == "version":
                    return value.strip()
    except OSError:
        pass
    return ""


def build_labels(environ: Mapping[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    env = os.environ if environ is None else environ
    version = installed_version()
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
