"""FHIR date, dateTime and instant values as implicit ranges of epoch milliseconds (UTC).

A partial date stands for its whole period: `2015` is 2015-01-01T00:00:00.000 to
2015-12-31T23:59:59.999. Values without a timezone are taken as UTC (the spec leaves this to
the server; UTC keeps results independent of where the server runs).
"""

from __future__ import annotations

import calendar
import re

_DATE_RE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def date_range_ms(text: str) -> tuple[int, int] | None:
    """The inclusive [low, high] epoch-ms range a FHIR date/dateTime/instant stands for.

    Returns None when `text` is not a valid (possibly partial) date or date-time. Hours without
    minutes (`2015-01-01T10`) are accepted because search values may be that coarse.
    """
    match = _DATE_RE.fullmatch(text)
    if match is None:
        return None
    g = match.groupdict()
    year = int(g["y"])
    month = int(g["m"]) if g["m"] else None
    day = int(g["d"]) if g["d"] else None
    if month is not None and not 1 <= month <= 12:
        return None
    if day is not None:
        assert month is not None
        if not 1 <= day <= calendar.monthrange(year, month)[1]:
            return None
    offset_ms = 0
    tz = g["tz"]
    if tz and tz != "Z":
        sign = -1 if tz[0] == "-" else 1
        hours, minutes = int(tz[1:3]), int(tz[4:6])
        if hours > 14 or minutes > 59:
            return None
        offset_ms = sign * (hours * 60 + minutes) * 60_000
    if month is None:
        low = calendar.timegm((year, 1, 1, 0, 0, 0)) * 1000
        high = calendar.timegm((year + 1, 1, 1, 0, 0, 0)) * 1000 - 1
        return low, high
    if day is None:
        next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
        low = calendar.timegm((year, month, 1, 0, 0, 0)) * 1000
        high = calendar.timegm((next_year, next_month, 1, 0, 0, 0)) * 1000 - 1
        return low, high
    if g["H"] is None:
        low = calendar.timegm((year, month, day, 0, 0, 0)) * 1000
        return low, low + 86_400_000 - 1
    hour = int(g["H"])
    minute = int(g["M"]) if g["M"] else None
    second = int(g["S"]) if g["S"] else None
    if hour > 23 or (minute is not None and minute > 59) or (second is not None and second > 60):
        return None
    base = calendar.timegm((year, month, day, hour, minute or 0, min(second or 0, 59))) * 1000
    base -= offset_ms
    if minute is None:
        return base, base + 3_600_000 - 1
    if second is None:
        return base, base + 60_000 - 1
    fraction = g["f"]
    if not fraction:
        return base, base + 999
    digits = fraction[:3]
    millis = int(digits.ljust(3, "0"))
    low = base + millis
    # Precision finer than a millisecond collapses onto its millisecond.
    width = 10 ** (3 - len(digits)) if len(digits) < 3 else 1
    return low, low + width - 1
