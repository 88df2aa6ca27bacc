"""Numbered log lines, to count exactly what a log pipeline lost or delivered twice."""

from __future__ import annotations

import collections
from pathlib import Path

from log_agent_harness import RecordingReceiver

LINE = "GET /api/info?n={n:07d} HTTP/1.1 200 512 a log line that is about one hundred bytes long"


def write_lines(path: Path, start: int, count: int) -> None:
    with path.open("a") as f:
        f.writelines(LINE.format(n=n) + "\n" for n in range(start, start + count))


def numbers(messages: list[str]) -> collections.Counter[int]:
    return collections.Counter(int(m.split("n=")[1][:7]) for m in messages)


def all_arrived(receiver: RecordingReceiver, total: int) -> bool:
    return set(numbers(receiver.messages())) >= set(range(total))


def lost_and_twice(receiver: RecordingReceiver, total: int) -> tuple[list[int], int]:
    """The numbers below `total` that never arrived, and how many arrived more than once."""
    counts = numbers(receiver.messages())
    return sorted(set(range(total)) - set(counts)), sum(c - 1 for c in counts.values())
