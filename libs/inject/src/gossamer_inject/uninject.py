"""Remove what :mod:`gossamer_inject.patch` added, in place (``gossamer uninject``).

It works on any ``dict``/``list`` subclass, so ruamel round-trip containers keep their
comments and key order; it only deletes, never rebuilds, what it does not own.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from gossamer_inject import annotations as a


def uninject_pod(pod: MutableMapping[str, Any]) -> bool:
    """Strip the proxy, proxy-init, their volumes, annotations and labels. True if changed."""
    changed = False
    spec = pod.get("spec")
    if isinstance(spec, MutableMapping):
        for key, names in (
            ("initContainers", {a.INIT_CONTAINER, a.PROXY_CONTAINER}),
            ("containers", {a.PROXY_CONTAINER}),
            ("volumes", a.INJECTED_VOLUMES),
        ):
            changed |= _drop_named(spec, key, names)
    metadata = pod.get("metadata")
    if isinstance(metadata, MutableMapping):
        changed |= _drop_keys(metadata, "annotations", _is_written_annotation)
        changed |= _drop_keys(metadata, "labels", _is_written_label)
    return changed


def remove_inject_annotation(obj: MutableMapping[str, Any]) -> bool:
    """Drop ``linkerd.io/inject: enabled|ingress`` (a ``disabled`` opt-out is kept)."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, MutableMapping):
        return False
    return _drop_keys(
        metadata,
        "annotations",
        lambda k, v: k == a.INJECT and v in (a.INJECT_ENABLED, a.INJECT_INGRESS),
    )


def _is_written_annotation(key: str, _value: Any) -> bool:
    return key in a.WRITTEN_ANNOTATIONS


def _is_written_label(key: str, _value: Any) -> bool:
    if key in (a.CONTROL_PLANE_NS_LABEL, a.WORKLOAD_NS_LABEL):
        return True
    return any(key == a.PROXY_OWNER_LABEL_PREFIX + kind for kind in a.OWNER_LABEL_KINDS)


def _drop_named(spec: MutableMapping[str, Any], key: str, names: frozenset[str] | set[str]) -> bool:
    items = spec.get(key)
    if not isinstance(items, list):
        return False
    doomed = [
        i
        for i, item in enumerate(items)
        if isinstance(item, MutableMapping) and item.get("name") in names
    ]
    for i in reversed(doomed):
        del items[i]
    if doomed and not items and key != "containers":
        del spec[key]
    return bool(doomed)


def _drop_keys(metadata: MutableMapping[str, Any], key: str, doomed: Any) -> bool:
    mapping = metadata.get(key)
    if not isinstance(mapping, MutableMapping):
        return False
    keys = [k for k, v in mapping.items() if doomed(k, v)]
    for k in keys:
        del mapping[k]
    if keys and not mapping:
        del metadata[key]
    return bool(keys)
