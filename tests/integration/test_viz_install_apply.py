"""`gossamer viz install` against the real kube-apiserver: server-side dry run, then apply."""

from __future__ import annotations

import subprocess

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


def test_viz_install_applies_to_the_apiserver(kube_cluster: KubeTestCluster) -> None:
    rendered = CliRunner().invoke(cli, ["viz", "install", "-L", "gossamer"])
    assert rendered.exit_code == 0, rendered.output
    documents = [d for d in yaml.safe_load_all(rendered.output) if d]
    assert documents[0]["kind"] == "Namespace"
    try:
        # The server validates the namespaced objects once their namespace exists; the tap
        # service's trust-roots Role lives in the control plane's namespace.
        kubectl(kube_cluster, "apply", "-f", "-", stdin=yaml.safe_dump(documents[0]))
        control_plane = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gossamer"}}
        kubectl(kube_cluster, "apply", "-f", "-", stdin=yaml.safe_dump(control_plane))
        kubectl(kube_cluster, "apply", "--dry-run=server", "-f", "-", stdin=rendered.output)
        kubectl(kube_cluster, "apply", "-f", "-", stdin=rendered.output)
        deployment = yaml.safe_load(
            kubectl(
                kube_cluster, "get", "deployment", "prometheus", "-n", "gossamer-viz", "-o", "yaml"
            )
        )
        config = yaml.safe_load(
            kubectl(
                kube_cluster,
                "get",
                "configmap",
                "prometheus-config",
                "-n",
                "gossamer-viz",
                "-o",
                "yaml",
            )
        )
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "prometheus"
        scrape = yaml.safe_load(config["data"]["prometheus.yml"])
        assert [j["job_name"] for j in scrape["scrape_configs"]] == ["prometheus", "linkerd-proxy"]
        # The ServiceAccount may list and watch pods cluster-wide, as discovery needs.
        can = kubectl(
            kube_cluster, "auth", "can-i", "watch", "pods", "--all-namespaces",
            "--as", "system:serviceaccount:gossamer-viz:prometheus",
        )  # fmt: skip
        assert can.strip() == "yes"
        # Linkerd's APIService, pointing at the tap Service and trusting the tap CA.
        api_service = yaml.safe_load(
            kubectl(kube_cluster, "get", "apiservice", "v1alpha1.tap.linkerd.io", "-o", "yaml")
        )
        assert api_service["spec"]["service"]["name"] == "tap"
        assert api_service["spec"]["service"]["namespace"] == "gossamer-viz"
    finally:
        removal = CliRunner().invoke(cli, ["viz", "uninstall"])
        subprocess.run(
            [str(locate_kubectl()), "--kubeconfig", str(kube_cluster.kubeconfig), "delete",
             "--ignore-not-found", "--wait=false", "-f", "-"],
            input=removal.output, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    gone = subprocess.run(
        [str(locate_kubectl()), "--kubeconfig", str(kube_cluster.kubeconfig), "get",
         "clusterrole", "gossamer-gossamer-viz-prometheus", "--ignore-not-found", "-o", "name"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert gone.stdout.strip() == "", "viz uninstall left the ClusterRole behind"
