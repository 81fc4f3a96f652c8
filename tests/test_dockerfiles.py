"""Every service Dockerfile passes hadolint with no findings and keeps the image policy.

Policy (design.md §1, §2): multi-stage, built from the repository root, base images pinned
by tag, uv pinned by version, OCI labels, non-root user (the proxy as uid 2102) except
proxy-init, which must program iptables and documents why it runs as root.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HADOLINT = Path(sys.executable).parent / "hadolint"
DOCKERFILES = sorted(ROOT.glob("services/*/Dockerfile"))
SERVICES = sorted(p.parent.name for p in ROOT.glob("services/*/pyproject.toml"))
#: Images that are not services (the viz dashboard and tap service, the demo app): hadolint
#: and the base-image rules only, not the service image policy.
OTHER_DOCKERFILES = [
    ROOT / "cli" / "docker" / "viz-web" / "Dockerfile",
    ROOT / "cli" / "docker" / "viz-tap" / "Dockerfile",
    ROOT / "examples" / "demo" / "Dockerfile",
]


def test_every_service_has_a_dockerfile() -> None:
    assert [p.parent.name for p in DOCKERFILES] == SERVICES


def test_make_images_builds_every_dockerfile_by_default() -> None:
    """scripts/images.sh's default list (make images, make push, make e2e) accepts itself and
    covers every image: it once refused its own default viz-web, failing make e2e at once."""
    result = subprocess.run(
        ["bash", "scripts/images.sh", "--plan"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    planned = {ROOT / line.split()[1] for line in result.stdout.splitlines()}
    assert planned == set(DOCKERFILES + OTHER_DOCKERFILES)


@pytest.mark.parametrize("dockerfile", DOCKERFILES + OTHER_DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--format", "json", "--failure-threshold", "style",
         str(dockerfile)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    findings = json.loads(result.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=2)
    assert result.returncode == 0, result.stderr


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def resolve_base_args(from_line: str, ins: list[tuple[str, str]]) -> str:
    """A FROM line with the global ARG defaults (those before the first FROM) substituted."""
    for keyword, rest in ins:
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            from_line = from_line.replace("${" + name + "}", default)
    assert "$" not in from_line, f"base image without a pinned default: {from_line}"
    return from_line


@pytest.mark.parametrize("dockerfile", DOCKERFILES + OTHER_DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_images_are_build_args_with_pinned_defaults(dockerfile: Path) -> None:
    """BASE_IMAGE and UV_IMAGE select the bases (scripts/base-image.sh builds local ones)."""
    ins = instructions(dockerfile)
    first_from = [k for k, _ in ins].index("FROM")
    global_args = dict(rest.partition("=")[::2] for k, rest in ins[:first_from] if k == "ARG")
    assert global_args["BASE_IMAGE"] == "python:3.11-slim-bookworm"
    assert global_args["UV_IMAGE"] == "ghcr.io/astral-sh/uv:0.13.8"
    froms = [rest.split()[0] for k, rest in ins if k == "FROM"]
    assert "${UV_IMAGE}" in froms
    assert froms.count("${BASE_IMAGE}") == 2, "the build and runtime stages share one base"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_image_policy(dockerfile: Path) -> None:
    service = dockerfile.parent.name
    ins = instructions(dockerfile)
    froms = [resolve_base_args(rest, ins) for k, rest in ins if k == "FROM"]
    assert len(froms) >= 3, "multi-stage: uv, build and runtime stages"
    for image in froms:
        ref = image.split()[0]
        assert ":" in ref, f"unpinned base image {ref}"
        assert not ref.endswith(":latest"), f"unpinned base image {ref}"
    assert any(re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+ AS uv", f) for f in froms)
    assert any(k == "COPY" and rest.startswith("libs/") for k, rest in ins), "needs libs/"
    package = "gossamer-" + service
    assert any(k == "RUN" and f"--package {package}" in rest and "--frozen" in rest
               for k, rest in ins)  # fmt: skip
    labels = " ".join(rest for k, rest in ins if k == "LABEL")
    for key in ("title", "description", "version", "revision"):
        assert f"org.opencontainers.image.{key}=" in labels
    users = [rest for k, rest in ins if k == "USER"]
    assert users, "the final user must be explicit"
    entrypoint = json.loads(next(rest for k, rest in ins if k == "ENTRYPOINT"))
    assert entrypoint == ["python", "-m", "gossamer_" + service.replace("-", "_")]
    if service == "proxy-init":
        assert users[-1] == "0:0"
        assert "runs as root, on purpose" in dockerfile.read_text()
        assert any(k == "RUN" and "iptables=" in rest for k, rest in ins)
    else:
        expected = "2102:2102" if service == "proxy" else "2103:2103"
        assert users[-1] == expected
        assert any(k == "HEALTHCHECK" and "/live" in rest for k, rest in ins)


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", "**/__pycache__", "**/tests", ".git"):
        assert entry in ignored


@pytest.mark.parametrize(
    "dockerfile",
    [d for d in DOCKERFILES + OTHER_DOCKERFILES if d.parent.parent.name != "examples"],
    ids=lambda p: p.parent.name,
)
def test_dockerignore_keeps_what_each_copy_needs(dockerfile: Path) -> None:
    """A COPY from the repository root whose source .dockerignore drops fails the build (the
    viz-web image's charts/ did, and with it make e2e)."""
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for keyword, rest in instructions(dockerfile):
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        for source in rest.split()[:-1]:
            top = source.rstrip("/").split("/")[0]
            assert top not in ignored, f"{dockerfile}: COPY {source} but .dockerignore drops {top}"
