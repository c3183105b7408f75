"""TOTP codes (window, replay) and recovery codes, checked against pyotp itself."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

import pyotp

from carebase.auth import totp


def test_secret_and_provisioning_uri() -> None:
    secret = totp.new_secret()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    assert secret != totp.new_secret()
    uri = urlsplit(totp.provisioning_uri(secret, "alice"))
    assert (uri.scheme, uri.netloc, uri.path) == ("otpauth", "totp", "/carebase:alice")
    query = parse_qs(uri.query)
    assert query["secret"] == [secret] and query["issuer"] == ["carebase"]


def test_codes_are_those_of_an_authenticator_app() -> None:
    secret = totp.new_secret()
    now = time.time()
    assert totp.code_at(secret, totp.current_step(now)) == pyotp.TOTP(secret).at(now)


def test_window_accepts_one_step_either_side_only() -> None:
    secret = totp.new_secret()
    now = 1_800_000_015.0
    here = totp.current_step(now)
    for offset in (-1, 0, 1):
        code = totp.code_at(secret, here + offset)
        assert totp.matching_step(secret, code, last_used_step=None, now=now) == here + offset
    for offset in (-3, -2, 2, 3):
        code = totp.code_at(secret, here + offset)
        if all(code != totp.code_at(secret, here + o) for o in (-1, 0, 1)):
            assert totp.matching_step(secret, code, last_used_step=None, now=now) is None


def test_a_used_step_and_earlier_ones_are_refused() -> None:
    secret = totp.new_secret()
    now = 1_800_000_015.0
    here = totp.current_step(now)
    code = totp.code_at(secret, here)
    assert totp.matching_step(secret, code, last_used_step=here - 1, now=now) == here
    assert totp.matching_step(secret, code, last_used_step=here, now=now) is None
    previous = totp.code_at(secret, here - 1)
    assert totp.matching_step(secret, previous, last_used_step=here, now=now) is None


def test_malformed_codes_are_refused() -> None:
    secret = totp.new_secret()
    for code in ("", "12345", "1234567", "abcdef", "12 34 5x", "١٢٣٤٥٦"):
        assert totp.matching_step(secret, code, last_used_step=None) is None
    assert totp.looks_like_totp(" 123 456 ")
    assert not totp.looks_like_totp("abcd-efgh-jkmn-pqrs")


def test_recovery_codes_are_ten_unique_high_entropy_codes() -> None:
    codes = totp.new_recovery_codes()
    assert len(codes) == 10 == len(set(codes))
    for code in codes:
        assert re.fullmatch(r"([a-hjkmnp-z2-9]{4}-){3}[a-hjkmnp-z2-9]{4}", code)
    assert set(codes).isdisjoint(totp.new_recovery_codes())


def test_recovery_code_hash_ignores_case_dashes_and_spaces() -> None:
    code = totp.new_recovery_codes(1)[0]
    stored = totp.recovery_code_hash(code)
    assert re.fullmatch(r"[0-9a-f]{64}", stored) and code not in stored
    assert totp.recovery_code_hash(code.upper().replace("-", " ")) == stored
    assert totp.recovery_code_hash(code.replace("-", "")) == stored
    assert totp.recovery_code_hash(code[:-1] + "x") != stored or code.endswith("x")
