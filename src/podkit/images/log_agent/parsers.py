"""Line parsers: pure functions from a log line to fields (or None when it does not match).

They run once per event on the hot path, so each is one C-level call (orjson, one regex match)
plus building a small dict.
"""

from __future__ import annotations

import re
from typing import Any

import orjson


def _common_log_regex(quoted: str, token: str, path: str) -> re.Pattern[str]:
    """Common Log Format, optionally Combined (referer, user agent), optionally a request time
    in seconds at the end (nginx's $request_time, podkit's simple-webapp).

    The request line is split by the regex itself (method, path, protocol); anything else lands
    whole in the last alternative. parse_common_log reads the groups by position, in this order.
    """
    return re.compile(
        r"(\S+) \S+ (\S+) \[([^\]]+)\] "  # remote_addr, ident (unused), user, time_local
        rf'"(?:({token}) ({path})(?: ({token}))?|{quoted})" '  # method, path, protocol | request
        r"(\d{3}) (\d+|-)"  # status, bytes
        rf'(?: "{quoted}" "{quoted}")?'  # referer, user_agent
        r"(?: (\d+(?:\.\d+)?))?\s*"  # request_time
    )


# Most lines hold no backslash, so no escaped quote: plain [^"]* runs are the fast path.
_COMMON_LOG = _common_log_regex(r'([^"]*)', r'[^\s"]+', r'[^\s"]+')
# nginx/apache escape a quote or backslash inside quoted fields with a backslash. Unrolled loops
# (a run of plain characters, then one escape), possessive so `re` keeps no backtrack points.
_COMMON_LOG_ESCAPED = _common_log_regex(
    r'([^"\\]*+(?:\\.[^"\\]*+)*+)',
    r'[^\s"\\]++',
    r'(?=[^\s"])[^\s"\\]*+(?:\\.[^\s"\\]*+)*+',
)

# Every key parse_common_log may return: callers use it to find clashes once, not per line.
COMMON_LOG_KEYS = frozenset(
    {
        "remote_addr",
        "user",
        "method",
        "path",
        "protocol",
        "status",
        "bytes",
        "referer",
        "user_agent",
        "request_time",
        "time_local",
    }
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


def parse_common_log(line: str) -> dict[str, Any] | None:
    """Fields of a Common/Combined Log Format access line, or None.

    '127.0.0.1 - - [25/Nov/2026:22:15:08 +0000] "GET / HTTP/1.1" 200 512 0.0012' ->
    {remote_addr, user, method, path, protocol, status, bytes, request_time, time_local};
    referer and user_agent too for the combined format. "-" (not logged) becomes None
    (0 for bytes); a request line that is not "METHOD PATH [PROTOCOL]" is kept whole as path.
    """
    m = (_COMMON_LOG_ESCAPED if "\\" in line else _COMMON_LOG).fullmatch(line)
    if m is None:
        return None
    (
        remote_addr,
        user,
        time_local,
        method,
        path,
        protocol,
        request,
        status,
        nbytes,
        referer,
        user_agent,
        request_time,
    ) = m.groups()
    if method is None and request != "-":
        path = request
    fields: dict[str, Any] = {
        "remote_addr": remote_addr,
        "user": None if user == "-" else user,
        "method": method,
        "path": path,
        "protocol": protocol,
        "status": int(status),
        "bytes": 0 if nbytes == "-" else int(nbytes),
        "time_local": time_local,
    }
    if referer is not None:
        fields["referer"] = None if referer == "-" else referer
        fields["user_agent"] = None if user_agent == "-" else user_agent
    if request_time is not None:
        fields["request_time"] = float(request_time)
    return fields


def compile_regex(pattern: str) -> re.Pattern[str]:
    """The compiled pattern, or ValueError saying why it cannot be a parser."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"does not compile: {exc}") from None
    if not compiled.groupindex:
        # Without named groups a match yields no fields: almost surely a mistake.
        raise ValueError("has no named group: name the fields to extract, e.g. (?P<level>\\w+)")
    return compiled


def parse_regex(pattern: re.Pattern[str], text: str) -> dict[str, str] | None:
    """Named groups of the first match anywhere in text (anchor with ^...$ to match it all).

    Groups that did not take part in the match are left out rather than set to None.
    """
    m = pattern.search(text)
    if m is None:
        return None
    return {k: v for k, v in m.groupdict().items() if v is not None}
