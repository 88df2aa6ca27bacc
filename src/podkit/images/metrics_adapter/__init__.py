"""metrics-adapter: the app's own status (JSON or key=value text) as Prometheus / OpenMetrics.
See README.md."""
