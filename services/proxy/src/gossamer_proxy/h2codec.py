"""The proxy's HTTP/2 codec: ``jh2``, the maintained fork of ``h2`` with compiled HPACK.

``jh2`` keeps h2's API (``H2Connection``, the events, settings and errors). Measured with
``bench/footprint.py`` (gRPC unary over two mTLS hops, 20,000 requests at c=64, CPU time of
both proxies divided by the count, runs interleaved): ~800 µs per request with ``h2``,
~650 µs with ``jh2``.

The data path reaches the codec through :data:`h2` here (``from ..h2codec import h2``, then
``h2.events.RequestReceived`` as before); type checking reads h2's annotations, since jh2
ships none. jh2 is imported on first use, so a sidecar that never sees HTTP/2 does not map
it (2.6 MB). grpclib, the control-plane client, keeps ``h2``: it does not work over jh2
(the proxy-to-control-plane test times out with it), so the two are not merged.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

__all__ = ["h2"]


class _LazyCodec:
    """``h2.<submodule>`` served from jh2, imported at the first attribute read."""

    def __getattr__(self, name: str) -> ModuleType:
        if name.startswith("__"):
            raise AttributeError(name)
        module = importlib.import_module(f"jh2.{name}")
        setattr(self, name, module)  # later reads are plain attribute reads
        return module


if TYPE_CHECKING:
    import h2
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    import h2.settings
else:
    h2 = _LazyCodec()
