"""The injector's error hierarchy.

Every fault the patch builder can raise derives from :class:`InjectError`, so callers (the
webhook, the CLI) catch one class and turn it into a warning or an exit status exactly once.
"""

from __future__ import annotations


class InjectError(Exception):
    """Base class: the input cannot be injected as asked."""


class ConfigError(InjectError):
    """An override annotation or setting has a value the injector cannot use.

    ``key`` names the annotation (or setting) and ``value`` repeats what was given, so the
    message tells the user exactly what to fix.
    """

    def __init__(self, key: str, value: str, reason: str) -> None:
        super().__init__(f"invalid {key}={value!r}: {reason}")
        self.key = key
        self.value = value
        self.reason = reason


class ManifestError(InjectError):
    """A manifest is not shaped like the Kubernetes object it claims to be."""


class PatchError(InjectError):
    """A JSON-Patch cannot be applied to a document."""
