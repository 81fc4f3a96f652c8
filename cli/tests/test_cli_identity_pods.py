"""``gossamer identity`` by pod: the pure parts, and arguments refused before any connection."""

from __future__ import annotations

from typing import Any

import click
import pytest
from click.testing import CliRunner
from gossamer_cli import identity_cmd
from gossamer_cli.main import cli

LOCAL_NAME = "$(_pod_sa).$(_pod_ns).serviceaccount.identity.gossamer.cluster.local"


def pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web-0", "namespace": "emojivoto"},
        "spec": {
            "serviceAccountName": "web",
            "initContainers": [
                {
                    "name": "linkerd-proxy",
                    "env": [{"name": "LINKERD2_PROXY_IDENTITY_LOCAL_NAME", "value": LOCAL_NAME}],
                    "ports": [{"name": "linkerd-admin", "containerPort": 14191}],
                }
            ],
            "containers": [{"name": "web"}],
        },
        "status": status,
    }


def test_the_target_is_the_pod_ip_admin_port_and_injected_identity() -> None:
    target = identity_cmd.pod_target(pod(podIP="10.1.2.3"), None)
    assert target == identity_cmd.PodTarget(
        "web-0", "10.1.2.3", 14191, "web.emojivoto.serviceaccount.identity.gossamer.cluster.local"
    )
    assert identity_cmd.pod_target(pod(podIP="10.1.2.3"), 4143).port == 4143


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["spec"].pop("initContainers"), "has no linkerd-proxy container"),
        (lambda p: p["spec"]["initContainers"][0].pop("env"), "its proxy has no identity"),
        (lambda p: p["status"].pop("podIP"), "pod web-0 has no IP yet"),
    ],
)
def test_pods_that_cannot_answer_say_why(change: Any, message: str) -> None:
    p = pod(podIP="10.1.2.3")
    change(p)
    with pytest.raises(identity_cmd.PodTargetError, match=message):
        identity_cmd.pod_target(p, None)


def test_pod_names_and_addresses_are_told_apart() -> None:
    assert identity_cmd.is_address("10.0.0.1:4143")
    assert identity_cmd.is_address("[fd00::1]:4143")
    assert not identity_cmd.is_address("web-0")
    assert identity_cmd.pod_name("pod/web-0") == "web-0"
    assert identity_cmd.pod_name("po/web-0") == "web-0"
    assert identity_cmd.pod_name("web-0") == "web-0"
    with pytest.raises(click.BadParameter, match="only pods are supported"):
        identity_cmd.pod_name("deploy/web")
    with pytest.raises(click.BadParameter, match="is not a pod name"):
        identity_cmd.pod_name("pod/")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("10.0.0.1:4143", "pod/web-0"), "give either one ADDRESS or pods"),
        (("10.0.0.1:4143", "-l", "app=web"), "give either one ADDRESS or pods"),
        (("10.0.0.1:1", "10.0.0.2:1"), "give one ADDRESS at a time"),
        (("pod/web-0", "--identity", "x"), "--identity is for ADDRESS"),
        (("deploy/web",), "only pods are supported"),
        (("pod/web-0", "--port", "0"), "0 is not in the range 1<=x<=65535"),
        (("10.0.0.1:99999",), "'10.0.0.1:99999' is not host:port"),
    ],
)
def test_bad_arguments_are_refused_before_connecting(args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(cli, ["identity", *args], env={"KUBECONFIG": "/nonexistent"})
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_an_unreadable_kubeconfig_is_a_clear_error() -> None:
    result = CliRunner().invoke(cli, ["identity", "pod/web-0"], env={"KUBECONFIG": "/nonexistent"})
    assert result.exit_code == 1
    assert "cannot load kubeconfig" in result.output
