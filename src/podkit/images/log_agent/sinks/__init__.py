"""Sinks: where events leave the agent. Each follows the protocol in `base.py`."""
