"""The command line that runs one container's process inside its pod (pure).

``ip netns exec`` puts the process in the pod's network namespace (and bind-mounts the pod's
/etc/netns/<ns>/hosts), ``unshare --mount`` gives it a private mount namespace in which the
pod's volumes are bind-mounted at their ``mountPath``, and ``setpriv`` drops to the
container's uid/gid with exactly the capabilities its securityContext adds.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

#: Where an app container runs when its securityContext names no user: a uid of its own,
#: distinct from the proxy's 2102, so proxy-init's owner match tells them apart.
DEFAULT_APP_UID = 2200


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ProcessIdentity:
    uid: int
    gid: int
    capabilities: tuple[str, ...] = ()  # e.g. ("NET_ADMIN", "NET_RAW")


def identity_for(container: dict[str, object], pod_security: dict[str, object]) -> ProcessIdentity:
    """The uid/gid/capabilities Kubernetes would give this container."""
    sc = container.get("securityContext") or {}
    assert isinstance(sc, dict)
    uid = sc.get("runAsUser", pod_security.get("runAsUser", DEFAULT_APP_UID))
    gid = sc.get("runAsGroup", pod_security.get("runAsGroup", uid))
    caps = (sc.get("capabilities") or {}).get("add") or []
    return ProcessIdentity(int(str(uid)), int(str(gid)), tuple(str(c).upper() for c in caps))


def launch_argv(
    *,
    netns: str,
    identity: ProcessIdentity,
    argv: Sequence[str],
    mounts: Sequence[Mount] = (),
    workdir: str | None = None,
) -> list[str]:
    lines = ["set -e"]
    for m in mounts:
        target = shlex.quote(m.target)
        lines.append(f"mkdir -p {target}")
        lines.append(f"mount --bind {shlex.quote(m.source)} {target}")
        if m.read_only:
            lines.append(f"mount -o remount,bind,ro {target}")
    if workdir:
        lines.append(f"cd {shlex.quote(workdir)}")
    lines.append(" ".join(["exec", *_setpriv(identity), '"$@"']))
    script = "\n".join(lines)
    return [
        "ip", "netns", "exec", netns,
        "unshare", "--mount", "--propagation", "private", "--",
        "/bin/sh", "-c", script, "gossamer-container", *argv,
    ]  # fmt: skip


def _setpriv(identity: ProcessIdentity) -> list[str]:
    if identity.uid == 0:
        return []
    argv = [
        "setpriv",
        f"--reuid={identity.uid}",
        f"--regid={identity.gid}",
        "--clear-groups",
    ]
    if identity.capabilities:
        caps = ",".join(f"+{c.lower()}" for c in identity.capabilities)
        argv += [f"--inh-caps={caps}", f"--ambient-caps={caps}"]
    return [*argv, "--"]
