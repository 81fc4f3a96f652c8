"""gossamer_proxy_init."""
