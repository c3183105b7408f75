"""A token-bucket rate limiter (pure: no I/O, the clock is injectable).

Each key (a client IP) has a bucket holding up to `burst` tokens, refilled at `rate` tokens
per second; a request takes one token or is refused with the seconds until one is back.
State lives in this object, so in a server it is per worker process: with N workers a client
can make up to N times the limit (documented in docs/security/hardening.md).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour)s?\s*(?::\s*(\d+)\s*)?$")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`count` requests per `period` seconds, with bursts of up to `burst`."""

    count: int
    period: float
    burst: int

    @property
    def per_second(self) -> float:
        """The refill rate in tokens per second."""
        return self.count / self.period


def parse_rate_limit(spec: str) -> RateLimit | None:
    """ "RATE/UNIT[:BURST]" (e.g. "10/minute:20") as a RateLimit; None for "off" or "0".

    Raises ValueError naming the expected form. The burst defaults to the rate.
    """
    if spec.strip().lower() in {"off", "0", "none", ""}:
        return None
    match = _SPEC.match(spec.lower())
    if match is None:
        raise ValueError(
            f"rate limit {spec!r} is not of the form RATE/UNIT[:BURST], e.g. 10/minute:20 "
            "(units: second, minute, hour), or off"
        )
    count = int(match.group(1))
    burst = int(match.group(3)) if match.group(3) else count
    if count <= 0 or burst <= 0:
        raise ValueError(f"rate limit {spec!r}: rate and burst must be positive (or use off)")
    return RateLimit(count, _UNITS[match.group(2)], burst)


class TokenBucketLimiter:
    """Per-key token buckets; `acquire(key)` is 0.0 when allowed, else seconds to wait."""

    #: buckets kept before idle (full) ones are dropped, so memory stays bounded
    MAX_KEYS = 100_000

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._rate = limit.per_second
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def acquire(self, key: str) -> float:
        """Take one token of `key`'s bucket: 0.0 if there was one, else the wait in seconds."""
        now = self._clock()
        burst = float(self.limit.burst)
        tokens, at = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - at) * self._rate)
        if tokens >= 1.0 - 1e-9:  # float refill: 6 s at 1/6 per s is one token
            if len(self._buckets) >= self.MAX_KEYS and key not in self._buckets:
                self._prune(now)
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self._rate

    def retry_after(self, wait: float) -> int:
        """A wait as the whole seconds of a Retry-After header (at least 1)."""
        return max(1, math.ceil(wait))

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled completely (they behave like absent ones)."""
        burst = float(self.limit.burst)
        full = [
            key
            for key, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self._rate >= burst
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.MAX_KEYS:  # a flood of distinct keys: drop the oldest
            for key in list(self._buckets)[: self.MAX_KEYS // 10]:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
