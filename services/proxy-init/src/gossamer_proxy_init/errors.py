"""The two ways proxy-init can fail.

``ConfigError`` means the flags were wrong: it is raised before any firewall tool runs, so a
refused invocation never changes the namespace. ``FirewallError`` means a firewall tool
failed; it carries the command and the tool's own stderr so the operator sees the real cause.
"""

from __future__ import annotations

from collections.abc import Sequence


class ProxyInitError(Exception):
    """Base class for every error proxy-init reports to the operator."""


class ConfigError(ProxyInitError, ValueError):
    """A flag is missing, malformed or out of range."""


class FirewallError(ProxyInitError, RuntimeError):
    """A firewall binary is missing or exited with an error."""

    def __init__(self, message: str, *, argv: Sequence[str] = (), stderr: str = "") -> None:
        self.argv = tuple(argv)
        self.stderr = stderr
        detail = f"{message}"
        if self.argv:
            detail += f" (command: {' '.join(self.argv)})"
        if stderr.strip():
            detail += f": {stderr.strip()}"
        super().__init__(detail)
