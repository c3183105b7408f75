"""Turns single FHIR values into search index row parts: strings, date ranges, decimals, refs.

These are the rules of https://hl7.org/fhir/R4/search.html applied at write time; the search
SQL must apply the same ones to query values (`normalize_string`, `date_range`,
`decimal_range`, `token_key`/`composite_key`, `index_text`), so they live here as plain
functions.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from collections.abc import Collection, Sequence
from datetime import date, datetime
from decimal import Decimal

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAY_MS = 86_400_000

#: Longest text (UTF-8 bytes) an index column holds as it is. PostgreSQL refuses btree
#: entries over ~2,700 bytes and some lookup indexes hold two text columns (code, system).
INDEX_TEXT_BYTES = 1000
#: Between a capped value's prefix and the SHA-256 (hex) of the whole value.
CAP_SEPARATOR = "\x1f#sha256:"
_HASH_CHARS = 64
#: Bytes of a capped value's prefix (at least; it is cut at a character boundary after it).
#: A capped value is INDEX_TEXT_BYTES + 1 to + 4 bytes long, so it never equals a value that
#: is stored as it is, and equal capped forms mean equal values (barring SHA-256 collisions).
CAP_PREFIX_BYTES = INDEX_TEXT_BYTES + 1 - len(CAP_SEPARATOR.encode()) - _HASH_CHARS
#: No string of at most this many characters can exceed INDEX_TEXT_BYTES (UTF-8).
SHORT_TEXT_CHARS = INDEX_TEXT_BYTES // 4


def index_text(value: str) -> str:
    """`value` as the index tables hold it: unchanged up to INDEX_TEXT_BYTES (UTF-8), else
    its first CAP_PREFIX_BYTES, CAP_SEPARATOR and the SHA-256 hex digest of the whole value.

    Applied to every text written to an equality-searched index column and to every query
    value compared with one, so equality stays exact and prefix searches up to
    CAP_PREFIX_BYTES still see the value's real beginning.
    """
    if len(value) <= SHORT_TEXT_CHARS:
        return value
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) <= INDEX_TEXT_BYTES:
        return value
    cut = CAP_PREFIX_BYTES
    while encoded[cut] & 0xC0 == 0x80:  # continuation byte: finish the character
        cut += 1
    prefix = encoded[:cut].decode("utf-8", "surrogatepass")
    return f"{prefix}{CAP_SEPARATOR}{hashlib.sha256(encoded).hexdigest()}"


def normalize_string(text: str) -> str:
    """The form string search compares: lower-case, accents stripped, whitespace collapsed.

    Punctuation is kept (`o'brien` stays as is). ASCII text skips Unicode normalisation,
    which is most of what we index and several times faster.
    """
    if not text.isascii():
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in decomposed if not unicodedata.combining(c))
    text = text.lower()
    if "  " in text or "\t" in text or "\n" in text or text[:1] == " " or text[-1:] == " ":
        text = " ".join(text.split())
    return text


def _day_ms(year: int, month: int, day: int) -> int:
    return (date(year, month, day).toordinal() - _EPOCH_ORDINAL) * _DAY_MS


@functools.lru_cache(maxsize=32768)
def date_range(text: str) -> tuple[int, int] | None:
    """Inclusive epoch-millisecond range (UTC) of a FHIR date, dateTime or instant.

    The range is the value's implicit precision: `2015` covers the whole year, `2015-02-07`
    the whole (UTC) day, `...T10:00:00Z` one second, `...T10:00:00.5Z` a tenth of a second.
    Values with a time but no offset are read as UTC. Unparseable text gives None.
    Cached: real data repeats timestamps a lot (an encounter's time is on all its results).
    """
    try:
        n = len(text)
        if n == 4:
            year = int(text)
            return _day_ms(year, 1, 1), _day_ms(year + 1, 1, 1) - 1
        if n == 7:
            year, month = int(text[:4]), int(text[5:7])
            nxt = _day_ms(year + 1, 1, 1) if month == 12 else _day_ms(year, month + 1, 1)
            return _day_ms(year, month, 1), nxt - 1
        if n == 10:
            low = _day_ms(int(text[:4]), int(text[5:7]), int(text[8:10]))
            return low, low + _DAY_MS - 1
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    time_part = text[11:]
    end = len(time_part)
    for sign in ("Z", "+", "-"):
        at = time_part.find(sign)
        if at != -1:
            end = min(end, at)
    clock = time_part[:end]
    if len(clock) <= 5:  # HH:MM
        width = 60_000
    elif "." in clock:
        digits = len(clock) - clock.index(".") - 1
        width = 10 ** (3 - digits) if digits < 3 else 1
    else:
        width = 1000
    offset = dt.utcoffset()
    offset_ms = int(offset.total_seconds() * 1000) if offset is not None else 0
    low = (
        (dt.toordinal() - _EPOCH_ORDINAL) * _DAY_MS
        + (dt.hour * 3600 + dt.minute * 60 + dt.second) * 1000
        + dt.microsecond // 1000
        - offset_ms
    )
    return low, low + width - 1


def decimal_range(value: float | int, exact_integers: bool = False) -> tuple[float, float]:
    """The implicit range of a decimal from its significant digits: 1.5 -> (1.45, 1.55).

    JSON integers (`120`) are precise to the unit: (119.5, 120.5) - unless the element is an
    `integer` type (`exact_integers`), whose values are exact.
    """
    if value.__class__ is int:
        if exact_integers:
            return float(value), float(value)
        return value - 0.5, value + 0.5
    text = repr(value)
    if "e" in text or "E" in text:
        exponent = Decimal(text).as_tuple().exponent
        half = 0.5 * 10.0 ** int(exponent)
    elif "." in text:
        half = 0.5 * 10.0 ** -(len(text) - text.index(".") - 1)
    else:  # inf / nan: no range to speak of
        half = 0.0
    return value - half, value + half


def parse_reference(
    reference: str, base_url: str | None, resource_types: Collection[str]
) -> tuple[str | None, str | None, str | None, str | None] | None:
    """(type, id, version, url) of a Reference.reference text (None when empty).

    `Type/id` and `Type/id/_history/v` are local, so is an absolute URL under `base_url`
    (the server's own base). Other absolute URLs, `urn:uuid:`/`urn:oid:`, `#contained`
    references and anything that is not a known resource type keep only `url` (a row for a
    `#contained` reference is what makes `:missing=false` true for it, as R4 wants).
    """
    if not reference:
        return None
    relative = reference
    if base_url and reference.startswith(base_url):
        relative = reference[len(base_url) :].lstrip("/")
    parts = relative.split("/")
    if parts[0] in resource_types:
        if len(parts) == 2 and parts[1]:
            return parts[0], parts[1], None, None
        if len(parts) == 4 and parts[1] and parts[2] == "_history" and parts[3]:
            return parts[0], parts[1], parts[3], None
    return None, None, None, reference


def escape_part(text: str) -> str:
    """Escape FHIR search separators (`\\`, `$`, `|`, `,`) inside one composite component."""
    if "\\" in text or "$" in text or "|" in text or "," in text:
        text = text.replace("\\", "\\\\").replace("$", "\\$").replace("|", "\\|")
        text = text.replace(",", "\\,")
    return text


def token_key(system: str | None, code: str, with_system: bool = True) -> str:
    """One token as a composite component: `system|code`, `|code` (no system) or `code`.

    The indexer writes both the system-qualified form and the bare `code` form, so a query's
    component `code`, `system|code` or `|code` each match by string equality.
    """
    if not with_system:
        return escape_part(code)
    return f"{escape_part(system or '')}|{escape_part(code)}"


def composite_key(parts: Sequence[str]) -> str:
    """Components (each already made by `token_key`, `normalize_string`, ...) joined by `$`.

    Format, for the search SQL to rebuild from a query value `A$B`:
    - token components: `token_key(system, code)` or `token_key(None, code, False)`;
    - string components: `escape_part(normalize_string(text))`;
    - reference components: `escape_part("Type/id")` for local targets, else the URL;
    - uri components: `escape_part(uri)`; number components: `repr(float(value))`.
    When the last component is a quantity, number or date, no composite row is written:
    instead that component's ordinary quantity/number/date row is written under the param
    name `f"{code}${composite_key(other_parts)}"`, so range comparisons keep working.
    """
    return "$".join(parts)
