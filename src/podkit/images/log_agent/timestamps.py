"""An event's own timestamp, as RFC 3339 UTC text with microseconds: `2026-11-25T22:15:08.000000Z`.

`TimeParser(time_format, timezone)` reads values in one format:

- None (auto): RFC 3339 / ISO 8601 date-time text, or Common Log Format `25/Nov/2026:22:15:08
  +0000`; a JSON number is epoch seconds, or epoch milliseconds when it is too large to be
  seconds (>= 1e11, i.e. past the year 5000), as pino and log4j's JSON layouts write them.
- "rfc3339", "epoch" (seconds, may be fractional), "epoch_ms", or any strptime format.

Times without an offset are in `timezone`. Unparseable values give None, never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import timezone as fixed_offset
from functools import lru_cache
from zoneinfo import ZoneInfo

# The Common Log Format's own format, parsed by hand: faster than strptime, and %b there
# would follow the process locale while access logs always use English month names.
CLF_FORMAT = "%d/%b/%Y:%H:%M:%S %z"

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?"
)
_CLF = re.compile(r"(\d{2})/([A-Za-z]{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})")
_MONTHS = {
    name: i + 1
    for i, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS_THRESHOLD = 1e11  # as epoch seconds that is the year 5138: surely milliseconds
_CACHE_SIZE = 4096  # distinct texts remembered; access logs repeat one second many times


def format_utc(dt: datetime) -> str:
    """RFC 3339 UTC with microseconds; `dt` must be aware."""
    u = dt.astimezone(UTC)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond:06d}Z"
    )


@lru_cache(maxsize=256)
def _offset(sign: str, hours: str, minutes: str) -> tzinfo:
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    return fixed_offset(-delta if sign == "-" else delta)


def parse_rfc3339(text: str, zone: tzinfo) -> datetime | None:
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, z, sign, oh, om = m.groups()
    if z is not None:
        tz: tzinfo = UTC
    elif sign is not None:
        tz = _offset(sign, oh, om)
    else:
        tz = zone
    micro = int((frac + "00000")[:6]) if frac else 0  # nanoseconds are cut, not rounded
    try:
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz
        )
    except ValueError:  # month 13, second 60 and the like
        return None


def parse_clf(text: str) -> datetime | None:
    m = _CLF.fullmatch(text)
    if m is None:
        return None
    day, mon, year, hour, minute, second, sign, oh, om = m.groups()
    month = _MONTHS.get(mon.lower())
    if month is None:
        return None
    try:
        tz = _offset(sign, oh, om)
        return datetime(int(year), month, int(day), int(hour), int(minute), int(second), 0, tz)
    except ValueError:
        return None


def _epoch(value: object, scale: float) -> datetime | None:
    if isinstance(value, bool):
        return None  # a JSON true is not a time
    if isinstance(value, str):
        try:
            number: float = float(value) if "." in value or "e" in value.lower() else int(value)
        except ValueError:
            return None
    elif isinstance(value, int | float):
        number = value
    else:
        return None
    try:
        if isinstance(number, int):
            # Integer arithmetic: float seconds would round off the last microsecond digits.
            whole, rest = divmod(number, int(scale))
            return _EPOCH + timedelta(seconds=whole, microseconds=rest * 1_000_000 // int(scale))
        return _EPOCH + timedelta(seconds=number / scale)
    except (OverflowError, ValueError):  # also NaN and infinity
        return None


def zone(name: str) -> tzinfo:
    """The time zone of an IANA name; UTC needs no time zone database (an image may have none:
    tzdata is a package). Raises ZoneInfoNotFoundError or ValueError for an unknown name."""
    return UTC if name == "UTC" else ZoneInfo(name)


class TimeParser:
    """Callable: a timestamp value -> RFC 3339 UTC text, or None when it does not parse."""

    def __init__(self, time_format: str | None = None, timezone: str = "UTC") -> None:
        self.time_format = time_format
        self.zone: tzinfo = zone(timezone)
        self._cache: dict[str, str | None] = {}
        self._parse_text = self._text_parser(time_format)

    def _text_parser(self, time_format: str | None) -> Callable[[str], datetime | None]:
        zone = self.zone
        if time_format is None:
            return lambda text: parse_rfc3339(text, zone) or parse_clf(text)
        if time_format == "rfc3339":
            return lambda text: parse_rfc3339(text, zone)
        if time_format == "epoch":
            return lambda text: _epoch(text, 1)
        if time_format == "epoch_ms":
            return lambda text: _epoch(text, 1000)
        if time_format == CLF_FORMAT:
            return parse_clf

        def strptime(text: str) -> datetime | None:
            try:
                dt = datetime.strptime(text, time_format)
            except ValueError:
                return None
            return dt if dt.tzinfo is not None else dt.replace(tzinfo=zone)

        return strptime

    def __call__(self, value: object) -> str | None:
        if isinstance(value, str):
            cache = self._cache
            try:
                return cache[value]
            except KeyError:
                pass
            dt = self._parse_text(value.strip())
            result = _to_text(dt)
            if len(cache) >= _CACHE_SIZE:
                cache.clear()  # cheaper than LRU bookkeeping, and refills within a second
            cache[value] = result
            return result
        if self.time_format is None:
            big = isinstance(value, int | float) and abs(value) >= _MS_THRESHOLD
            return _to_text(_epoch(value, 1000 if big else 1))
        if self.time_format == "epoch":
            return _to_text(_epoch(value, 1))
        if self.time_format == "epoch_ms":
            return _to_text(_epoch(value, 1000))
        return None  # a number where text is expected


def _to_text(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    try:
        return format_utc(dt)
    except (OverflowError, ValueError):  # year 1 in a zone east of UTC, and the like
        return None


def parse_timestamp(
    value: object, time_format: str | None = None, timezone: str = "UTC"
) -> str | None:
    """One-off form of TimeParser (uncached between calls; build a TimeParser for a stream)."""
    return TimeParser(time_format, timezone)(value)
