"""Which files are rotated copies of a followed one (pure): names made from its own by the
rotation patterns, as logrotate makes them (`app.log.1`, `app.log.2.gz`, `app.log-20261205`).

At start-up the file source looks for them next to every file it follows or has a checkpoint
for: a copy made while the agent was stopped is read from its checkpoint, or from its start
when it was written after the agent last ran (file_source.FileSource._recover_rotated).
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from fnmatch import fnmatchcase

NAME = "{name}"  # the followed file's name, in a pattern
DEFAULT_PATTERNS = ("{name}.[0-9]*", "{name}-[0-9]*")  # numbered, dated (logrotate's dateext)
COMPRESSED = (".gz",)


def check_pattern(pattern: str) -> str | None:
    """Why a rotation pattern is not usable, or None."""
    if NAME not in pattern:
        return f"{pattern!r} does not contain {NAME}"
    if "/" in pattern:
        return f"{pattern!r} names a file, not a path: no '/'"
    if pattern.replace(NAME, "") == "":
        return f"{pattern!r} would match the file itself"
    return None


def rotated_of(name: str, bases: Iterable[str], patterns: Iterable[str]) -> str | None:
    """The base name of which `name` is a rotated copy, or None."""
    patterns = tuple(patterns)
    for base in bases:
        if name == base:
            continue
        escaped = glob.escape(base)
        if any(fnmatchcase(name, p.replace(NAME, escaped)) for p in patterns):
            return base
    return None


def is_compressed(name: str) -> bool:
    return name.endswith(COMPRESSED)
