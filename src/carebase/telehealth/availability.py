"""A clinician's weekly availability pattern and the slots it generates (pure: no storage).

The pattern is what the publish endpoint takes::

    {"practitioner": "Practitioner/p1", "timezone": "Europe/Berlin",
     "from": "2026-12-01", "to": "2026-12-31", "slotMinutes": 20,
     "visitTypes": ["virtual", "in-person"],
     "weekly": {"mon": [["09:00", "12:00"], ["14:00", "17:00"]], "thu": [["08:30", "11:30"]]}}

Times are wall-clock times in `timezone` (so a 09:00 slot stays at 09:00 across a daylight
saving change); slots are written as UTC instants. Every error names the field at fault.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from carebase.errors import BadRequest
from carebase.telehealth.codes import VISIT_TYPES

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: The longest period one publication may cover, and the most slots it may make.
MAX_DAYS = 92
MAX_SLOTS = 5000
_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_REFERENCE = re.compile(r"Practitioner/[A-Za-z0-9\-.]{1,64}")


@dataclass(frozen=True, slots=True)
class SlotTime:
    """One generated slot: its UTC start and end."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class WeeklyPattern:
    """A validated availability pattern."""

    practitioner: str
    zone: ZoneInfo
    first: date
    last: date
    slot_minutes: int
    visit_types: tuple[str, ...]
    weekly: dict[int, tuple[tuple[time, time], ...]]  # weekday (0 = Monday) -> ranges

    def slots(self) -> list[SlotTime]:
        """Every slot of the pattern, in time order."""
        step = timedelta(minutes=self.slot_minutes)
        out: list[SlotTime] = []
        day = self.first
        while day <= self.last:
            for begin, finish in self.weekly.get(day.weekday(), ()):
                at = datetime.combine(day, begin)
                end_of_range = datetime.combine(day, finish)
                while at + step <= end_of_range:
                    start = at.replace(tzinfo=self.zone).astimezone(UTC)
                    end = (at + step).replace(tzinfo=self.zone).astimezone(UTC)
                    out.append(SlotTime(start, end))
                    at += step
            day += timedelta(days=1)
        if len(out) > MAX_SLOTS:
            raise BadRequest(
                f"The pattern makes {len(out)} slots; publish at most {MAX_SLOTS} at a time",
                location="weekly",
            )
        return out


def parse_pattern(body: object) -> WeeklyPattern:
    """The pattern in a request body; BadRequest naming the field for anything wrong."""
    if not isinstance(body, dict):
        raise BadRequest("The availability pattern must be a JSON object", location="$")
    known = {"practitioner", "timezone", "from", "to", "slotMinutes", "visitTypes", "weekly"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadRequest(f"Unknown field {unknown[0]!r}", location=unknown[0])
    practitioner = body.get("practitioner")
    if not isinstance(practitioner, str) or not _REFERENCE.fullmatch(practitioner):
        raise BadRequest(
            "practitioner must be a reference like 'Practitioner/123'", location="practitioner"
        )
    zone_name = body.get("timezone", "UTC")
    try:
        zone = ZoneInfo(zone_name) if isinstance(zone_name, str) else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    if zone is None:
        raise BadRequest(f"timezone {zone_name!r} is not an IANA time zone", location="timezone")
    first, last = _date(body, "from"), _date(body, "to")
    if last < first:
        raise BadRequest("'to' is before 'from'", location="to")
    if (last - first).days + 1 > MAX_DAYS:
        raise BadRequest(f"A pattern covers at most {MAX_DAYS} days", location="to")
    minutes = body.get("slotMinutes", 20)
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 5 <= minutes <= 240:
        raise BadRequest("slotMinutes must be a whole number from 5 to 240", location="slotMinutes")
    types = body.get("visitTypes", ["virtual"])
    if (
        not isinstance(types, list)
        or not types
        or any(t not in VISIT_TYPES for t in types)
        or len(set(types)) != len(types)
    ):
        raise BadRequest(
            f"visitTypes must list one or both of {', '.join(VISIT_TYPES)}", location="visitTypes"
        )
    return WeeklyPattern(
        practitioner, zone, first, last, minutes, tuple(types), _weekly(body.get("weekly"))
    )


def _date(body: dict[str, Any], key: str) -> date:
    value = body.get(key)
    try:
        if isinstance(value, str) and len(value) == 10:
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise BadRequest(f"'{key}' must be a date YYYY-MM-DD", location=key)


def _weekly(value: object) -> dict[int, tuple[tuple[time, time], ...]]:
    if not isinstance(value, dict) or not value:
        raise BadRequest(
            "weekly must map days (mon..sun) to lists of [start, end] times", location="weekly"
        )
    weekly: dict[int, tuple[tuple[time, time], ...]] = {}
    for day, ranges in value.items():
        where = f"weekly.{day}"
        if day not in DAYS:
            raise BadRequest(f"{day!r} is not a day; use {', '.join(DAYS)}", location=where)
        if not isinstance(ranges, list):
            raise BadRequest("a day holds a list of [start, end] ranges", location=where)
        parsed: list[tuple[time, time]] = []
        for i, item in enumerate(ranges):
            at = f"{where}[{i}]"
            if not (
                isinstance(item, list) and len(item) == 2 and all(isinstance(t, str) for t in item)
            ):
                raise BadRequest('a range is ["HH:MM", "HH:MM"]', location=at)
            begin, finish = (_time(t, at) for t in item)
            if finish <= begin:
                raise BadRequest("a range must end after it starts", location=at)
            parsed.append((begin, finish))
        parsed.sort()
        for (_, end_a), (start_b, _) in itertools.pairwise(parsed):
            if start_b < end_a:
                raise BadRequest("the ranges of a day overlap", location=where)
        weekly[DAYS.index(day)] = tuple(parsed)
    return weekly


def _time(text: str, where: str) -> time:
    match = _TIME.fullmatch(text)
    if match is None:
        raise BadRequest(f"{text!r} is not a time HH:MM", location=where)
    return time(int(match[1]), int(match[2]))


def instant(at: datetime) -> str:
    """A FHIR instant in UTC with seconds ('2026-12-01T08:00:00Z')."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_instant(text: str, where: str) -> datetime:
    """A timezone-aware datetime from a FHIR instant/dateTime with offset; BadRequest else."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        value = None
    if value is None or value.tzinfo is None:
        raise BadRequest(f"{text!r} is not an instant with a time zone", location=where)
    return value
