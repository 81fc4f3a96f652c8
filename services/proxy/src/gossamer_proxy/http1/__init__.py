"""HTTP/1.1 proxying: header rules (sans-io), the client-facing server and pooled upstreams."""
