"""``python -m gossamer_proxy_init``: parse flags, set up logging, run, map errors to exit codes.

Exit status: 0 done, 1 a firewall or namespace operation failed, 2 invalid flags (nothing was
changed).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gossamer_common.netns import NetnsError

from gossamer_proxy_init.app import run
from gossamer_proxy_init.config import parse_args
from gossamer_proxy_init.errors import ConfigError, FirewallError
from gossamer_proxy_init.logsetup import configure_logging

EXIT_FAILED = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        config = parse_args(args)
    except ConfigError as exc:
        print(f"gossamer-proxy-init: invalid arguments: {exc}", file=sys.stderr)
        print("gossamer-proxy-init: nothing was changed; see --help", file=sys.stderr)
        return EXIT_USAGE
    log = configure_logging(config.log_format, config.log_level)
    try:
        run(config, log)
    except (FirewallError, NetnsError) as exc:
        log.error("proxy-init failed", error=str(exc))
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
