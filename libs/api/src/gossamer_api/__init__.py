"""gossamer_api."""
