"""The TOTP second factor (RFC 6238, via pyotp) and one-time recovery codes.

A code is accepted for the current 30-second step or one step either side (clock drift), and
only for a step later than the last one accepted for that user: a code, once used, cannot be
replayed, even within its window. Recovery codes are random, shown once, stored as SHA-256
hashes (they carry about 79 bits of entropy, so a fast hash suffices) and each works once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import pyotp

ISSUER = "carebase"
STEP_SECONDS = 30
DIGITS = 6
#: Steps either side of the current one that are still accepted (clock drift).
WINDOW = 1
RECOVERY_CODE_COUNT = 10
#: No 0/o, 1/l/i: codes are read off paper and typed by hand.
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_LENGTH = 16


def new_secret() -> str:
    """A new random TOTP secret (base32, 160 bits)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, username: str) -> str:
    """The `otpauth://totp/...` URI authenticator apps read (usually from a QR code)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=username, issuer_name=ISSUER
    )


def current_step(now: float | None = None) -> int:
    """The number of the 30-second step `now` (default: the current time) falls in."""
    return int((time.time() if now is None else now) // STEP_SECONDS)


def code_at(secret: str, step: int) -> str:
    """The code of `secret` for time step `step`."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).at(step * STEP_SECONDS)


def matching_step(
    secret: str, code: str, *, last_used_step: int | None, now: float | None = None
) -> int | None:
    """The time step whose code `code` is, within the window and after `last_used_step`.

    None when the code is malformed, wrong, outside the window, or belongs to a step at or
    before the last one already used (a replay). The caller must record the returned step as
    used, atomically, before accepting the login.
    """
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    here = current_step(now)
    found = None
    for step in range(here - WINDOW, here + WINDOW + 1):
        # Every candidate is compared (no early exit) so timing does not tell which matched.
        if hmac.compare_digest(code_at(secret, step), code) and found is None:
            found = step
    if found is None or (last_used_step is not None and found <= last_used_step):
        return None
    return found


def looks_like_totp(code: str) -> bool:
    """Whether `code` has the shape of a TOTP code (else it may be a recovery code)."""
    code = code.strip().replace(" ", "")
    return len(code) == DIGITS and code.isascii() and code.isdigit()


def new_recovery_codes(count: int = RECOVERY_CODE_COUNT) -> list[str]:
    """`count` fresh recovery codes, formatted `abcd-efgh-jkmn-pqrs` for reading."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        codes.append("-".join(raw[i : i + 4] for i in range(0, _RECOVERY_LENGTH, 4)))
    return codes


def recovery_code_hash(code: str) -> str:
    """The stored form of a recovery code: SHA-256 of it without dashes, spaces or case."""
    normalised = "".join(code.split()).replace("-", "").lower()
    return hashlib.sha256(normalised.encode()).hexdigest()
