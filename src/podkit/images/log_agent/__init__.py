"""log-agent: the pod's log shipper sidecar (sources -> transforms -> sinks). See README.md."""
