"""gossamer_tls."""
