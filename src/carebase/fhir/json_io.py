"""FHIR JSON in and out without losing the precision of decimals.

FHIR says a decimal's precision is significant (`1.50` is not `1.5`), but a JSON parser that
turns numbers into floats writes `1.50` back as `1.5`, and `1e3` as `1000.0`. `loads` keeps
such numbers as `FhirDecimal`, a float that remembers its text, and `dumps` writes that text
back. Bodies whose numbers all survive a float round trip (most) take orjson's fast path.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# Number tokens with a fraction or an exponent; integers always survive.
_FRACTIONAL = re.compile(rb"-?\d+(?:\.\d+)?[eE][+-]?\d+|-?\d+\.\d+")
_INT64 = (-(2**63), 2**64 - 1)  # what orjson accepts; beyond it is refused as before
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class FhirDecimal(float):
    """A JSON number kept with its original text (`repr` and `str` give that text)."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> FhirDecimal:
        value = super().__new__(cls, text)
        value.text = text
        return value

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__

    def __reduce__(self) -> tuple[type[FhirDecimal], tuple[str]]:
        return (FhirDecimal, (self.text,))

    def __deepcopy__(self, memo: dict[int, Any]) -> FhirDecimal:
        return self  # immutable, like float


def _refuse_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def _bounded_int(text: str) -> int:
    value = int(text)
    if not _INT64[0] <= value <= _INT64[1]:
        raise json.JSONDecodeError("Integer exceeds 64-bit range", text, 0)
    return value


def _all_round_trip(raw: bytes) -> bool:
    """True when every fractional number in `raw` reads back as written through a float.

    Numbers inside strings are looked at too: a false alarm only costs the slower parser.
    """
    for match in _FRACTIONAL.finditer(raw):
        token = match.group()
        try:
            if orjson.dumps(float(token)) != token:
                return False
        except (ValueError, OverflowError):
            return False
    return True


def loads(raw: bytes | str) -> Any:
    """Parse JSON; decimals that a float would alter come back as `FhirDecimal`.

    Raises `json.JSONDecodeError` (orjson's error is a subclass) for malformed input,
    including NaN/Infinity and integers beyond 64 bits, which JSON and orjson refuse.
    """
    data = raw.encode() if isinstance(raw, str) else raw
    lossless = _all_round_trip(data)
    if lossless or _SURROGATE_ESCAPE.search(data):
        # orjson is also the judge of escaped surrogates, which the stdlib lets through
        # unpaired (and orjson could then not write back).
        value = orjson.loads(data)
        if lossless:
            return value
    try:
        return json.loads(
            data,
            parse_float=FhirDecimal,
            parse_int=_bounded_int,
            parse_constant=_refuse_constant,
        )
    except (json.JSONDecodeError, UnicodeDecodeError):
        return orjson.loads(data)  # raises orjson's JSONDecodeError naming the position


def _default(value: Any) -> Any:
    if isinstance(value, FhirDecimal):
        return orjson.Fragment(value.text)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any, *, pretty: bool = False) -> bytes:
    """Compact (or indented) JSON bytes, writing `FhirDecimal`s as their original text."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_INDENT_2 if pretty else None)
