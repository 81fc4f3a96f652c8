"""``gossamer inject`` / ``uninject`` on the golden manifests: round trips and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from gossamer_cli.main import cli

GOLDEN = Path(__file__).parents[2] / "libs" / "inject" / "tests" / "golden"
MANIFESTS = sorted(GOLDEN.glob("*.yaml"))
ANCHORS = "-----BEGIN CERTIFICATE-----\nMIIBfakeanchor\n-----END CERTIFICATE-----\n"


def without_inject_annotation(text: str) -> str:
    """uninject drops ``linkerd.io/inject: enabled|ingress``, even one that was there before."""
    return "".join(
        line
        for line in text.splitlines(keepends=True)
        if "linkerd.io/inject: enabled" not in line and "linkerd.io/inject: ingress" not in line
    )


def run(args: list[str], stdin: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, input=stdin)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def anchors(tmp_path: Path) -> str:
    path = tmp_path / "anchors.pem"
    path.write_text(ANCHORS)
    return str(path)


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.stem)
def test_inject_then_uninject_round_trips(manifest: Path) -> None:
    text = manifest.read_text()
    code, injected, _ = run(["inject", "-"], text)
    assert code == 0
    assert "linkerd.io/inject: " in injected
    code, back, _ = run(["uninject", "-"], injected)
    assert code == 0
    assert back == without_inject_annotation(text)


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.stem)
def test_manual_inject_then_uninject_round_trips(manifest: Path, anchors: str) -> None:
    text = manifest.read_text()
    code, injected, err = run(["inject", "--manual", "--trust-anchors-file", anchors, "-"], text)
    assert code == 0, err
    assert "linkerd-proxy" in injected
    code, back, _ = run(["uninject", "-"], injected)
    assert code == 0
    assert back == without_inject_annotation(text)


def test_annotation_mode_keeps_comments_and_reports(tmp_path: Path) -> None:
    text = (GOLDEN / "web-deployment.yaml").read_text()
    code, out, err = run(["inject", "-"], text)
    assert code == 0
    assert "# A plain web frontend" in out
    assert "# the demo app" in out
    doc = yaml.safe_load(out)
    assert doc["spec"]["template"]["metadata"]["annotations"] == {"linkerd.io/inject": "enabled"}
    assert "deployment/web injected" in err


def test_manual_writes_full_proxy(anchors: str) -> None:
    text = (GOLDEN / "cronjob.yaml").read_text()
    code, out, _ = run(["inject", "--manual", "--trust-anchors-file", anchors, "-"], text)
    assert code == 0
    template = yaml.safe_load(out)["spec"]["jobTemplate"]["spec"]["template"]
    names = [c["name"] for c in template["spec"]["initContainers"]]
    assert names == ["linkerd-init", "linkerd-proxy"]
    proxy = template["spec"]["initContainers"][1]
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED"] == "true"
    assert env["LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"] == ANCHORS
    assert "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS\n" in out or "|" in out  # PEM as a block


def test_list_items_are_injected() -> None:
    code, out, err = run(["inject", "-"], (GOLDEN / "list.yaml").read_text())
    assert code == 0
    items = yaml.safe_load(out)["items"]
    assert items[0]["kind"] == "ConfigMap"
    assert "annotations" not in items[0]["metadata"]
    assert items[1]["spec"]["template"]["metadata"]["annotations"]["linkerd.io/inject"] == "enabled"
    assert "annotations" not in items[2]["metadata"]
    assert "deployment/api injected" in err


def test_namespace_and_files(tmp_path: Path) -> None:
    path = tmp_path / "ns.yaml"
    path.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n")
    code, out, _ = run(["inject", "--ingress", str(path)], "")
    assert code == 0
    assert yaml.safe_load(out)["metadata"]["annotations"] == {"linkerd.io/inject": "ingress"}
    code, back, _ = run(["uninject", "-"], out)
    assert back == path.read_text()


def test_disabled_and_host_network_are_skipped() -> None:
    text = (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  annotations:\n"
        "    linkerd.io/inject: disabled\nspec:\n  containers:\n  - name: c\n    image: i\n"
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: b\nspec:\n  hostNetwork: true\n"
        "  containers:\n  - name: c\n    image: i\n"
    )
    code, out, err = run(["inject", "-"], text)
    assert code == 0
    assert out == text
    assert "pod/a skipped" in err
    assert "pod/b skipped: pods with hostNetwork" in err


@pytest.mark.parametrize(
    ("args", "stdin", "needle"),
    [
        (["inject", "-"], "a: [unclosed", "not valid YAML"),
        (["inject", "-"], "- just\n- a list\n", "not a Kubernetes object"),
        (
            ["inject", "-"],
            "kind: Deployment\nmetadata:\n  name: x\nspec: {}\n",
            "no spec.template",
        ),
        (
            ["inject", "-"],
            "kind: Pod\nmetadata:\n  name: x\nspec:\n  containers: []\n",
            "spec.containers",
        ),
        (["inject", "--manual", "-"], "kind: Pod\n", "--trust-anchors-file"),
        (["inject", "/nonexistent/file.yaml"], "", "No such file"),
    ],
)
def test_errors_are_clear_and_write_nothing(args: list[str], stdin: str, needle: str) -> None:
    code, out, err = run(args, stdin)
    assert code != 0
    assert out == ""
    assert needle in err


def test_bad_override_fails_manual(anchors: str) -> None:
    text = (
        "kind: Pod\nmetadata:\n  name: x\n  annotations:\n"
        "    config.linkerd.io/proxy-memory-limit: lots\n"
        "spec:\n  containers:\n  - name: c\n    image: i\n"
    )
    code, out, err = run(["inject", "--manual", "--trust-anchors-file", anchors, "-"], text)
    assert code == 1
    assert out == ""
    assert "config.linkerd.io/proxy-memory-limit" in err
    assert "quantity" in err
