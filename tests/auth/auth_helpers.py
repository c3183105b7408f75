"""Helpers of the auth tests: a fast password hasher and a clock moved by hand."""

from __future__ import annotations

import time

from carebase.auth.passwords import Passwords

#: Cheap argon2id parameters for tests that are not about the hashing cost.
FAST = Passwords(time_cost=1, memory_cost_kib=8, parallelism=1)
PASSWORD = "correct horse battery"


class Clock:
    """A clock the test moves by hand (Unix seconds)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
