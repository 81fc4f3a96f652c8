"""``gossamer-await``: block until the proxy next to us is ready (the non-native sidecar mode).

Without native sidecars the injector puts the proxy first among the containers with this
command as its postStart hook; kubelet does not start the next container until the hook
returns, so the application never runs before its proxy can route (as ``linkerd-await``).
It polls the proxy's admin ``/ready`` on loopback and exits 0 once it answers 200, or 1 at the
timeout (kubelet then kills and restarts the proxy container, as for a failed hook).
"""

from __future__ import annotations

import argparse
import http.client
import re
import sys
import time
from collections.abc import Callable

__all__ = ["main", "parse_duration", "wait_ready"]

POLL_INTERVAL = 0.2
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``2m``, ``90s``, ``1m30s``, ``500ms`` or plain seconds, as seconds."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if value < 0:
            raise ValueError(f"negative duration {text!r}")
        return value
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r} (use e.g. 2m, 90s, 500ms)")
    return total


def probe_ready(port: int, timeout: float = 1.0) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def wait_ready(
    probe: Callable[[], bool],
    limit: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Poll ``probe`` until it is true (True) or ``limit`` seconds have passed (False)."""
    deadline = clock() + limit
    while True:
        if probe():
            return True
        if clock() >= deadline:
            return False
        sleep(POLL_INTERVAL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gossamer-await", description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", default="2m", help="give up after this long (default 2m)")
    parser.add_argument("--port", type=int, default=4191, help="the proxy's admin port")
    args = parser.parse_args(argv)
    try:
        limit = parse_duration(args.timeout)
    except ValueError as exc:
        parser.error(str(exc))
    if not 0 < args.port < 65536:
        parser.error(f"bad port {args.port}")
    if wait_ready(lambda: probe_ready(args.port), limit):
        return 0
    print(f"gossamer-await: proxy not ready on :{args.port} after {args.timeout}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
