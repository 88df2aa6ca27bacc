"""Reading containers' CRI log files back, as the kubelet serves `kubectl logs`: pure parts.

A record is `<RFC 3339 time> <stdout|stderr> <P|F> <bytes>\\n`; P (partial) records join the
next one into one line. Files are `<pod dir>/logs/<container>/<restart count>.log`.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Options:
    timestamps: bool = False
    tail: int | None = None  # the last N lines
    since: datetime.datetime | None = None  # lines at or after
    limit_bytes: int | None = None


def log_file(pod_dir: Path, container: str, previous: bool) -> Path | None:
    """The current run's file (the highest restart count), or the one before it."""
    runs = sorted(
        (int(p.stem), p) for p in (pod_dir / "logs" / container).glob("*.log") if p.stem.isdigit()
    )
    if previous:
        return runs[-2][1] if len(runs) >= 2 else None
    return runs[-1][1] if runs else None


def lines(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(timestamp, stream, line with its newline) of every whole record in data; partial
    records are joined to the one that ends them, and a last unfinished line is left out."""
    out: list[tuple[bytes, bytes, bytes]] = []
    pending, first_ts = b"", b""
    for record in data.split(b"\n")[:-1]:
        parts = record.split(b" ", 3)
        if len(parts) < 4:
            continue
        ts, stream, tag, body = parts
        if not pending:
            first_ts = ts
        pending += body
        if tag == b"F":
            out.append((first_ts, stream, pending + b"\n"))
            pending = b""
    return out


def render(data: bytes, opts: Options) -> bytes:
    """What `kubectl logs` prints for the records in data."""
    found = lines(data)
    if opts.since is not None:
        found = [f for f in found if _time(f[0]) >= opts.since]
    if opts.tail is not None:
        found = found[-opts.tail :] if opts.tail > 0 else []
    out = b"".join((ts + b" " + line) if opts.timestamps else line for ts, _, line in found)
    return out[: opts.limit_bytes] if opts.limit_bytes is not None else out


def _time(ts: bytes) -> datetime.datetime:
    text = ts.decode()
    if "." in text:  # Python reads at most microseconds
        head, frac = text.rstrip("Z").split(".", 1)
        text = f"{head}.{frac[:6]}+00:00"
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
