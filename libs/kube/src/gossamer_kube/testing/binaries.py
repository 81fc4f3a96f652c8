"""Finding (and if need be building) the Kubernetes binaries the test cluster runs.

kube-apiserver, kube-controller-manager, kube-scheduler and kwok are built from the wrapper Go
modules under ``tools/`` by ``scripts/kube-bins.sh`` into a per-version cache outside the
clone, and kubectl (at the same version) by ``scripts/kubectl-bin.sh``; etcd comes from
Debian. Nothing is downloaded from release pages.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "KUBE_BINARIES",
    "KubeBinaries",
    "KubeBinariesMissingError",
    "find_repo_root",
    "locate_kubectl",
]

KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class KubeBinariesMissingError(RuntimeError):
    """The binaries are not built and could not be built here (the message says why)."""


def find_repo_root(start: Path | None = None) -> Path | None:
    """The Gossamer checkout containing ``start`` (or this file, or the cwd), if any."""
    env = os.environ.get("GOSSAMER_REPO")
    if env:
        return Path(env)
    for origin in (start, Path(__file__).resolve(), Path.cwd()):
        if origin is None:
            continue
        for parent in (origin, *origin.parents):
            if (parent / "scripts" / "kube-bins.sh").is_file():
                return parent
    return None


@dataclass(frozen=True)
class KubeBinaries:
    """Absolute paths of every program the cluster starts."""

    bin_dir: Path
    etcd: Path

    def path(self, name: str) -> Path:
        return self.bin_dir / name

    @classmethod
    def locate(cls, build: bool = True) -> KubeBinaries:
        """Use ``$GOSSAMER_KUBE_BIN_DIR``, else the kube-bins cache, building it if ``build``.

        A cold build takes about ten minutes on two cores; the cache is reused afterwards.
        """
        etcd = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
        if etcd is None:
            raise KubeBinariesMissingError("etcd is not installed (Debian package etcd-server)")
        env_dir = os.environ.get("GOSSAMER_KUBE_BIN_DIR")
        if env_dir:
            bin_dir = Path(env_dir)
            _check(bin_dir)
            return cls(bin_dir, Path(etcd))
        root = find_repo_root()
        if root is None:
            raise KubeBinariesMissingError(
                "cannot find scripts/kube-bins.sh; set GOSSAMER_KUBE_BIN_DIR or GOSSAMER_REPO"
            )
        cached = _cached_dir(root)
        if cached is not None:
            return cls(cached, Path(etcd))
        if not build:
            raise KubeBinariesMissingError("kube binaries not built; run `make kube-bins`")
        if shutil.which("go") is None:
            raise KubeBinariesMissingError("kube binaries not built and Go is not installed")
        script = root / "scripts" / "kube-bins.sh"
        proc = subprocess.run(
            ["bash", str(script)], capture_output=True, text=True, check=False, cwd=root
        )
        if proc.returncode != 0:
            raise KubeBinariesMissingError(
                f"scripts/kube-bins.sh failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}"
            )
        lines = proc.stdout.strip().splitlines()
        if not lines:
            raise KubeBinariesMissingError("scripts/kube-bins.sh printed no bin directory")
        bin_dir = Path(lines[-1])
        _check(bin_dir)
        return cls(bin_dir, Path(etcd))


@functools.cache
def locate_kubectl() -> Path:
    """kubectl at the test cluster's version: ``$GOSSAMER_KUBECTL``, else the one
    ``scripts/kubectl-bin.sh`` builds into the cache (building it on first use if Go is here).
    """
    env = os.environ.get("GOSSAMER_KUBECTL")
    if env:
        path = Path(env)
    else:
        root = find_repo_root()
        if root is None:
            raise KubeBinariesMissingError(
                "cannot find scripts/kubectl-bin.sh; set GOSSAMER_KUBECTL or GOSSAMER_REPO"
            )
        proc = subprocess.run(
            ["bash", str(root / "scripts" / "kubectl-bin.sh")],
            capture_output=True, text=True, check=False, cwd=root, timeout=3600,
        )  # fmt: skip
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise KubeBinariesMissingError(
                f"scripts/kubectl-bin.sh failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}"
            )
        path = Path(lines[-1])
    if not os.access(path, os.X_OK):
        raise KubeBinariesMissingError(f"kubectl is not an executable at {path}")
    return path


def _cached_dir(root: Path) -> Path | None:
    """The cache dir the script would use, if all binaries are already in it."""
    try:
        kube = _required(root / "tools" / "kube" / "go.mod", "k8s.io/kubernetes")
        kwok = _required(root / "tools" / "kwok" / "go.mod", "sigs.k8s.io/kwok")
    except (OSError, LookupError):
        return None
    cache = Path(os.environ.get("GOSSAMER_CACHE", Path.home() / ".cache" / "gossamer"))
    bin_dir = cache / "kube" / f"{kube}-kwok-{kwok}" / "bin"
    try:
        _check(bin_dir)
    except KubeBinariesMissingError:
        return None
    return bin_dir


def _required(go_mod: Path, module: str) -> str:
    for line in go_mod.read_text().splitlines():
        parts = line.split()
        if parts[:2] == ["require", module] and len(parts) >= 3:
            return parts[2]
    raise LookupError(module)


def _check(bin_dir: Path) -> None:
    missing = [b for b in KUBE_BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        raise KubeBinariesMissingError(f"{bin_dir} lacks {', '.join(missing)}")
