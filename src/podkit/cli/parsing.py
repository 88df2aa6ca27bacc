"""Helpers for podkit's argparse commands (cli/main.py, cli/images.py)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def at_least(kind: type[int] | type[float], low: float) -> Callable[[str], Any]:
    def check(text: str) -> int | float:
        value = kind(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is less than {low}")
        return value

    check.__name__ = kind.__name__  # argparse names the type in its message
    return check


def command(
    commands: Any, name: str, func: Callable[..., int], summary: str
) -> argparse.ArgumentParser:
    """A subcommand that calls func with its options as keyword arguments; its description is
    func's docstring."""
    cmd: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=func.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.set_defaults(func=func)
    return cmd


def env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def add_state_dir(cmd: argparse.ArgumentParser, what: str = "") -> None:
    """--state-dir, which every command takes: `what` says what the command keeps there."""
    cmd.add_argument(
        "--state-dir",
        type=Path,
        help=f"podkit's state directory{what} "
        "(default $PODKIT_STATE_DIR, else /var/lib/podkit as root).",
    )
