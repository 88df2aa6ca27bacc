"""Line parsers: pure functions from a log line to fields (or None when it does not match)."""

from __future__ import annotations

import re
from typing import Any

import orjson


def _quoted(name: str) -> str:
    # nginx escapes quotes inside quoted fields as \"
    return rf'"(?P<{name}>(?:[^"\\]|\\.)*)"'


# Common Log Format, optionally Combined (referer, user agent), optionally a request time in
# seconds at the end (nginx's $request_time, podkit's simple-webapp).
_COMMON_LOG = re.compile(
    r"(?P<remote_addr>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time_local>[^\]]+)\] "
    rf"{_quoted('request')} (?P<status>\d{{3}}) (?P<bytes>\d+|-)"
    rf"(?: {_quoted('referer')} {_quoted('user_agent')})?"
    r"(?: (?P<request_time>\d+(?:\.\d+)?))?\s*"
)


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The object a line holds, or None (not JSON, or JSON but not an object)."""
    if not text.startswith("{"):
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _dash(value: str | None) -> str | None:
    return None if value is None or value == "-" else value


def parse_common_log(line: str) -> dict[str, Any] | None:
    """Fields of a Common/Combined Log Format access line, or None.

    '127.0.0.1 - - [25/Nov/2026:22:15:08 +0000] "GET / HTTP/1.1" 200 512 0.0012' ->
    {remote_addr, user, method, path, protocol, status, bytes, request_time}
    and referer/user_agent for the combined format.
    """
    m = _COMMON_LOG.fullmatch(line)
    if m is None:
        return None
    request, referer, user_agent = m.group("request", "referer", "user_agent")
    parts = request.split(" ")
    if len(parts) == 3:
        method, path, protocol = parts
    elif len(parts) == 2:  # HTTP/0.9 style request line
        method, path, protocol = parts[0], parts[1], None
    else:  # "-" or garbage: keep what the server logged
        method, path, protocol = None, _dash(request), None
    fields: dict[str, Any] = {
        "remote_addr": m.group("remote_addr"),
        "user": _dash(m.group("user")),
        "method": method,
        "path": path,
        "protocol": protocol,
        "status": int(m.group("status")),
        "bytes": 0 if m.group("bytes") == "-" else int(m.group("bytes")),
    }
    if referer is not None:
        fields["referer"] = _dash(referer)
        fields["user_agent"] = _dash(user_agent)
    if m.group("request_time") is not None:
        fields["request_time"] = float(m.group("request_time"))
    return fields
