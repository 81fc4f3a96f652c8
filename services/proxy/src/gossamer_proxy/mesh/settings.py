"""The mesh part of the proxy's settings lives in :class:`gossamer_proxy.config.ProxySettings`.

There is one settings class for the whole proxy (data path and mesh); these names remain so
that mesh modules can say which settings they read without importing the data path.
"""

from __future__ import annotations

from gossamer_proxy.config import ProxySettings as MeshSettings
from gossamer_proxy.config import load_settings as load_mesh_settings

__all__ = ["MeshSettings", "load_mesh_settings"]
