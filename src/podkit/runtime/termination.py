"""A container's termination message, as the kubelet reads it (kuberuntime_container.go).

The file at `terminationMessagePath` (default /dev/termination-log, a host file bound there, new
at each start) gives `state.terminated.message`, its first 4096 bytes. With
`terminationMessagePolicy: FallbackToLogsOnError`, a container that failed (exit code not 0)
and wrote no message gets the tail of its log instead: the last 80 lines, and of them the
last 2048 bytes.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_PATH = "/dev/termination-log"
MAX_FILE_BYTES = 4096
FALLBACK_LINES = 80
FALLBACK_BYTES = 2048


def message_path(raw: dict[str, object]) -> str:
    return str(raw.get("terminationMessagePath") or DEFAULT_PATH)


def read_message(file: Path, log: Path, policy: str, exit_code: int) -> str:
    """The message for a container that exited with `exit_code` ("" when there is none)."""
    try:
        with open(file, "rb") as f:
            text = f.read(MAX_FILE_BYTES).decode(errors="replace")
    except OSError:
        text = ""
    if text or policy != "FallbackToLogsOnError" or exit_code == 0:
        return text
    try:
        records = log.read_bytes()
    except OSError:
        return ""
    return log_tail(records)


def log_tail(cri_log: bytes) -> str:
    """The last FALLBACK_LINES lines of a CRI log file's output, cut to its last FALLBACK_BYTES."""
    lines: list[bytes] = []
    partial = b""
    for record in cri_log.splitlines():
        parts = record.split(b" ", 3)
        if len(parts) < 3:
            continue
        body = parts[3] if len(parts) == 4 else b""
        if parts[2] == b"P":
            partial += body
            continue
        lines.append(partial + body + b"\n")
        partial = b""
    if partial:
        lines.append(partial)
    tail = b"".join(lines[-FALLBACK_LINES:])
    return tail[-FALLBACK_BYTES:].decode(errors="replace")
