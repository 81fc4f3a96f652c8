"""How local mode runs an image: a local command, a working directory and an environment.

There is no container runtime in local mode. An image name maps to how its entrypoint runs
on this machine; a container's own ``command``/``args`` then apply with Kubernetes'
semantics (``command`` replaces the entrypoint, ``args`` replace the default arguments).
Gossamer's own images run from the runtime venv, a non-editable install that every uid can
read. Others come from a YAML file (``--images``), e.g. the demo app's.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ImageError(ValueError):
    """An image has no local mapping, or the mapping file is malformed."""


@dataclass(frozen=True)
class LocalImage:
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    workdir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)


SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def builtin_images(runtime_venv: Path) -> dict[str, LocalImage]:
    python = str(runtime_venv / "bin" / "python")
    # The injector may name the command ("python -m gossamer_proxy_init"), so the venv comes
    # first on PATH; proxy-init also needs iptables from /usr/sbin. The rest is the images'
    # ENV: output unbuffered, so a container's log shows what it wrote as it wrote it.
    env = {
        "PATH": f"{runtime_venv / 'bin'}:{SYSTEM_PATH}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    return {
        "gossamer/proxy": LocalImage(entrypoint=(python, "-m", "gossamer_proxy"), env=env),
        "gossamer/proxy-init": LocalImage(
            entrypoint=(python, "-m", "gossamer_proxy_init"), env=env
        ),
    }


def runtime_venv_compiled(runtime_venv: Path) -> bool:
    """Whether the proxy's modules in the runtime venv come with bytecode (``make runtime``
    compiles it). The proxy's uid cannot write ``__pycache__`` there, so without bytecode
    every proxy start compiles everything it imports again."""
    return any(runtime_venv.glob("lib/python3*/site-packages/gossamer_proxy/__pycache__/*.pyc"))


def image_repository(image: str) -> str:
    """``registry/gossamer/proxy:v1@sha256:…`` → ``gossamer/proxy`` (registry host dropped)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: name.rfind(":")]
    parts = name.split("/")
    if len(parts) > 2 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    return "/".join(parts)


def load_image_map(path: Path, base_dir: Path, runtime_venv: Path) -> dict[str, LocalImage]:
    """Read an image map::

    images:
      gossamer/demo-app:
        workdir: examples/demo        # relative to the file's directory
        env: {PATH: "{venv}/bin:/usr/bin:/bin"}
    """
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ImageError(f"cannot read image map {path}: {exc}") from exc
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, dict):
        raise ImageError(f"{path}: expected a mapping under 'images'")
    result = {}
    for name, spec in images.items():
        if not isinstance(spec, dict):
            raise ImageError(f"{path}: image {name!r} must map to a mapping")
        result[str(name)] = _local_image(name, spec, base_dir, runtime_venv, path)
    return result


def _local_image(
    name: str, spec: Mapping[str, Any], base_dir: Path, venv: Path, source: Path
) -> LocalImage:
    def strings(key: str) -> tuple[str, ...]:
        value = spec.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ImageError(f"{source}: {name}.{key} must be a list of strings")
        return tuple(v.replace("{venv}", str(venv)) for v in value)

    env = spec.get("env", {})
    if not isinstance(env, dict):
        raise ImageError(f"{source}: {name}.env must be a mapping")
    workdir = spec.get("workdir")
    return LocalImage(
        entrypoint=strings("entrypoint"),
        cmd=strings("cmd"),
        workdir=str((base_dir / workdir).resolve()) if workdir else None,
        env={str(k): str(v).replace("{venv}", str(venv)) for k, v in env.items()},
    )


def container_argv(
    image: LocalImage, command: Sequence[str] | None, args: Sequence[str] | None
) -> list[str]:
    """Kubernetes' rule: ``command`` replaces the entrypoint, ``args`` the default args."""
    if command:
        return [*command, *(args or [])]
    argv = [*image.entrypoint, *(args if args is not None and len(args) > 0 else image.cmd)]
    if not argv:
        raise ImageError("the container has no command and its image no entrypoint")
    return argv


#: Readable (and for directories enterable) by every uid, writable by root only.
EVERYONE_DIR = 0o755
EVERYONE_FILE = 0o644


def readable_copies(images: Mapping[str, LocalImage], root: Path) -> dict[str, LocalImage]:
    """Copy each image's working directory under ``root``, readable by every uid.

    App containers run as unprivileged users, who may not be able to enter the clone (for
    instance a checkout under /root); the copy is the image's "filesystem".
    """
    result = {}
    for name, image in images.items():
        if image.workdir is None:
            result[name] = image
            continue
        target = root / name.replace("/", "_")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(image.workdir, target, ignore=shutil.ignore_patterns("__pycache__"))
        for path in [root, target, *target.rglob("*")]:
            os.chmod(path, EVERYONE_DIR if path.is_dir() else EVERYONE_FILE)
        result[name] = dataclasses.replace(image, workdir=str(target))
    return result
