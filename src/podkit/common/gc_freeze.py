"""Keep the garbage collector off the objects a long-running image built at startup.

Config models, compiled routes and every imported module's objects (tens of thousands of them)
live as long as the process. Left in the collected generations, each full collection walks all of
them: a stall of tens of milliseconds (27 ms measured in the ambassador) for every request waiting
at that moment. Frozen, a collection walks only what was made since.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect once, then move everything left to the permanent generation."""
    gc.collect()
    gc.freeze()
