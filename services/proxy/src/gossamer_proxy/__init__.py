"""gossamer_proxy."""
