"""How podkit starts its helper interpreters (container launchers, exec, id-mapped work)."""

from __future__ import annotations

import os
import sys

_PODKIT_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


def helper_argv(module: str, site: bool = False) -> list[str]:
    """`python -S -E -c ...` running `module`'s main(): most helpers need only the standard
    library and podkit, so site (and its .pth hooks) is skipped, and PYTHON* variables of
    whoever started podkit cannot change what they import. With `site`, the helper imports
    from exactly the path podkit does (its third-party packages too)."""
    path = sys.path if site else [_PODKIT_PARENT]
    return [
        sys.executable,
        "-S",
        "-E",
        "-c",
        f"import sys; sys.path[:0] = {path!r}; from {module} import main; sys.exit(main())",
    ]
