"""``python -m gossamer_proxy``: run the sidecar proxy from its LINKERD2_PROXY_* environment."""

from __future__ import annotations

import sys

from gossamer_common.logging import configure_logging
from gossamer_common.runtime import freeze_startup_objects, run
from gossamer_common.settings import LogFilter, load_or_exit, parse_log_filter

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
    # Before start(): a SIGTERM that comes while the proxy starts (a kubelet's liveness
    # restart, a pod deleted at once) drains it like any other, instead of killing it.
    proxy.shutdown_control.install_signal_handlers()
    await proxy.start()
    freeze_startup_objects()  # start-up objects live forever: keep them out of GC passes
    await proxy.shutdown_control.wait()
    await proxy.shutdown()


def main() -> None:
    settings = load_or_exit(
        ProxySettings,
        prog="gossamer-proxy",
        description="Gossamer transparent sidecar proxy: inbound 4143, outbound 4140, admin 4191.",
    )
    try:
        levels = parse_log_filter(settings.log_level)
    except ValueError:
        levels = LogFilter(own="warn", libraries="warn")
    # Linkerd's default filter (warn,linkerd=info) keeps the proxy's own events at info: its
    # start-up line says in the pod's log when it began to serve.
    configure_logging(levels.own, component="proxy", library_level=levels.libraries)
    run(_main(settings))


if __name__ == "__main__":
    main()
