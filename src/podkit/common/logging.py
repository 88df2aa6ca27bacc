"""Structured JSON logs on stdout: one object a line, like every log shipper expects.

    {"time": "2026-11-25T22:15:08.123Z", "level": "info", "logger": "log-agent",
     "msg": "listening", "listen": "127.0.0.1:5170"}

Use the standard library's logging API and put fields in `extra=`:

    log = setup("log-agent")
    log.info("listening", extra={"listen": "127.0.0.1:5170"})

Fields whose names look like credentials (password, token, secret, authorization, cookie, ...)
are replaced by "[REDACTED]" so a careless `extra=` never leaks a secret.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

import orjson

from podkit.common import stdout
from podkit.common.clock import rfc3339

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|authori[sz]ation|api[_-]?key|cookie|credential|private[_-]?key",
    re.IGNORECASE,
)
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def redact(value: Any) -> Any:
    """A copy of `value` with secret-looking keys masked, at any depth."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_key(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def record_to_dict(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": rfc3339(record.created),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key in _STANDARD_ATTRS or key in out:
            continue
        out[key] = REDACTED if is_secret_key(key) else redact(value)
    if record.exc_info and record.exc_info[1] is not None:
        out["exc"] = "".join(traceback.format_exception(record.exc_info[1])).rstrip()
    return out


class JsonLineHandler(logging.Handler):
    """Writes each record as one JSON line to stdout."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = orjson.dumps(record_to_dict(record), default=str) + b"\n"
        except Exception:  # a log call must never take the image down
            self.handleError(record)
            return
        stdout.write(line)


def setup(name: str, level: str | int = "INFO") -> logging.Logger:
    """Route all logging (ours and libraries') to JSON lines on stdout; return `name`'s logger."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(JsonLineHandler())
    root.setLevel(level if isinstance(level, int) else level.upper())
    return logging.getLogger(name)
