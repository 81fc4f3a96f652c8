"""The gossamer-viz Helm chart and ``gossamer viz install`` render the same objects.

``helm template`` (the helm built by scripts/helm-bin.sh) renders charts/gossamer-viz with the
tap service's serving certificate ``gossamer viz install`` generated; the two sets must match
object for object (the Prometheus configuration and the dashboards compared parsed, not as
text). Without certificates the chart generates its own, which must chain and name the tap
Service. Every object must pass kubernetes-validate.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from cryptography import x509
from gossamer_cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gossamer-viz"
KUBE_VERSION = "1.30.0"


@pytest.fixture(scope="module")
def helm() -> str:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "helm-bin.sh")],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"cannot build helm: {result.stderr[-2000:]}")
    return result.stdout.strip().splitlines()[-1]


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def parsed(obj: dict[str, Any]) -> dict[str, Any]:
    """ConfigMap payloads parsed (YAML or JSON), so that formatting does not count."""
    if obj["kind"] != "ConfigMap":
        return obj
    data = {}
    for name, text in obj["data"].items():
        data[name] = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    return {**obj, "data": data}


def viz_install(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["viz", "install", *args])
    assert result.exit_code == 0, result.output
    return docs(result.output)


def helm_template(helm: str, *args: str) -> list[dict[str, Any]]:
    argv = [helm, "template", "viz", str(CHART), "--kube-version", KUBE_VERSION, *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return docs(result.stdout)


def tap_secret(objects: list[dict[str, Any]]) -> dict[str, str]:
    (secret,) = [o for o in objects if o["kind"] == "Secret"]
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


@pytest.mark.parametrize(
    ("cli_args", "sets"),
    [
        ((), ()),
        (
            ("-L", "mesh", "--namespace", "viz", "--scrape-interval", "5s",
             "--identity-trust-domain", "example.org", "--web-image", "r/web:1",
             "--tap-image", "r/tap:2", "--prometheus-image", "r/prom:3"),
            ("linkerdNamespace=mesh", "namespace=viz", "prometheus.scrapeInterval=5s",
             "identityTrustDomain=example.org", "dashboard.image=r/web:1", "tap.image=r/tap:2",
             "prometheus.image=r/prom:3"),
        ),
    ],
    ids=["default", "overrides"],
)  # fmt: skip
def test_helm_and_cli_render_the_same_viz_objects(
    helm: str, tmp_path: Path, cli_args: tuple[str, ...], sets: tuple[str, ...]
) -> None:
    ours = viz_install(*cli_args)
    pems = tap_secret(ours)
    values = {"tap": {"crtPEM": pems["tls.crt"], "keyPEM": pems["tls.key"],
                      "caBundlePEM": pems["ca.crt"]}}  # fmt: skip
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    set_args = [arg for s in sets for arg in ("--set", s)]
    theirs = helm_template(helm, "-f", str(tmp_path / "values.yaml"), *set_args)
    ours_by_key = {key(o): parsed(o) for o in ours}
    theirs_by_key = {key(o): parsed(o) for o in theirs}
    assert sorted(ours_by_key) == sorted(theirs_by_key)
    for k, obj in ours_by_key.items():
        assert obj == theirs_by_key[k], f"{k} differs"
    for obj in theirs:
        kubernetes_validate.validate(obj, KUBE_VERSION.rsplit(".", 1)[0], strict=True)


def test_the_chart_generates_the_tap_serving_certificate(helm: str) -> None:
    from gossamer_tls import load_certificates, verify_chain

    pems = tap_secret(helm_template(helm, "--set", "namespace=viz"))
    leaf = x509.load_pem_x509_certificate(pems["tls.crt"].encode())
    import datetime as dt

    verify_chain(
        leaf, [], load_certificates(pems["ca.crt"].encode()),
        now=dt.datetime.now(dt.UTC), dns_name="tap.viz.svc",
    )  # fmt: skip
    assert "PRIVATE KEY" in pems["tls.key"]


def test_only_some_tap_certificates_is_an_error(helm: str) -> None:
    argv = [helm, "template", "viz", str(CHART), "--kube-version", KUBE_VERSION,
            "--set", "tap.crtPEM=x"]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert "give all three or none" in result.stderr


def test_the_charts_dashboards_are_the_packages() -> None:
    package = ROOT / "cli" / "src" / "gossamer_cli" / "viz" / "grafana"
    chart = CHART / "files" / "grafana"
    assert sorted(p.name for p in chart.glob("*.json")) == sorted(
        p.name for p in package.glob("*.json")
    )
    for path in package.glob("*.json"):
        assert (chart / path.name).read_bytes() == path.read_bytes(), path.name


def test_helm_lint_is_clean(helm: str) -> None:
    argv = [helm, "lint", str(CHART), "--kube-version", KUBE_VERSION]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
