"""gossamer_destination."""
