"""``python -m gossamer_proxy``: run the sidecar proxy from its LINKERD2_PROXY_* environment."""

from __future__ import annotations

import sys

from gossamer_common.logging import configure_logging
from gossamer_common.runtime import freeze_startup_objects, run
from gossamer_common.settings import load_or_exit, parse_log_level

from .app import Proxy
from .config import ProxySettings
from .local_identity import IdentityConfigError
from .mesh.authz import PolicyError


async def _main(settings: ProxySettings) -> None:
    try:
        proxy = Proxy(settings)
    except (IdentityConfigError, PolicyError, ValueError) as exc:
        print(f"gossamer-proxy: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    await proxy.start()
    freeze_startup_objects()  # start-up objects live forever: keep them out of GC passes
    proxy.shutdown_control.install_signal_handlers()
    await proxy.shutdown_control.wait()
    await proxy.shutdown()


def main() -> None:
    settings = load_or_exit(
        ProxySettings,
        prog="gossamer-proxy",
        description="Gossamer transparent sidecar proxy: inbound 4143, outbound 4140, admin 4191.",
    )
    try:
        level = parse_log_level(settings.log_level)
    except ValueError:
        level = "warn"
    configure_logging(level, component="proxy")
    run(_main(settings))


if __name__ == "__main__":
    main()
