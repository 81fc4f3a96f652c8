"""Find the pod templates inside workload manifests (and Lists of them).

``gossamer inject`` works on whole manifests; the patch builder works on pods. This module is
the bridge: for each supported kind it knows where the pod template lives and which owner
label the injected pods get.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from gossamer_inject.errors import ManifestError

#: kind → path from the object to its pod template (empty: the object is the pod).
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
    "Pod": (),
}


@dataclass(frozen=True, slots=True)
class PodTemplate:
    """One pod template found in a manifest, with enough context to label and report it."""

    kind: str
    name: str
    namespace: str | None
    #: The template mapping itself (mutable, so the CLI can patch it in place).
    template: MutableMapping[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.kind.lower()}/{self.name}"


def is_list(doc: Any) -> bool:
    return (
        isinstance(doc, MutableMapping)
        and isinstance(doc.get("kind"), str)
        and (doc["kind"] == "List" or doc["kind"].endswith("List"))
        and isinstance(doc.get("items"), list)
    )


def objects(doc: Any) -> Iterator[MutableMapping[str, Any]]:
    """The objects of a YAML document: itself, or the items of a (nested) List."""
    if doc is None:
        return
    if not isinstance(doc, MutableMapping):
        raise ManifestError("a YAML document is not a Kubernetes object")
    if is_list(doc):
        for item in doc["items"]:
            yield from objects(item)
    else:
        yield doc


def pod_template(obj: MutableMapping[str, Any]) -> PodTemplate | None:
    """The pod template of a supported workload, or None for any other kind."""
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in TEMPLATE_PATHS:
        return None
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, MutableMapping):
        raise ManifestError(f"{kind}: metadata is not an object")
    name = str(metadata.get("name") or metadata.get("generateName") or "")
    namespace = metadata.get("namespace")
    node: Any = obj
    for step in TEMPLATE_PATHS[kind]:
        node = node.get(step) if isinstance(node, MutableMapping) else None
        if node is None:
            raise ManifestError(f"{kind}/{name}: no {'.'.join(TEMPLATE_PATHS[kind])}")
    if not isinstance(node, MutableMapping):
        raise ManifestError(f"{kind}/{name}: the pod template is not an object")
    return PodTemplate(kind, name, str(namespace) if namespace else None, node)
