"""podkit: run Kubernetes multi-container pods on one Linux machine."""

__version__ = "0.1.0"
