"""The CRDs and the control plane against the real kube-apiserver, then ``gossamer check``.

``kubectl apply --dry-run=server`` (kubectl at the cluster's version, from the kube-bins
cache) and the real apply both succeed; sample resources of every
CRD are accepted and broken ones are refused with a message naming the field; ``gossamer
check`` passes against the running control plane (kwok runs its pods) and names the failing
check when the webhook is gone or the issuer has expired. The webhook configuration is deleted
before the module ends: while it exists the apiserver would call the injector's (fake) pod IPs
for every pod created outside the control-plane namespace.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from gossamer_cli.main import cli
from gossamer_kube.testing import KubeTestCluster
from gossamer_kube.testing.binaries import locate_kubectl
from gossamer_tls import (
    certificates_to_pem,
    create_issuer,
    generate_trust_anchor_and_issuer,
    issuer_name,
    private_key_to_pem,
)


def kubectl(
    cluster: KubeTestCluster, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(locate_kubectl()), "--kubeconfig", str(cluster.kubeconfig), *args],
        input=stdin, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


class Install:
    def __init__(self, cluster: KubeTestCluster, namespace: str, anchor: Any) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.anchor = anchor

    def check(self, *extra: str) -> Result:
        return invoke(
            "check", "-L", self.namespace, "--kubeconfig", str(self.cluster.kubeconfig),
            "-o", "json", *extra,
        )  # fmt: skip


def failed_checks(result: Result) -> list[str]:
    body = json.loads(result.output)
    return [r["description"] for r in body["results"] if not r["ok"] and not r["warning"]]


@pytest.fixture(scope="module")
def crds_applied(kube_cluster: KubeTestCluster) -> list[dict[str, Any]]:
    rendered = invoke("install", "--crds")
    assert rendered.exit_code == 0, rendered.output
    kubectl(kube_cluster, "apply", "--dry-run=server", "-f", "-", stdin=rendered.output)
    kubectl(kube_cluster, "apply", "-f", "-", stdin=rendered.output)
    crds = [d for d in yaml.safe_load_all(rendered.output) if d]
    names = [f"crd/{c['metadata']['name']}" for c in crds]
    kubectl(kube_cluster, "wait", "--for=condition=Established", "--timeout=60s", *names)
    return crds


@pytest.fixture(scope="module")
def installed(
    kube_cluster: KubeTestCluster,
    crds_applied: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Install]:
    namespace = f"g-{secrets.token_hex(3)}"
    # Made 40 days ago, so that test_check_names_an_expired_issuer can sign an issuer that has
    # already expired with the same anchor.
    now = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    material = generate_trust_anchor_and_issuer(
        trust_domain="cluster.local", control_plane_namespace=namespace, now=now
    )
    d = tmp_path_factory.mktemp("install")
    (d / "ca.crt").write_bytes(certificates_to_pem([material.trust_anchor.certificate]))
    (d / "issuer.crt").write_bytes(certificates_to_pem([material.issuer.certificate]))
    (d / "issuer.key").write_bytes(private_key_to_pem(material.issuer.private_key))
    rendered = invoke(
        "install", "-L", namespace,
        "--identity-trust-anchors-file", str(d / "ca.crt"),
        "--identity-issuer-certificate-file", str(d / "issuer.crt"),
        "--identity-issuer-key-file", str(d / "issuer.key"),
    )  # fmt: skip
    assert rendered.exit_code == 0, rendered.output
    # A server dry run cannot create the namespace the other objects go into: make it first.
    ns_doc = next(d for d in yaml.safe_load_all(rendered.output) if d and d["kind"] == "Namespace")
    kubectl(kube_cluster, "apply", "-f", "-", stdin=json.dumps(ns_doc))
    dry = kubectl(kube_cluster, "apply", "--dry-run=server", "-f", "-", stdin=rendered.output)
    assert "(server dry run)" in dry.stdout
    kubectl(kube_cluster, "apply", "-f", "-", stdin=rendered.output)
    install = Install(kube_cluster, namespace, material.trust_anchor)
    try:
        yield install
    finally:
        gone = invoke("uninstall", "-L", namespace, "--keep-crds")
        kubectl(
            kube_cluster, "delete", "--ignore-not-found", "--wait=false", "-f", "-",
            stdin=gone.output, check=False,
        )  # fmt: skip


def wait_until_check_passes(install: Install, timeout: float = 90.0) -> Result:
    """kwok makes the pods Running; the Deployments report ready replicas shortly after."""
    deadline = time.monotonic() + timeout
    while True:
        result = install.check()
        if result.exit_code == 0 or time.monotonic() > deadline:
            return result
        time.sleep(1.0)


def test_check_passes_against_the_running_control_plane(installed: Install) -> None:
    result = wait_until_check_passes(installed)
    assert result.exit_code == 0, failed_checks(result)
    body = json.loads(result.output)
    categories = {r["category"] for r in body["results"]}
    assert {
        "kubernetes-api", "kubernetes-version", "linkerd-existence", "linkerd-config",
        "linkerd-identity", "linkerd-webhooks-and-apisvc-tls", "control-plane-version",
        "linkerd-control-plane-proxy",
    } <= categories  # fmt: skip
    table = invoke("check", "-L", installed.namespace,
                   "--kubeconfig", str(installed.cluster.kubeconfig))  # fmt: skip
    assert table.exit_code == 0
    assert table.output.rstrip().endswith("Status check results are \u221a")


def test_version_reads_the_server_version(installed: Install) -> None:
    result = invoke(
        "version", "-n", installed.namespace, "--kubeconfig", str(installed.cluster.kubeconfig)
    )
    assert result.exit_code == 0
    assert result.output.splitlines()[1] == "server: 0.1.0"


def test_check_names_a_missing_webhook(installed: Install) -> None:
    wait_until_check_passes(installed)
    name = f"{installed.namespace}-proxy-injector-webhook-config"
    saved = kubectl(installed.cluster, "get", "mutatingwebhookconfiguration", name, "-o", "json")
    kubectl(installed.cluster, "delete", "mutatingwebhookconfiguration", name)
    result = installed.check()
    assert result.exit_code == 1
    assert failed_checks(result) == ["proxy-injector MutatingWebhookConfiguration exists"]
    table = invoke("check", "-L", installed.namespace,
                   "--kubeconfig", str(installed.cluster.kubeconfig))  # fmt: skip
    assert "\u00d7 proxy-injector MutatingWebhookConfiguration exists" in table.output
    assert "see: re-apply the control plane" in table.output
    hook = json.loads(saved.stdout)
    for field in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        hook["metadata"].pop(field, None)
    kubectl(installed.cluster, "apply", "-f", "-", stdin=json.dumps(hook))
    assert installed.check().exit_code == 0


def test_check_names_an_expired_issuer(installed: Install) -> None:
    wait_until_check_passes(installed)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    expired = create_issuer(
        installed.anchor,
        common_name=issuer_name(
            control_plane_namespace=installed.namespace, trust_domain="cluster.local"
        ),
        now=past,
        lifetime=dt.timedelta(days=1),
    )
    saved = kubectl(installed.cluster, "-n", installed.namespace, "get", "secret",
                    "gossamer-identity-issuer", "-o", "json")  # fmt: skip
    patch = {
        "data": {
            "crt.pem": base64.b64encode(certificates_to_pem([expired.certificate])).decode(),
            "key.pem": base64.b64encode(private_key_to_pem(expired.private_key)).decode(),
        }
    }
    kubectl(installed.cluster, "-n", installed.namespace, "patch", "secret",
            "gossamer-identity-issuer", "--type=merge", "-p", json.dumps(patch))  # fmt: skip
    try:
        result = installed.check()
        assert result.exit_code == 1
        failures = failed_checks(result)
        assert "issuer credentials are within their validity period" in failures
        assert "issuer credentials are signed by the trust anchor" in failures
        body = json.loads(result.output)
        expired_result = next(
            r for r in body["results"]
            if r["description"] == "issuer credentials are within their validity period"
        )  # fmt: skip
        assert "expired at" in expired_result["message"]
    finally:
        original = json.loads(saved.stdout)["data"]
        kubectl(installed.cluster, "-n", installed.namespace, "patch", "secret",
                "gossamer-identity-issuer", "--type=merge",
                "-p", json.dumps({"data": original}))  # fmt: skip
    assert installed.check().exit_code == 0


EXTERNAL_WORKLOADS_CHECK = "ExternalWorkloads are valid"


def test_check_names_invalid_external_workloads_only(installed: Install) -> None:
    """ExternalWorkloads and EgressNetworks are enforced: check says nothing about valid
    ones, and names an ExternalWorkload the apiserver accepted but the mesh cannot use."""
    wait_until_check_passes(installed)

    def workload(name: str, server_name: str) -> dict[str, Any]:
        return {
            "apiVersion": "workload.linkerd.io/v1beta1",
            "kind": "ExternalWorkload",
            "metadata": {"name": name, "namespace": installed.namespace},
            "spec": {"meshTLS": {"identity": f"spiffe://root.linkerd.cluster.local/{name}",
                                 "serverName": server_name}},
        }  # fmt: skip

    egress = {
        "apiVersion": "policy.linkerd.io/v1alpha1",
        "kind": "EgressNetwork",
        "metadata": {"name": "internet", "namespace": installed.namespace},
        "spec": {"trafficPolicy": "Deny"},
    }
    kubectl(installed.cluster, "apply", "-f", "-",
            stdin=json.dumps(workload("vm-1", "vm-1.cluster.local")))  # fmt: skip
    kubectl(installed.cluster, "apply", "-f", "-", stdin=json.dumps(egress))
    try:
        body = json.loads(installed.check().output)
        (valid,) = [r for r in body["results"] if r["description"] == EXTERNAL_WORKLOADS_CHECK]
        assert valid["ok"], valid
        unhappy = [r["description"] for r in body["results"] if not r["ok"]]
        assert not [d for d in unhappy if "ExternalWorkload" in d or "EgressNetwork" in d]
        # Accepted by the CRD's schema, refused by the mesh (not a DNS-1123 name).
        kubectl(installed.cluster, "apply", "-f", "-",
                stdin=json.dumps(workload("vm-2", "VM_2")))  # fmt: skip
        result = installed.check()
        assert result.exit_code == 0, failed_checks(result)  # a warning, not a failure
        warnings = {r["description"]: r for r in json.loads(result.output)["results"]
                    if not r["ok"]}  # fmt: skip
        assert all(r["warning"] for r in warnings.values()), warnings
        assert EXTERNAL_WORKLOADS_CHECK in warnings, warnings
        message = warnings[EXTERNAL_WORKLOADS_CHECK]["message"]
        assert f"ExternalWorkload {installed.namespace}/vm-2: spec.meshTLS.serverName" in message
    finally:
        for name in ("vm-1", "vm-2"):
            kubectl(installed.cluster, "-n", installed.namespace, "delete", "externalworkload",
                    name, "--ignore-not-found")  # fmt: skip
        kubectl(installed.cluster, "-n", installed.namespace, "delete", "egressnetwork",
                "internet", "--ignore-not-found")  # fmt: skip


def test_upgrade_keeps_the_installed_certificates(installed: Install) -> None:
    """The README's promise: an upgrade never rotates the mesh identity by accident.

    The trust roots, the issuer's certificate and key, the injector's webhook certificate and
    key, and the caBundle the apiserver trusts the webhook with all come back unchanged.
    """
    result = invoke(
        "upgrade", "-L", installed.namespace, "--kubeconfig", str(installed.cluster.kubeconfig),
        "--set", "controllerReplicas=2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    objects = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(result.output)}

    def current(*what: str) -> dict[str, Any]:
        got = kubectl(installed.cluster, "-n", installed.namespace, "get", *what, "-o", "json")
        return dict(json.loads(got.stdout))

    for kind, name in [
        ("ConfigMap", "gossamer-identity-trust-roots"),
        ("Secret", "gossamer-identity-issuer"),
        ("Secret", "gossamer-proxy-injector-k8s-tls"),
    ]:
        rendered = objects[kind, name]["data"]
        assert rendered == current(kind.lower(), name)["data"], f"{kind} {name} changed"
        assert all(rendered.values()), f"{kind} {name} has an empty key"
    webhook = f"{installed.namespace}-proxy-injector-webhook-config"
    installed_hook = current("mutatingwebhookconfiguration", webhook)
    ca_bundles = [w["clientConfig"]["caBundle"] for w in installed_hook["webhooks"]]
    assert ca_bundles
    assert all(ca_bundles)
    upgraded = objects["MutatingWebhookConfiguration", webhook]["webhooks"]
    assert [w["clientConfig"]["caBundle"] for w in upgraded] == ca_bundles
    assert objects["Deployment", "gossamer-destination"]["spec"]["replicas"] == 2
    kubectl(installed.cluster, "apply", "--dry-run=server", "-f", "-", stdin=result.output)


def test_upgrade_without_an_install_says_so(kube_cluster: KubeTestCluster) -> None:
    result = invoke("upgrade", "-L", "g-absent", "--kubeconfig", str(kube_cluster.kubeconfig))
    assert result.exit_code == 1
    assert "no Gossamer control plane in namespace 'g-absent'" in result.output


def test_pre_check_passes_for_an_admin(kube_cluster: KubeTestCluster) -> None:
    result = invoke("check", "--pre", "-L", "g-fresh", "--kubeconfig", str(kube_cluster.kubeconfig))
    assert result.exit_code == 0, result.output
    assert "can create customresourcedefinitions" in result.output


def test_check_on_a_cluster_without_gossamer_names_the_namespace(
    kube_cluster: KubeTestCluster,
) -> None:
    result = invoke("check", "-L", "g-none", "--kubeconfig", str(kube_cluster.kubeconfig))
    assert result.exit_code == 1
    assert "\u00d7 control plane namespace exists" in result.output
    assert "the g-none namespace does not exist" in result.output


# --- CRD samples -----------------------------------------------------------------------------

VALID: dict[str, dict[str, Any]] = {
    "Server": {
        "apiVersion": "policy.linkerd.io/v1beta3",
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "port": 8080,
                 "proxyProtocol": "HTTP/1"},
    },
    "AuthorizationPolicy": {
        "apiVersion": "policy.linkerd.io/v1alpha1",
        "spec": {
            "targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "web"},
            "requiredAuthenticationRefs": [
                {"group": "policy.linkerd.io", "kind": "MeshTLSAuthentication", "name": "ids"}
            ],
        },
    },
    "MeshTLSAuthentication": {
        "apiVersion": "policy.linkerd.io/v1alpha1",
        "spec": {"identities": ["*.demo.serviceaccount.identity.gossamer.cluster.local"]},
    },
    "NetworkAuthentication": {
        "apiVersion": "policy.linkerd.io/v1alpha1",
        "spec": {"networks": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}]},
    },
    "HTTPRoute": {
        "apiVersion": "policy.linkerd.io/v1beta3",
        "spec": {
            "parentRefs": [{"group": "core", "kind": "Service", "name": "web", "port": 80}],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}]}],
        },
    },
    "ServiceProfile": {
        "apiVersion": "linkerd.io/v1alpha2",
        "spec": {
            "routes": [{"name": "GET /api", "condition": {"method": "GET", "pathRegex": "/api"}}],
            "retryBudget": {"retryRatio": 0.2, "minRetriesPerSecond": 10, "ttl": "10s"},
        },
    },
    "ServerAuthorization": {
        "apiVersion": "policy.linkerd.io/v1beta1",
        "spec": {
            "server": {"name": "web"},
            "client": {
                "networks": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}],
                "meshTLS": {"serviceAccounts": [{"name": "client", "namespace": "demo"}]},
            },
        },
    },
    "HTTPLocalRateLimitPolicy": {
        "apiVersion": "policy.linkerd.io/v1alpha1",
        "spec": {
            "targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "web"},
            "total": {"requestsPerSecond": 100},
            "identity": {"requestsPerSecond": 20},
            "overrides": [{"requestsPerSecond": 50, "clientRefs": [
                {"kind": "ServiceAccount", "name": "batch", "namespace": "demo"}]}],
        },
    },
    "EgressNetwork": {
        "apiVersion": "policy.linkerd.io/v1alpha1",
        "spec": {"trafficPolicy": "Deny",
                 "networks": [{"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}]},
    },
    "ExternalWorkload": {
        "apiVersion": "workload.linkerd.io/v1beta1",
        "spec": {
            "meshTLS": {"identity": "spiffe://root.linkerd.cluster.local/vm-1",
                        "serverName": "vm-1.demo.cluster.local"},
            "ports": [{"name": "http", "port": 8080}],
            "workloadIPs": [{"ip": "192.0.2.10"}],
        },
    },
}  # fmt: skip

#: kind → (broken spec, a word the apiserver's message must contain).
INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "Server": ({"podSelector": {}, "port": 8080, "proxyProtocol": "HTTP/9"}, "proxyProtocol"),
    "AuthorizationPolicy": ({"targetRef": {"kind": "Server", "name": "web"}},
                            "requiredAuthenticationRefs"),
    "MeshTLSAuthentication": ({"identities": "not-a-list"}, "identities"),
    "NetworkAuthentication": ({"networks": [{"except": ["10.0.0.0/8"]}]}, "cidr"),
    "HTTPRoute": ({"parentRefs": [{"kind": "Service"}]}, "name"),
    "ServiceProfile": ({"routes": [{"name": "no condition"}]}, "condition"),
    "ServerAuthorization": ({"server": {"name": "web"}, "client": {"networks": []}}, "client"),
    "HTTPLocalRateLimitPolicy": ({"targetRef": {"kind": "Server", "name": "web"},
                                  "total": {"requestsPerSecond": 0}}, "requestsPerSecond"),
    "EgressNetwork": ({"trafficPolicy": "Maybe"}, "trafficPolicy"),
    "ExternalWorkload": ({"meshTLS": {"identity": "spiffe://td/vm-1", "serverName": "vm-1"},
                          "workloadIPs": [{"ip": "not-an-ip"}]}, "workloadIPs"),
}  # fmt: skip


def sample(kind: str, spec: dict[str, Any], api_version: str, namespace: str) -> str:
    name = "web.demo.svc.cluster.local" if kind == "ServiceProfile" else "sample"
    return json.dumps({
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "namespace": namespace}, "spec": spec,
    })  # fmt: skip


def test_every_crd_has_a_sample_and_every_sample_a_crd(crds_applied: list[dict[str, Any]]) -> None:
    kinds = {c["spec"]["names"]["kind"] for c in crds_applied}
    assert kinds <= set(VALID), f"add samples for {sorted(kinds - set(VALID))}"
    assert set(VALID) <= kinds, f"charts/gossamer-crds lacks {sorted(set(VALID) - kinds)}"


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_samples_are_accepted_and_invalid_ones_refused(
    kube_cluster: KubeTestCluster,
    crds_applied: list[dict[str, Any]],
    kube_namespace: str,
    kind: str,
) -> None:
    applied = {c["spec"]["names"]["kind"] for c in crds_applied}
    assert kind in applied, f"charts/gossamer-crds has no {kind} CRD: nothing to accept or refuse"
    api_version = VALID[kind]["apiVersion"]
    good = sample(kind, VALID[kind]["spec"], api_version, kube_namespace)
    kubectl(kube_cluster, "apply", "-f", "-", stdin=good)
    spec, word = INVALID[kind]
    bad = kubectl(kube_cluster, "apply", "--dry-run=server", "-f", "-",
                  stdin=sample(kind, spec, api_version, kube_namespace), check=False)  # fmt: skip
    assert bad.returncode != 0, f"{kind}: the apiserver accepted {spec}"
    assert "is invalid" in bad.stderr or "Invalid value" in bad.stderr, bad.stderr
    assert word in bad.stderr, bad.stderr


#: Further validation paths of the newer CRDs: (kind, apiVersion, broken spec, word in message).
MORE_INVALID: list[tuple[str, str, dict[str, Any], str]] = [
    # A Server selects pods or ExternalWorkloads: exactly one selector.
    ("Server", "policy.linkerd.io/v1beta3",
     {"podSelector": {}, "externalWorkloadSelector": {}, "port": 8080}, "oneOf"),
    ("Server", "policy.linkerd.io/v1beta3", {"port": 8080}, "oneOf"),
    ("ServerAuthorization", "policy.linkerd.io/v1beta1",
     {"server": {}, "client": {"unauthenticated": True}}, "spec.server"),
    ("ServerAuthorization", "policy.linkerd.io/v1beta1",
     {"server": {"name": "web"},
      "client": {"meshTLS": {"unauthenticatedTLS": True, "identities": ["a.b"]}}},
     "unauthenticatedTLS excludes identities"),
    ("HTTPLocalRateLimitPolicy", "policy.linkerd.io/v1alpha1",
     {"targetRef": {"kind": "Namespace", "name": "demo"}}, "spec.targetRef.kind"),
    ("HTTPLocalRateLimitPolicy", "policy.linkerd.io/v1alpha1",
     {"targetRef": {"kind": "Server", "name": "web"}, "total": {"requestsPerSecond": 10},
      "identity": {"requestsPerSecond": 20}}, "identity.requestsPerSecond must not exceed"),
    ("HTTPLocalRateLimitPolicy", "policy.linkerd.io/v1alpha1",
     {"targetRef": {"kind": "Server", "name": "web"}, "total": {"requestsPerSecond": 10},
      "overrides": [{"requestsPerSecond": 50,
                     "clientRefs": [{"kind": "ServiceAccount", "name": "batch"}]}]},
     "overrides[].requestsPerSecond must not exceed"),
    ("HTTPLocalRateLimitPolicy", "policy.linkerd.io/v1alpha1",
     {"targetRef": {"kind": "Server", "name": "web"},
      "overrides": [{"requestsPerSecond": 5, "clientRefs": [{"kind": "Pod", "name": "x"}]}]},
     "clientRefs[0].kind"),
    ("EgressNetwork", "policy.linkerd.io/v1alpha1",
     {"networks": [{"cidr": "10.0.0.0/8"}]}, "spec.trafficPolicy"),
    ("EgressNetwork", "policy.linkerd.io/v1alpha1",
     {"trafficPolicy": "Allow", "networks": [{"except": ["10.0.0.0/8"]}]}, "cidr"),
    ("ExternalWorkload", "workload.linkerd.io/v1beta1",
     {"meshTLS": {"identity": "vm-1", "serverName": "vm-1"}}, "spec.meshTLS.identity"),
    ("ExternalWorkload", "workload.linkerd.io/v1beta1",
     {"meshTLS": {"identity": "spiffe://td/vm-1"}}, "spec.meshTLS.serverName"),
    ("ExternalWorkload", "workload.linkerd.io/v1beta1",
     {"meshTLS": {"identity": "spiffe://td/vm-1", "serverName": "vm-1"},
      "ports": [{"port": 70000}]}, "spec.ports[0].port"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "api_version", "spec", "word"),
    MORE_INVALID,
    ids=[f"{k}-{i}" for i, (k, *_) in enumerate(MORE_INVALID)],
)
def test_further_invalid_samples_are_refused_naming_the_field(
    kube_cluster: KubeTestCluster,
    crds_applied: list[dict[str, Any]],
    kube_namespace: str,
    kind: str,
    api_version: str,
    spec: dict[str, Any],
    word: str,
) -> None:
    bad = kubectl(kube_cluster, "apply", "--dry-run=server", "-f", "-",
                  stdin=sample(kind, spec, api_version, kube_namespace), check=False)  # fmt: skip
    assert bad.returncode != 0, f"{kind}: the apiserver accepted {spec}"
    assert "is invalid" in bad.stderr or "Invalid value" in bad.stderr, bad.stderr
    assert word in bad.stderr, bad.stderr


def test_a_server_may_select_external_workloads(
    kube_cluster: KubeTestCluster, crds_applied: list[dict[str, Any]], kube_namespace: str
) -> None:
    spec = {"externalWorkloadSelector": {"matchLabels": {"app": "billing"}}, "port": "http"}
    good = sample("Server", spec, "policy.linkerd.io/v1beta3", kube_namespace)
    kubectl(kube_cluster, "apply", "--dry-run=server", "-f", "-", stdin=good)


@pytest.mark.parametrize(
    ("kind", "old_version", "resource", "deprecated", "defaulted"),
    [
        ("ServerAuthorization", "policy.linkerd.io/v1alpha1",
         "serverauthorizations.v1beta1.policy.linkerd.io", True, {}),
        ("ExternalWorkload", "workload.linkerd.io/v1alpha1",
         "externalworkloads.v1beta1.workload.linkerd.io", False,
         {"ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}),
    ],
)  # fmt: skip
def test_older_served_versions_are_stored_as_the_current_one(
    kube_cluster: KubeTestCluster,
    crds_applied: list[dict[str, Any]],
    kube_namespace: str,
    kind: str,
    old_version: str,
    resource: str,
    deprecated: bool,
    defaulted: dict[str, Any],
) -> None:
    old = sample(kind, VALID[kind]["spec"], old_version, kube_namespace)
    created = kubectl(kube_cluster, "apply", "-f", "-", stdin=old)
    assert ("is deprecated" in created.stderr) is deprecated, created.stderr
    got = kubectl(kube_cluster, "-n", kube_namespace, "get", resource, "sample", "-o", "json")
    obj = json.loads(got.stdout)
    assert obj["apiVersion"] == VALID[kind]["apiVersion"]
    # The schema's defaults apply on the way in (ExternalWorkload ports default to TCP).
    assert obj["spec"] == VALID[kind]["spec"] | defaulted
