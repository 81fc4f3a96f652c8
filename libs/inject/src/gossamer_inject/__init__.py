"""gossamer_inject: the pure proxy-injection patch builder shared by the webhook and the CLI.

No I/O lives here: manifests and pods go in, JSON-Patch operations (or in-place edits for
``uninject``) come out.
"""

from gossamer_inject.config import MeshValues, ProxyConfig, resolve
from gossamer_inject.decision import Decision, Origin
from gossamer_inject.errors import ConfigError, InjectError, ManifestError, PatchError
from gossamer_inject.patch import Owner, PodPatch, build_pod_patch
from gossamer_inject.webhook_config import WebhookTarget, render_webhook_config

__all__ = [
    "ConfigError",
    "Decision",
    "InjectError",
    "ManifestError",
    "MeshValues",
    "Origin",
    "Owner",
    "PatchError",
    "PodPatch",
    "ProxyConfig",
    "WebhookTarget",
    "build_pod_patch",
    "render_webhook_config",
    "resolve",
]
