"""The discovery documents an aggregated API server serves (pure).

The apiserver marks the ``v1alpha1.tap.linkerd.io`` APIService Available only when
``GET /apis/tap.linkerd.io/v1alpha1`` on the service answers, and builds its discovery (what
``kubectl api-resources`` lists) from these documents. The resources are Linkerd's: each
tappable kind's plural, and its ``tap`` subresource with verb ``watch`` (what tap-admin
grants).
"""

from __future__ import annotations

from typing import Any

from gossamer_cli.viz.tap_service.api import GROUP, TAPPABLE, VERSION

__all__ = ["api_group", "api_resource_list", "discovery_documents"]

GROUP_VERSION = f"{GROUP}/{VERSION}"


def api_group() -> dict[str, Any]:
    version = {"groupVersion": GROUP_VERSION, "version": VERSION}
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [version],
        "preferredVersion": version,
    }


def api_resource_list() -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for plural, kind in [
        ("namespaces", "Namespace"),
        *((p, k.name.capitalize()) for p, k in TAPPABLE.items()),
    ]:
        namespaced = plural != "namespaces"
        resources.append(
            {"name": plural, "singularName": "", "namespaced": namespaced, "kind": kind,
             "verbs": []}
        )  # fmt: skip
        resources.append(
            {"name": f"{plural}/tap", "singularName": "", "namespaced": namespaced,
             "kind": "Tap", "verbs": ["watch"]}
        )  # fmt: skip
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": resources,
    }


def discovery_documents() -> dict[str, dict[str, Any]]:
    """Path -> the JSON document served there."""
    return {
        "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group()]},
        f"/apis/{GROUP}": api_group(),
        f"/apis/{GROUP}/{VERSION}": api_resource_list(),
    }
