"""``gossamer prune``: objects labelled as the control plane's that the install no longer has."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner
from gossamer_cli import install, prune
from gossamer_cli.main import cli
from gossamer_kube.resources import CONFIGMAPS, SECRETS


def obj(kind: str, name: str, namespace: str | None = "gossamer", **meta: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **meta}
    if namespace is not None:
        metadata["namespace"] = namespace
    api = {"ClusterRole": "rbac.authorization.k8s.io/v1"}.get(kind, "v1")
    return {"apiVersion": api, "kind": kind, "metadata": metadata}


def rendered() -> list[dict[str, Any]]:
    return install.render(
        namespace="gossamer", ha=False, value_files=(), sets=(), certs=install.PLACEHOLDER_CERTS
    )


def test_objects_the_install_renders_are_kept_and_the_rest_listed_name_only() -> None:
    objects = rendered()
    kept_cm = next(o for o in objects if o["kind"] == "ConfigMap")
    kept_role = next(o for o in objects if o["kind"] == "ClusterRole")
    found = [
        (CONFIGMAPS, kept_cm),
        (prune.CLUSTERROLES, kept_role),
        (CONFIGMAPS, obj("ConfigMap", "gossamer-old-config", labels={"a": "b"})),
        (prune.CLUSTERROLES, obj("ClusterRole", "gossamer-gossamer-tap", None)),
        # An extension's, and an owned object: not the control plane's to prune.
        (CONFIGMAPS, obj("ConfigMap", "viz", labels={"linkerd.io/extension": "viz"})),
        (SECRETS, obj("Secret", "owned", ownerReferences=[{"uid": "1", "kind": "X"}])),
        # A same-named object in another namespace is a different object.
        (CONFIGMAPS, {**kept_cm, "metadata": {**kept_cm["metadata"], "namespace": "other"}}),
    ]
    stale = prune.extraneous(objects, found)
    assert stale == [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "gossamer-old-config", "namespace": "gossamer"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "gossamer-gossamer-tap"},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": kept_cm["metadata"]["name"], "namespace": "other"},
        },
    ]


def test_every_kind_the_install_renders_is_looked_for() -> None:
    kinds = {(prune._group(o["apiVersion"]), o["kind"]) for o in rendered()}
    kinds.discard(("", "Namespace"))  # the namespace goes with uninstall, not prune
    assert kinds <= {(ref.group, ref.kind) for ref in prune.PRUNABLE}


def test_bad_values_and_kubeconfig_are_clear_errors() -> None:
    bad = CliRunner().invoke(cli, ["prune", "--set", "novalue"])
    assert bad.exit_code != 0
    assert "--set 'novalue': expected key.path=value" in bad.output
    unreachable = CliRunner().invoke(cli, ["prune"], env={"KUBECONFIG": "/nonexistent"})
    assert unreachable.exit_code == 1
    assert "cannot load kubeconfig" in unreachable.output
