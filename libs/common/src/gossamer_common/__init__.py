"""gossamer_common."""
