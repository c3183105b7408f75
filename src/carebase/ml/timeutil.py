"""FHIR date, dateTime and instant strings as timezone-aware UTC datetimes, for comparisons
with an index time (partial dates mean their first instant)."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_time(text: str) -> datetime:
    """`text` (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime with or without zone) as aware UTC;
    a dateTime without a zone is taken as UTC. ValueError when it is none of those."""
    if len(text) == 4:
        return datetime(int(text), 1, 1, tzinfo=UTC)
    if len(text) == 7:
        return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def maybe_time(value: object) -> datetime | None:
    """`parse_time(value)` for a non-empty string, None for anything else or a bad string."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def iso(moment: datetime) -> str:
    """`moment` as a FHIR instant string in UTC (`2019-01-01T00:00:00Z`)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
