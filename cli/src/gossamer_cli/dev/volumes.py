"""Pod volumes as files: emptyDir, projected (service-account tokens, ConfigMaps, downward
API), Secrets and ConfigMaps, each a directory under the pod's state directory.

Service-account tokens are minted with TokenRequest, bound to the pod, as a kubelet does,
and refreshed before 80% of their lifetime has passed.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gossamer_kube.client import BoundPod, KubeClient
from gossamer_kube.resources import CONFIGMAPS, SECRETS

DEFAULT_TOKEN_SECONDS = 3600
#: Kubernetes makes emptyDirs world-writable, so containers of any uid can share them.
EMPTY_DIR_MODE = 0o1777


class VolumeError(RuntimeError):
    """A volume the pod needs could not be made (e.g. a missing Secret)."""


@dataclass
class TokenFile:
    path: Path
    audience: str | None
    seconds: int
    refresh_at: float = 0.0


@dataclass
class PodVolumes:
    root: Path
    dirs: dict[str, Path] = field(default_factory=dict)
    tokens: list[TokenFile] = field(default_factory=list)


async def materialize(
    client: KubeClient, pod: Mapping[str, Any], root: Path, now: float
) -> PodVolumes:
    volumes = PodVolumes(root)
    meta = pod["metadata"]
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        target = root / name
        target.mkdir(parents=True, exist_ok=True)
        volumes.dirs[name] = target
        if "emptyDir" in volume:
            os.chmod(target, EMPTY_DIR_MODE)
        elif "projected" in volume:
            for source in volume["projected"].get("sources") or []:
                await _project(client, pod, source, target, volumes)
        elif "secret" in volume:
            data = await _object_data(client, SECRETS, meta["namespace"], volume["secret"])
            _write_keys(target, {k: base64.b64decode(v) for k, v in data.items()})
        elif "configMap" in volume:
            data = await _object_data(client, CONFIGMAPS, meta["namespace"], volume["configMap"])
            _write_keys(target, {k: str(v).encode() for k, v in data.items()})
        elif "downwardAPI" in volume:
            _downward(pod, volume["downwardAPI"].get("items") or [], target)
        os.chmod(target, EMPTY_DIR_MODE if "emptyDir" in volume else 0o755)
    await refresh_tokens(client, pod, volumes, now)
    return volumes


async def refresh_tokens(
    client: KubeClient, pod: Mapping[str, Any], volumes: PodVolumes, now: float
) -> None:
    meta = pod["metadata"]
    for token in volumes.tokens:
        if now < token.refresh_at:
            continue
        value = await client.token_request(
            meta["namespace"],
            pod["spec"].get("serviceAccountName") or "default",
            audiences=[token.audience] if token.audience else [],
            expiration_seconds=token.seconds,
            bound_pod=BoundPod.of(pod),
        )
        _atomic_write(token.path, value.encode(), 0o644)
        token.refresh_at = now + 0.8 * token.seconds


async def _project(
    client: KubeClient,
    pod: Mapping[str, Any],
    source: Mapping[str, Any],
    target: Path,
    volumes: PodVolumes,
) -> None:
    namespace = pod["metadata"]["namespace"]
    if "serviceAccountToken" in source:
        spec = source["serviceAccountToken"]
        volumes.tokens.append(
            TokenFile(
                target / spec["path"],
                spec.get("audience"),
                int(spec.get("expirationSeconds", DEFAULT_TOKEN_SECONDS)),
            )
        )
    elif "configMap" in source:
        data = await _object_data(client, CONFIGMAPS, namespace, source["configMap"])
        _write_keys(target, {k: str(v).encode() for k, v in data.items()})
    elif "secret" in source:
        data = await _object_data(client, SECRETS, namespace, source["secret"])
        _write_keys(target, {k: base64.b64decode(v) for k, v in data.items()})
    elif "downwardAPI" in source:
        _downward(pod, source["downwardAPI"].get("items") or [], target)


async def _object_data(
    client: KubeClient, ref: Any, namespace: str, spec: Mapping[str, Any]
) -> dict[str, str]:
    name = str(spec.get("name") or spec.get("secretName") or "")
    try:
        obj = await client.get(ref, name, namespace=namespace)
    except Exception as exc:
        if spec.get("optional"):
            return {}
        raise VolumeError(f"{ref.plural} {namespace}/{name}: {exc}") from exc
    data: dict[str, str] = dict(obj.get("data") or {})
    items = spec.get("items")
    if items:
        return {i["path"]: data[i["key"]] for i in items if i["key"] in data}
    return data


def _downward(pod: Mapping[str, Any], items: list[Mapping[str, Any]], target: Path) -> None:
    for item in items:
        field_path = (item.get("fieldRef") or {}).get("fieldPath")
        if field_path is None:
            continue
        _atomic_write(target / item["path"], field_value(pod, field_path).encode(), 0o644)


def field_value(pod: Mapping[str, Any], field_path: str) -> str:
    """A downward-API ``fieldPath`` of the pod (also used for env ``valueFrom.fieldRef``)."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": status.get("podIP", ""),
        "status.hostIP": status.get("hostIP", ""),
        # As the kubelet renders them: every address, comma-separated.
        "status.podIPs": ",".join(
            str(i.get("ip")) for i in status.get("podIPs") or [{"ip": status.get("podIP", "")}]
        ),
        "status.hostIPs": ",".join(
            str(i.get("ip")) for i in status.get("hostIPs") or [{"ip": status.get("hostIP", "")}]
        ),
    }
    if field_path in simple:
        return str(simple[field_path])
    if field_path in ("metadata.labels", "metadata.annotations"):
        pairs = meta.get(field_path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(pairs.items()))
    for kind in ("labels", "annotations"):
        prefix = f"metadata.{kind}['"
        if field_path.startswith(prefix) and field_path.endswith("']"):
            return str((meta.get(kind) or {}).get(field_path[len(prefix) : -2], ""))
    raise VolumeError(f"unsupported fieldPath {field_path!r}")


def _write_keys(target: Path, data: Mapping[str, bytes]) -> None:
    for key, value in data.items():
        _atomic_write(target / key, value, 0o644)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    tmp.replace(path)
