"""The ambassador image: a sidecar proxy (routing, load balancing, health checks, retries, TLS)."""
