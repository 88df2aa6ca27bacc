"""Sinks: where events leave the agent. Each has an `id`, `async write(batch)` and `close()`."""
