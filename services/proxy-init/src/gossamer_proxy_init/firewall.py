"""Running the iptables tools: finding the binaries for a mode, dumping and restoring ``nat``.

This is the only module that starts processes. Everything it is asked to write was decided by
the pure builder in ``rules``; it reads with ``<save> -t nat`` and writes with one
``<restore> --noflush`` transaction, so each family changes atomically or not at all.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gossamer_proxy_init.config import IptablesMode
from gossamer_proxy_init.errors import FirewallError

#: Linkerd's fallback order when the binaries of the requested mode are not installed.
FALLBACK_ORDER = (IptablesMode.NFT, IptablesMode.PLAIN, IptablesMode.LEGACY)
DEFAULT_TIMEOUT = 60.0

Which = Callable[[str], str | None]


def binary_name(mode: IptablesMode, family: int) -> str:
    """``iptables-legacy``, ``ip6tables-nft``, ``iptables`` ... for a mode and an IP family."""
    base = "iptables" if family == 4 else "ip6tables"
    return base if mode is IptablesMode.PLAIN else f"{base}-{mode.value}"


@dataclass(frozen=True)
class Binaries:
    """The three tools of one mode and family: the command, ``-save`` and ``-restore``."""

    mode: IptablesMode
    family: int
    iptables: str
    save: str
    restore: str

    @classmethod
    def named(cls, mode: IptablesMode, family: int) -> Binaries:
        name = binary_name(mode, family)
        return cls(mode, family, name, f"{name}-save", f"{name}-restore")


def resolve_binaries(mode: IptablesMode, family: int, *, which: Which = shutil.which) -> Binaries:
    """The binaries to use: the requested mode's, else the first installed in Linkerd's order.

    Raises ``FirewallError`` when no mode has all three tools installed.
    """
    candidates = [mode, *(m for m in FALLBACK_ORDER if m is not mode)]
    for candidate in candidates:
        named = Binaries.named(candidate, family)
        paths = [which(tool) for tool in (named.iptables, named.save, named.restore)]
        if all(paths):
            iptables, save, restore = (p for p in paths if p is not None)
            return Binaries(candidate, family, iptables, save, restore)
    tried = ", ".join(Binaries.named(m, family).iptables for m in candidates)
    raise FirewallError(
        f"no IPv{family} iptables tools found on PATH (tried {tried}, with -save and -restore)"
    )


class Firewall:
    """The ``nat`` table of one IP family, read and written through the iptables tools."""

    def __init__(
        self, binaries: Binaries, *, wait: bool = False, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.binaries = binaries
        self.wait = wait
        self.timeout = timeout

    def _run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        try:
            done = subprocess.run(
                list(argv),
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError:
            raise FirewallError("firewall binary not found", argv=argv) from None
        except subprocess.TimeoutExpired:
            raise FirewallError(f"timed out after {self.timeout}s", argv=argv) from None
        if done.returncode != 0:
            raise FirewallError(
                f"exited with status {done.returncode}", argv=argv, stderr=done.stderr
            )
        return done.stdout

    def save_argv(self) -> list[str]:
        return [self.binaries.save, "-t", "nat"]

    def restore_argv(self) -> list[str]:
        return [self.binaries.restore, "--noflush", *(["-w"] if self.wait else [])]

    def save(self) -> str:
        """``<save> -t nat``: the current nat table as text."""
        return self._run(self.save_argv())

    def restore(self, payload: str) -> None:
        """Apply an ``iptables-restore --noflush`` payload as one transaction."""
        self._run(self.restore_argv(), stdin=payload)


CLOSE_WAIT_SYSCTL = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait"


def set_close_wait_timeout(seconds: int, path: str = CLOSE_WAIT_SYSCTL) -> None:
    """``sysctl -w net.netfilter.nf_conntrack_tcp_timeout_close_wait=N`` for this namespace."""
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(f"{seconds}\n")
    except OSError as exc:
        raise FirewallError(f"cannot set {path} to {seconds}: {exc.strerror or exc}") from None
