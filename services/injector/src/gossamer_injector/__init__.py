"""gossamer_injector."""
