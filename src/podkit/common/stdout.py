"""The one way podkit images write to stdout.

Logs, access lines and log-agent events all share one byte stream; writing them through the same
buffered writer keeps their order and never splits a line between two writers.
"""

from __future__ import annotations

import sys


def write(data: bytes) -> None:
    """Write whole lines and flush at once: the runtime streams stdout to a terminal live."""
    try:
        out = sys.stdout.buffer
        out.write(data)
        out.flush()
    except (BrokenPipeError, ValueError):
        # The reader went away (or stdout was closed at shutdown): losing our own output is
        # better than crashing the image over it.
        pass
