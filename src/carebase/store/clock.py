"""Write timestamps: epoch milliseconds in the database, FHIR instants in `meta.lastUpdated`."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

_lock = threading.Lock()
_last = 0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def now_ms() -> int:
    """Current time in epoch ms, never going backwards within this process.

    A wall clock stepped back (NTP) must not make a newer version look older than the one
    before it; order among writes in the same millisecond comes from the version sequence.
    """
    global _last
    with _lock:
        now = max(time.time_ns() // 1_000_000, _last)
        _last = now
        return now


def ms_to_datetime(ms: int) -> datetime:
    """Epoch ms as a timezone-aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=ms)


def ms_to_instant(ms: int) -> str:
    """Epoch ms as a FHIR instant with millisecond precision, e.g. 2026-11-28T10:20:00.123Z."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def datetime_to_ms(value: datetime) -> int:
    """A datetime (naive means UTC) as epoch ms."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # integer arithmetic: the float timestamp() * 1000 can land just below a whole ms
    return (value - _EPOCH) // _ONE_MS
