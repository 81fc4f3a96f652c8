"""skaffold.yaml validates against skaffold's own JSON schema and matches the chart.

The schema comes from the skaffold Go module zip (``docs-v2/content/en/schemas/v4beta14.json``),
fetched with ``go mod download`` through the Go module proxy and cached in the module cache.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SKAFFOLD_MODULE = "github.com/GoogleContainerTools/skaffold/v2@v2.24.0"
SCHEMA_PATH = "docs-v2/content/en/schemas/v4beta14.json"
SERVICES = sorted(p.parent.name for p in ROOT.glob("services/*/Dockerfile"))


@pytest.fixture(scope="module")
def schema(
    tmp_path_factory: pytest.TempPathFactory, require_program: Callable[..., str]
) -> dict[str, Any]:
    go = require_program("go", also=("/usr/local/go/bin/go",))
    # Outside any module, so the download does not touch a go.mod of ours.
    workdir = tmp_path_factory.mktemp("skaffold-schema")
    result = subprocess.run(
        [go, "mod", "download", "-json", SKAFFOLD_MODULE],
        capture_output=True, text=True, timeout=900, cwd=workdir, check=False,
        env={**os.environ, "GOFLAGS": "-mod=mod", "GO111MODULE": "on"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    module_dir = Path(json.loads(result.stdout)["Dir"])
    return dict(json.loads((module_dir / SCHEMA_PATH).read_text()))


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "skaffold.yaml").read_text()))


def test_skaffold_yaml_matches_the_schema(schema: dict[str, Any], config: dict[str, Any]) -> None:
    assert config["apiVersion"] == "skaffold/v4beta14"
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(config)]
    assert errors == []


def test_schema_rejects_a_broken_config(schema: dict[str, Any], config: dict[str, Any]) -> None:
    """The validation has teeth: an unknown field in an artifact is an error."""
    broken = json.loads(json.dumps(config))
    broken["build"]["artifacts"][0]["dockerfil"] = "typo"
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_one_artifact_per_service_built_from_the_root(config: dict[str, Any]) -> None:
    artifacts = config["build"]["artifacts"]
    assert sorted(a["image"].removeprefix("gossamer/") for a in artifacts) == [
        "destination", "identity", "injector", "proxy", "proxy-init",
    ]  # fmt: skip
    assert len(artifacts) == len(SERVICES)
    for a in artifacts:
        assert a["context"] == "."
        assert (ROOT / a["docker"]["dockerfile"]).is_file()


def test_helm_values_set_by_skaffold_exist_in_the_chart(config: dict[str, Any]) -> None:
    values = yaml.safe_load((ROOT / "charts" / "gossamer" / "values.yaml").read_text())
    release = next(r for r in config["deploy"]["helm"]["releases"] if r["name"] == "gossamer")
    assert (ROOT / release["chartPath"] / "Chart.yaml").is_file()
    for path in [*release["setValueTemplates"], *release["setFiles"]]:
        node = values
        for part in path.split("."):
            assert isinstance(node, dict), f"{path} is not a chart value"
            assert part in node, f"{path} is not a chart value"
            node = node[part]
    images = {a["image"].replace("/", "_").replace("-", "_") for a in config["build"]["artifacts"]}
    templated = " ".join(release["setValueTemplates"].values())
    for image in images:
        assert f"IMAGE_REPO_{image}" in templated
        assert f"IMAGE_TAG_{image}" in templated


def test_profiles_and_admin_port_forwards(config: dict[str, Any]) -> None:
    profiles = {p["name"]: p for p in config["profiles"]}
    assert profiles["kind"]["build"]["local"]["push"] is False
    assert profiles["registry"]["build"]["local"]["push"] is True
    forwarded = {(f["resourceName"], f["port"]) for f in config["portForward"]}
    assert {
        ("gossamer-identity", 9990),
        ("gossamer-destination", 9996),
        ("gossamer-proxy-injector", 9995),
    } <= forwarded


def test_node_profile_builds_each_image_with_buildah_from_its_own_inputs(
    config: dict[str, Any],
) -> None:
    """The node profile (no Docker): the same images, each built by the custom builder script
    and pushed, and rebuilt only when its own service, the libraries or the lock change."""
    node = next(p for p in config["profiles"] if p["name"] == "node")
    assert node["build"]["local"]["push"] is True
    artifacts = node["build"]["artifacts"]
    assert [a["image"] for a in artifacts] == [a["image"] for a in config["build"]["artifacts"]]
    for a in artifacts:
        component = a["image"].removeprefix("gossamer/")
        command = a["custom"]["buildCommand"].split()
        assert command[0] == "bash"
        assert (ROOT / command[1]).is_file()
        paths = a["custom"]["dependencies"]["paths"]
        assert {"uv.lock", "libs", f"services/{component}"} <= set(paths)
        others = {f"services/{s}" for s in SERVICES} - {f"services/{component}"}
        assert not others & set(paths), f"{component} rebuilds on other services' edits"
