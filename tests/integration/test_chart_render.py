"""The Helm chart and ``gossamer install`` render the same objects; every object is valid.

``helm template`` (the helm built by scripts/helm-bin.sh) renders charts/gossamer with the
certificates ``gossamer install`` was given, once with default values and once with
values-ha.yaml; the two sets must match object for object (kind/namespace/name, then equal
content). Every rendered manifest, CRDs included, must pass kubernetes-validate for the
cluster's Kubernetes version (1.30).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from gossamer_cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gossamer"
CRD_CHART = ROOT / "charts" / "gossamer-crds"
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


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Identity material made once, given to both renderers as files/values."""
    import datetime as dt

    from gossamer_cli.manifests_certs import generate_identity

    pems = generate_identity(
        namespace="gossamer", trust_domain="cluster.local", now=dt.datetime.now(dt.UTC)
    )
    d = tmp_path_factory.mktemp("certs")
    paths = {"ca": d / "ca.crt", "crt": d / "issuer.crt", "key": d / "issuer.key"}
    paths["ca"].write_text(pems.trust_anchors_pem)
    paths["crt"].write_text(pems.issuer_crt_pem)
    paths["key"].write_text(pems.issuer_key_pem)
    return paths


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def gossamer_install(args: list[str]) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["install", *args])
    assert result.exit_code == 0, result.output
    return docs(result.output)


def webhook_pems(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The webhook certificate gossamer install generated, to hand the same one to helm."""
    import base64

    by_key = {key(o): o for o in objects}
    secret = by_key["Secret", "gossamer", "gossamer-proxy-injector-k8s-tls"]
    hook = next(o for o in objects if o["kind"] == "MutatingWebhookConfiguration")
    return {
        "crtPEM": base64.b64decode(secret["data"]["tls.crt"]).decode(),
        "keyPEM": base64.b64decode(secret["data"]["tls.key"]).decode(),
        "caBundle": base64.b64decode(hook["webhooks"][0]["clientConfig"]["caBundle"]).decode(),
    }


SKAFFOLD_LIKE = (
    "image.registry=localhost:5000/g",
    "image.proxy.repository=localhost:5000/g/proxy",
    "image.proxy.tag=abc123",
    "image.proxyInit.tag=def456",
    "image.destination.tag=0123abc",
    "proxy.nativeSidecar=false",
    "proxy.resources.cpu.limit=1500m",
)


@pytest.mark.parametrize(
    ("ha", "sets"),
    [(False, ()), (True, ()), (False, SKAFFOLD_LIKE)],
    ids=["default", "ha", "per-image-overrides"],
)
def test_helm_and_cli_render_the_same_objects(
    helm: str, certs: dict[str, Path], tmp_path: Path, ha: bool, sets: tuple[str, ...]
) -> None:
    cert_args = [
        "--identity-trust-anchors-file", str(certs["ca"]),
        "--identity-issuer-certificate-file", str(certs["crt"]),
        "--identity-issuer-key-file", str(certs["key"]),
    ]  # fmt: skip
    set_args = [arg for s in sets for arg in ("--set", s)]
    ours = gossamer_install([*cert_args, *set_args, *(["--ha"] if ha else [])])
    values = {
        "installNamespace": True,
        "identityTrustAnchorsPEM": certs["ca"].read_text(),
        "identity": {
            "issuer": {
                "tls": {"crtPEM": certs["crt"].read_text(), "keyPEM": certs["key"].read_text()}
            }
        },
        "proxyInjector": webhook_pems(ours),
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    args = [helm, "template", "gossamer", str(CHART), "--namespace", "gossamer",
            "--kube-version", KUBE_VERSION, "-f", str(values_file)]  # fmt: skip
    if ha:
        args += ["-f", str(CHART / "values-ha.yaml")]
    args += set_args
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    theirs = docs(result.stdout)

    ours_by_key = {key(o): o for o in ours}
    theirs_by_key = {key(o): o for o in theirs}
    assert len(ours_by_key) == len(ours), "gossamer install rendered a duplicate object"
    assert sorted(ours_by_key) == sorted(theirs_by_key)
    for k, obj in ours_by_key.items():
        assert obj == theirs_by_key[k], f"{k} differs: {_diff(obj, theirs_by_key[k])[:5]}"
    kinds = {k[0] for k in ours_by_key}
    assert ("PodDisruptionBudget" in kinds) is ha
    replicas = {o["spec"]["replicas"] for o in ours if o["kind"] == "Deployment"}
    assert replicas == ({3} if ha else {1})
    if sets:
        dst = ours_by_key["Deployment", "gossamer", "gossamer-destination"]["spec"]["template"]
        images = {c["name"]: c["image"] for c in dst["spec"]["initContainers"]}
        images |= {c["name"]: c["image"] for c in dst["spec"]["containers"]}
        assert images == {
            "linkerd-init": "localhost:5000/g/proxy-init:def456",
            "linkerd-proxy": "localhost:5000/g/proxy:abc123",
            "destination": "localhost:5000/g/destination:0123abc",
        }


def test_helm_generates_webhook_certificates_when_none_are_given(
    helm: str, certs: dict[str, Path]
) -> None:
    result = subprocess.run(
        [helm, "template", "g", str(CHART), "-n", "gossamer", "--kube-version", KUBE_VERSION,
         "--set-file", f"identityTrustAnchorsPEM={certs['ca']}",
         "--set-file", f"identity.issuer.tls.crtPEM={certs['crt']}",
         "--set-file", f"identity.issuer.tls.keyPEM={certs['key']}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    objects = {key(o): o for o in docs(result.stdout)}
    from cryptography import x509
    from gossamer_cli.manifests_certs import webhook_dns_name
    from gossamer_tls import load_certificates, verify_chain

    pems = webhook_pems(list(objects.values()))
    leaf = x509.load_pem_x509_certificate(pems["crtPEM"].encode())
    import datetime as dt

    verify_chain(
        leaf,
        [],
        load_certificates(pems["caBundle"]),
        now=dt.datetime.now(dt.UTC),
        dns_name=webhook_dns_name("gossamer"),
    )


def test_helm_refuses_a_missing_trust_anchor(helm: str) -> None:
    result = subprocess.run(
        [helm, "template", "g", str(CHART), "-n", "gossamer", "--kube-version", KUBE_VERSION],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "identityTrustAnchorsPEM is required" in result.stderr


def test_helm_lint_is_clean(helm: str, certs: dict[str, Path]) -> None:
    for chart in (CHART, CRD_CHART):
        result = subprocess.run(
            [helm, "lint", str(chart), "--kube-version", KUBE_VERSION,
             "--set-file", f"identityTrustAnchorsPEM={certs['ca']}",
             "--set-file", f"identity.issuer.tls.crtPEM={certs['crt']}",
             "--set-file", f"identity.issuer.tls.keyPEM={certs['key']}"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


def _validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, KUBE_VERSION.rsplit(".", 1)[0], strict=True)


@pytest.mark.parametrize("ha", [False, True], ids=["default", "ha"])
def test_every_rendered_manifest_passes_schema_validation(ha: bool) -> None:
    objects = gossamer_install(["--ha"] if ha else [])
    for obj in objects:
        try:
            _validate(obj)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{key(obj)}: {exc.message} at {list(exc.path)}")


def test_every_crd_passes_schema_validation() -> None:
    crds = gossamer_install(["--crds"])
    assert crds, "charts/gossamer-crds/templates holds no CRDs"
    for obj in crds:
        assert obj["kind"] == "CustomResourceDefinition"
        _validate(obj)
        for version in obj["spec"]["versions"]:
            schema = version.get("schema", {}).get("openAPIV3Schema")
            assert schema, f"{obj['metadata']['name']} {version['name']} has no OpenAPI schema"


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _diff(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]
