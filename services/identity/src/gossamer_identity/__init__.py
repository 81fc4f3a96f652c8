"""gossamer_identity."""
