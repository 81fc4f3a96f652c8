"""gossamer_inject."""
