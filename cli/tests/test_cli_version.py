"""``gossamer --help`` and ``gossamer version`` (offline, and against the real test cluster)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from gossamer_cli import __version__
from gossamer_cli.main import cli
from gossamer_cli.version_cmd import image_tag, server_versions


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "version" in result.output


def test_client_only() -> None:
    result = CliRunner().invoke(cli, ["version", "--client"])
    assert result.exit_code == 0
    assert result.output == f"client: {__version__}\n"


def test_server_unavailable_without_a_cluster(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = CliRunner().invoke(cli, ["version", "--kubeconfig", str(missing)])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == f"client: {__version__}"
    assert lines[1].startswith("server: unavailable (")
    assert str(missing) in lines[1]


def test_server_unreachable_apiserver(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    result = CliRunner().invoke(cli, ["version", "--kubeconfig", str(kubeconfig), "--timeout=5"])
    assert result.exit_code == 0
    assert result.output.splitlines()[1].startswith("server: unavailable (")


def test_image_tags_and_versions() -> None:
    assert image_tag("gossamer/destination:0.2.0") == "0.2.0"
    assert image_tag("registry:5000/gossamer/destination:0.2.0") == "0.2.0"
    assert image_tag("registry:5000/gossamer/destination") is None
    assert image_tag("gossamer/destination@sha256:abc") is None

    def deploy(component: str | None, image: str) -> dict[str, Any]:
        labels = {"linkerd.io/control-plane-component": component} if component else {}
        return {
            "metadata": {"labels": labels},
            "spec": {"template": {"spec": {"containers": [{"image": image}]}}},
        }

    assert server_versions(
        [deploy("identity", "g/identity:1.0"), deploy(None, "x:2"), deploy("d", "g/d")]
    ) == {"identity": "1.0"}


async def test_server_version_from_cluster(
    kube_cluster: Any, kube_namespace: str, kube_client: Any
) -> None:
    from gossamer_kube.resources import DEPLOYMENTS

    for component, image in (("identity", "gossamer/identity:9.9.9"),
                             ("destination", "gossamer/destination:9.9.9")):  # fmt: skip
        labels = {"app": component, "linkerd.io/control-plane-component": component}
        await kube_client.create(
            DEPLOYMENTS,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": component, "labels": labels},
                "spec": {
                    "selector": {"matchLabels": {"app": component}},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": component, "image": image}]},
                    },
                },
            },
            namespace=kube_namespace,
        )
    # The command runs its own event loop, so it cannot run on this test's loop thread.
    result = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["version", "--kubeconfig", str(kube_cluster.kubeconfig), "-n", kube_namespace],
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"client: {__version__}", "server: 9.9.9"]


@pytest.mark.parametrize("namespace", ["gossamer-missing-ns"])
def test_no_control_plane_in_namespace(kube_cluster: Any, namespace: str) -> None:
    result = CliRunner().invoke(
        cli, ["version", "--kubeconfig", str(kube_cluster.kubeconfig), "-n", namespace]
    )
    assert result.output.splitlines()[1] == (
        "server: unavailable (no control-plane deployments in namespace 'gossamer-missing-ns')"
    )
