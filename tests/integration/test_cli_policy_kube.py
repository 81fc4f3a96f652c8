"""``gossamer authz`` and ``gossamer prune`` against the real kube-apiserver."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator

import pytest
import yaml
from click.testing import CliRunner
from gossamer_cli.main import cli
from gossamer_kube.testing import KubeTestCluster
from gossamer_kube.testing.binaries import locate_kubectl

pytestmark = pytest.mark.kube


def kubectl(cluster: KubeTestCluster, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(locate_kubectl()), "--kubeconfig", str(cluster.kubeconfig), *args],
        input=stdin, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def gossamer(cluster: KubeTestCluster, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env={"KUBECONFIG": str(cluster.kubeconfig)})
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def crds(kube_cluster: KubeTestCluster) -> KubeTestCluster:
    code, rendered = gossamer(kube_cluster, "install", "--crds")
    assert code == 0, rendered
    kubectl(kube_cluster, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=rendered)
    kubectl(kube_cluster, "wait", "--for=condition=Established", "--timeout=60s",
            "crd/servers.policy.linkerd.io", "crd/authorizationpolicies.policy.linkerd.io",
            "crd/serverauthorizations.policy.linkerd.io")  # fmt: skip
    return kube_cluster


POLICY = """
apiVersion: v1
kind: Pod
metadata: {name: web-0, labels: {app: web}}
spec:
  containers:
    - name: web
      image: gossamer/demo-app:dev
      ports: [{name: http, containerPort: 8080}, {name: metrics, containerPort: 9102}]
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: web-http}
spec: {podSelector: {matchLabels: {app: web}}, port: http, proxyProtocol: HTTP/1}
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: db}
spec: {podSelector: {matchLabels: {app: db}}, port: 5432}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: web-clients}
spec: {identities: ["traffic.demo.serviceaccount.identity.gossamer.cluster.local"]}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-from-traffic}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: web-http}
  requiredAuthenticationRefs:
    - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: web-clients}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: db-only}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: db}
  requiredAuthenticationRefs:
    - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: web-clients}
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: legacy-anyone}
spec:
  server: {name: web-http}
  client: {unauthenticated: true}
"""


def test_authz_lists_what_applies_to_the_pod(crds: KubeTestCluster, kube_namespace: str) -> None:
    kubectl(crds, "apply", "-n", kube_namespace, "-f", "-", stdin=POLICY)
    code, out = gossamer(crds, "authz", "-n", kube_namespace, "pod/web-0")
    assert code == 0, out
    rows = [line.split() for line in out.splitlines()]
    assert rows == [
        ["ROUTE", "SERVER", "AUTHORIZATION_POLICY", "SERVER_AUTHORIZATION"],
        ["*", "web-http", "legacy-anyone"],
        ["*", "web-http", "web-from-traffic"],
        # 9102 has no Server: the cluster's default policy.
        ["default", "default:all-unauthenticated", "default:all-unauthenticated"],
    ]
    code, wide = gossamer(crds, "authz", "-n", kube_namespace, "pod/web-0", "-o", "wide")
    assert code == 0, wide
    assert "MeshTLSAuthentication/web-clients" in wide
    code, missing = gossamer(crds, "authz", "-n", kube_namespace, "pod/nope")
    assert code == 1
    assert f"pod/nope not found in namespace {kube_namespace}" in missing
    code, no_ns = gossamer(crds, "authz", "-n", "no-such-ns", "pod/web-0")
    assert code == 1
    assert 'namespace "no-such-ns" not found' in no_ns


@pytest.fixture
def control_plane_namespace(kube_cluster: KubeTestCluster) -> Iterator[str]:
    name = f"gsm-prune-{secrets.token_hex(3)}"
    kubectl(kube_cluster, "create", "namespace", name)
    try:
        yield name
    finally:
        kubectl(kube_cluster, "delete", "namespace", name, "--wait=false")
        kubectl(kube_cluster, "delete", "clusterrole", "-l",
                f"linkerd.io/control-plane-ns={name}", "--ignore-not-found")  # fmt: skip


def test_prune_prints_what_the_install_no_longer_renders(
    kube_cluster: KubeTestCluster, control_plane_namespace: str
) -> None:
    ns = control_plane_namespace
    code, rendered = gossamer(kube_cluster, "install", "-L", ns)
    assert code == 0, rendered
    objects = [o for o in yaml.safe_load_all(rendered) if o]
    current = next(o for o in objects if o["kind"] == "ConfigMap")
    label = {"linkerd.io/control-plane-ns": ns}
    extra = [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": current["metadata"]["name"], "namespace": ns, "labels": label}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "gossamer-retired", "namespace": ns, "labels": label}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "someone-elses", "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": f"{ns}-retired-role", "labels": label}, "rules": []},
    ]  # fmt: skip
    kubectl(kube_cluster, "apply", "-f", "-", stdin=yaml.safe_dump_all(extra))
    code, out = gossamer(kube_cluster, "prune", "-L", ns)
    assert code == 0, out
    stale = [o for o in yaml.safe_load_all(out) if o]
    assert stale == [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": f"{ns}-retired-role"}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "gossamer-retired", "namespace": ns}},
    ]  # fmt: skip
    kubectl(kube_cluster, "delete", "-f", "-", stdin=out)
    code, again = gossamer(kube_cluster, "prune", "-L", ns)
    assert code == 0, again
    assert [o for o in yaml.safe_load_all(again) if o] == []
    kubectl(kube_cluster, "get", "configmap", current["metadata"]["name"], "-n", ns)
