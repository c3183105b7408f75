"""The token bucket: bursts, refill, retry times, parsing of the setting, bounded memory."""

from __future__ import annotations

import pytest

from carebase.auth.rate_limiter import RateLimit, TokenBucketLimiter, parse_rate_limit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_at_the_rate() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(RateLimit(10, 60.0, 3), clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("a")
    assert wait == pytest.approx(6.0)  # one token every 6 s
    assert limiter.retry_after(wait) == 6
    assert limiter.acquire("b") == 0.0  # another key has its own bucket
    clock.now += 5.9
    assert limiter.acquire("a") > 0
    clock.now += 0.2
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    clock.now += 3600
    assert [limiter.acquire("a") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # capped at burst


def test_parse_rate_limit() -> None:
    assert parse_rate_limit("10/minute:20") == RateLimit(10, 60.0, 20)
    assert parse_rate_limit("5/second") == RateLimit(5, 1.0, 5)
    assert parse_rate_limit(" 100 / hours ") == RateLimit(100, 3600.0, 100)
    assert parse_rate_limit("off") is None
    assert parse_rate_limit("0") is None
    for bad in ("ten per minute", "10/fortnight", "10/minute:x", "0/minute:5"):
        with pytest.raises(ValueError, match=r"RATE/UNIT|positive"):
            parse_rate_limit(bad)


def test_memory_stays_bounded_under_many_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(TokenBucketLimiter, "MAX_KEYS", 100)
    limiter = TokenBucketLimiter(RateLimit(1, 1.0, 1), clock)
    for i in range(1000):
        limiter.acquire(f"k{i}")
    assert len(limiter) <= 100
    clock.now += 10  # all refilled: pruning drops them
    limiter.acquire("fresh")
    assert len(limiter) <= 2
