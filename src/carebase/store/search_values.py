"""One search value -> an SQL condition on the columns of one index table.

The R4 value syntax (https://hl7.org/fhir/R4/search.html): prefixes, escapes (`\\,` `\\|`
`\\$` `\\\\`), `[system]|[code]` tokens, `number|system|code` quantities, implicit ranges of
dates and decimals, and `ap` (approximately). Conditions use the index table's columns
unqualified (`code`, `norm`, `lo`, ...), so they fit inside `SELECT rid FROM idx_x WHERE ...`.
Malformed values raise BadRequest naming the parameter and the value.
"""

from __future__ import annotations

import math
import re
import time
from decimal import Decimal, FloatOperation, localcontext
from typing import Any, Literal

from carebase.errors import BadRequest
from carebase.store.index_values import (
    CAP_PREFIX_BYTES,
    CAP_SEPARATOR,
    INDEX_TEXT_BYTES,
    date_range,
    escape_part,
    index_text,
    normalize_string,
    token_key,
)

Condition = tuple[str, list[Any]]
Dialect = Literal["sqlite", "postgresql"]

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_SEARCH_DATE_RE = re.compile(
    r"\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_NUMBER_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_DATE_HELP = (
    "is not a valid date (expected e.g. 2015, 2015-02, 2015-02-07 or 2015-02-07T13:28:17Z, "
    "optionally prefixed by eq/ne/gt/lt/ge/le/sa/eb/ap)"
)
#: `ap` widens a value by this fraction (of the value, or for dates of its distance to now)
AP_FRACTION = 0.1


def bad_value(name: str, value: str, why: str) -> BadRequest:
    """The 400 for a malformed value of parameter `name`."""
    return BadRequest(f"Search parameter '{name}': value '{value}' {why}", location=name)


def date_range_ms(text: str) -> tuple[int, int] | None:
    """The epoch-ms range of a date search value, or None when it is not a FHIR date(Time).

    Stricter on syntax than the indexer (whose input is already validated), and it accepts
    the coarser forms clients send in searches: minutes without seconds, no timezone (UTC).
    """
    if _SEARCH_DATE_RE.fullmatch(text) is None:
        return None
    return date_range(text)


def split_values(raw: str) -> list[str]:
    """Comma-separated OR values, honouring the `\\,` escape (and `\\|`, `\\$`, `\\\\`)."""
    return split_unescaped(raw, ",")


def split_unescaped(raw: str, sep: str) -> list[str]:
    """`raw` split at each `sep` not preceded by an escaping backslash (escapes are kept)."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            current.append(raw[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def unescape(value: str) -> str:
    """The value with its search escapes (`\\x` -> `x`) removed."""
    return re.sub(r"\\(.)", r"\1", value) if "\\" in value else value


def like_escape(value: str) -> str:
    """`value` as a literal inside a LIKE pattern with ESCAPE '\\'."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def split_prefix(value: str) -> tuple[str, str]:
    """(prefix, rest) of a date/number/quantity value; `eq` when there is none."""
    if len(value) > 2 and value[:2] in PREFIXES:
        return value[:2], value[2:]
    return "eq", value


def parse_date(name: str, value: str) -> tuple[str, int, int]:
    """(prefix, lo, hi) of a date search value, or 400."""
    prefix, text = split_prefix(value)
    bounds = date_range_ms(text)
    if bounds is None:
        raise bad_value(name, value, _DATE_HELP)
    return prefix, bounds[0], bounds[1]


def approximate_date(lo: int, hi: int, now_ms: int | None = None) -> tuple[int, int]:
    """The `ap` range of a date: widened by 10% of its distance to now (R4's suggestion)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    gap = max(abs(now - lo), abs(now - hi))
    margin = int(gap * AP_FRACTION)
    return lo - margin, hi + margin


def range_condition(prefix: str, lo: int, hi: int, col_lo: str, col_hi: str) -> Condition:
    """Range-against-range comparison for dates (NULL bounds are open ends)."""
    lo_open = f"({col_lo} IS NULL OR {col_lo}"
    hi_open = f"({col_hi} IS NULL OR {col_hi}"
    if prefix == "eq":
        return f"({col_lo} >= ? AND {col_hi} <= ?)", [lo, hi]
    if prefix == "ne":
        return (
            f"NOT ({col_lo} IS NOT NULL AND {col_hi} IS NOT NULL"
            f" AND {col_lo} >= ? AND {col_hi} <= ?)",
            [lo, hi],
        )
    if prefix == "gt":
        return f"{hi_open} > ?)", [hi]
    if prefix == "lt":
        return f"{lo_open} < ?)", [lo]
    # ge/le (R4 search.html): the range above/below the search value overlaps the target's,
    # or the search value's range fully contains the target's
    if prefix == "ge":
        return f"({hi_open} > ?) OR ({col_lo} >= ? AND {col_hi} <= ?))", [hi, lo, hi]
    if prefix == "le":
        return f"({lo_open} < ?) OR ({col_lo} >= ? AND {col_hi} <= ?))", [lo, lo, hi]
    if prefix == "sa":
        return f"({col_lo} > ?)", [hi]
    if prefix == "eb":
        return f"({col_hi} < ?)", [lo]
    # ap: the target's range overlaps the value's range widened (see approximate_date)
    wide_lo, wide_hi = approximate_date(lo, hi)
    return f"({lo_open} <= ?) AND {hi_open} >= ?))", [wide_hi, wide_lo]


def range_matches(prefix: str, lo: int, hi: int, value_lo: int, value_hi: int) -> bool:
    """`range_condition` in Python, for a target range [value_lo, value_hi] (no open ends)."""
    within = value_lo >= lo and value_hi <= hi
    if prefix == "eq":
        return within
    if prefix == "ne":
        return not within
    if prefix in ("gt", "sa"):
        return (value_hi if prefix == "gt" else value_lo) > hi
    if prefix in ("lt", "eb"):
        return (value_lo if prefix == "lt" else value_hi) < lo
    if prefix == "ge":
        return value_hi > hi or within
    if prefix == "le":
        return value_lo < lo or within
    wide_lo, wide_hi = approximate_date(lo, hi)
    return value_lo <= wide_hi and value_hi >= wide_lo


def date_condition(name: str, value: str, col_lo: str = "lo", col_hi: str = "hi") -> Condition:
    """One date value (with its prefix) against a range held in two columns."""
    prefix, lo, hi = parse_date(name, value)
    return range_condition(prefix, lo, hi, col_lo, col_hi)


def number_bounds(name: str, text: str) -> tuple[float, float, float]:
    """(value, lo, hi): a decimal and the implicit range of its significant digits.

    The bounds are computed in decimal, then rounded once to floats (what the index holds):
    `176.3` is [176.25, 176.35), and a stored 176.35 must fall outside it, which float
    arithmetic (176.3 + 0.05 = 176.35000000000002) would get wrong.
    """
    if not _NUMBER_RE.fullmatch(text):
        raise bad_value(name, text, "is not a number")
    try:
        with localcontext() as ctx:
            ctx.prec = max(60, len(text) + 10)
            ctx.traps[FloatOperation] = False
            number = Decimal(text)
            exponent = number.as_tuple().exponent
            assert isinstance(exponent, int)  # the pattern admits no NaN or infinity
            half = Decimal(5).scaleb(exponent - 1)
            bounds = float(number), float(number - half), float(number + half)
    except (ArithmeticError, ValueError):  # exponents beyond what a decimal context holds
        bounds = math.inf, math.inf, math.inf
    if not all(math.isfinite(b) for b in bounds):
        raise bad_value(name, text, "is out of range")
    return bounds


def number_condition(prefix: str, value: float, lo: float, hi: float, col: str) -> Condition:
    """One decimal (and its implicit range) against a value column."""
    ops = {"gt": ">", "lt": "<", "ge": ">=", "le": "<=", "sa": ">", "eb": "<"}
    if prefix == "eq":
        return f"({col} >= ? AND {col} < ?)", [lo, hi]
    if prefix == "ne":
        return f"NOT ({col} >= ? AND {col} < ?)", [lo, hi]
    if prefix == "ap":  # within 10% of the value, and never narrower than its precision
        margin = abs(value) * AP_FRACTION
        return f"({col} >= ? AND {col} <= ?)", [min(lo, value - margin), max(hi, value + margin)]
    return f"({col} {ops[prefix]} ?)", [value]


def token_condition(name: str, value: str) -> Condition:
    """`[code]`, `[system]|[code]`, `|[code]` or `[system]|` on idx_token columns."""
    parts = split_unescaped(value, "|")
    if len(parts) == 1:
        return "code = ?", [index_text(unescape(parts[0]))]
    if len(parts) != 2:
        raise bad_value(name, value, "has more than one '|' (expected [system]|[code])")
    system, code = index_text(unescape(parts[0])), index_text(unescape(parts[1]))
    if system == "":
        return "(system IS NULL AND code = ?)", [code]
    if code == "":
        return "system = ?", [system]
    return "(code = ? AND system = ?)", [code, system]


def token_text_condition(value: str) -> Condition:
    """`:text`: the value occurs (case-insensitively) in the token's display/text."""
    return "LOWER(text) LIKE ? ESCAPE '\\'", [f"%{like_escape(unescape(value).lower())}%"]


def _successor(prefix: str) -> str | None:
    """The least string greater than every string starting with `prefix` (code-point order)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF and not 0xD7FF <= last < 0xE000:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None


#: Characters `index_text` appends to a capped value's prefix (separator and digest).
_CAP_TAIL = len(CAP_SEPARATOR) + 64


def _uncapped(dialect: Dialect, column: str) -> str:
    """SQL true when the stored `column` is a value as it is (not capped by `index_text`)."""
    if dialect == "postgresql":
        octets = f"octet_length({column})"
    else:
        octets = f"length(CAST({column} AS BLOB))"
    return f"{octets} <= {INDEX_TEXT_BYTES}"


def string_condition(dialect: Dialect, modifier: str, value: str) -> Condition:
    """A string value (default: starts with, :exact, :contains) on idx_string columns.

    The default prefix match is a range on SQLite (whose LIKE never uses an index) and a
    LIKE on PostgreSQL (served by a text_pattern_ops index).
    Values longer than INDEX_TEXT_BYTES are stored capped (`index_text`): their first
    CAP_PREFIX_BYTES, then a digest. So `:exact` compares capped forms (still exact); prefix
    and `:contains` matches look only at that stored prefix, never at the digest; a prefix
    query longer than CAP_PREFIX_BYTES finds values that start with it and are stored whole,
    and values equal to it, but not longer capped values that merely start with it.
    """
    text = unescape(value)
    if modifier == "exact":
        return "exact = ?", [index_text(text)]
    norm = normalize_string(text)
    if modifier == "contains":
        # a match inside a capped value's digest is no match: look at its prefix only then
        pattern = f"%{like_escape(norm)}%"
        return (
            f"(norm LIKE ? ESCAPE '\\' AND ({_uncapped(dialect, 'norm')}"
            f" OR SUBSTR(norm, 1, LENGTH(norm) - {_CAP_TAIL}) LIKE ? ESCAPE '\\'))",
            [pattern, pattern],
        )
    if dialect == "postgresql":
        sql, args = "norm LIKE ? ESCAPE '\\'", [f"{like_escape(norm)}%"]
    elif (upper := _successor(norm)) is None:
        sql, args = "norm >= ?", [norm]
    else:
        sql, args = "(norm >= ? AND norm < ?)", [norm, upper]
    if len(norm.encode("utf-8", "surrogatepass")) <= CAP_PREFIX_BYTES:
        return sql, args  # within every capped value's stored prefix: the match is exact
    return f"(({sql} AND {_uncapped(dialect, 'norm')}) OR norm = ?)", [*args, index_text(norm)]


def quantity_condition(name: str, value: str) -> Condition:
    """`[prefix]number[|system|code]` on idx_quantity columns (code may match the unit)."""
    prefix, text = split_prefix(value)
    parts = split_unescaped(text, "|")
    if len(parts) not in (1, 3):
        raise bad_value(name, value, "is not a quantity (expected [prefix]number|system|code)")
    number, lo, hi = number_bounds(name, parts[0])
    sql, args = number_condition(prefix, number, lo, hi, "value")
    if len(parts) == 3:
        system, code = index_text(unescape(parts[1])), index_text(unescape(parts[2]))
        if code and not system:
            sql += " AND (code = ? OR (code IS NULL AND unit = ?))"
            args += [code, code]
        elif code:
            sql += " AND code = ? AND system = ?"
            args += [code, system]
        elif system:
            sql += " AND system = ?"
            args.append(system)
    return f"({sql})", args


def reference_target(value: str, type_modifier: str | None) -> tuple[str | None, str | None, str]:
    """(target type, target id, url) of a reference search value: `Type/id`, `id` (with the
    `:Type` modifier as type), `Type/id/_history/v`, or an absolute URL / urn (url only)."""
    text = unescape(value)
    if "://" in text or text.startswith("urn:"):
        return None, None, text
    target_type = type_modifier
    pieces = text.split("/")
    if len(pieces) >= 4 and pieces[-2] == "_history":
        return pieces[-4], pieces[-3], text
    if len(pieces) >= 2:
        return pieces[-2], pieces[-1], text
    return target_type, text, text


def reference_condition(value: str, type_modifier: str | None) -> Condition:
    """A reference value on idx_reference columns."""
    target_type, target_id, url = reference_target(value, type_modifier)
    if target_id is None:
        return "url = ?", [index_text(url)]
    if target_type:
        return "(target_id = ? AND target_type = ?)", [
            index_text(target_id),
            index_text(target_type),
        ]
    return "target_id = ?", [index_text(target_id)]


def uri_condition(value: str) -> Condition:
    """A uri value (equality) on idx_uri."""
    return "uri = ?", [index_text(unescape(value))]


def composite_part(name: str, ctype: str, value: str) -> str:
    """One (still escaped) composite component as the indexer writes it (`composite_key`)."""
    if ctype == "token":
        parts = split_unescaped(value, "|")
        if len(parts) == 1:
            return token_key(None, unescape(parts[0]), with_system=False)
        if len(parts) != 2:
            raise bad_value(name, value, "has more than one '|' (expected [system]|[code])")
        return token_key(unescape(parts[0]) or None, unescape(parts[1]))
    if ctype == "string":
        return escape_part(normalize_string(unescape(value)))
    if ctype == "reference":
        target_type, target_id, url = reference_target(value, None)
        return escape_part(f"{target_type}/{target_id}" if target_type else url)
    if ctype == "number":
        return repr(number_bounds(name, value)[0])
    if ctype == "quantity":
        parts = split_unescaped(value, "|")
        if len(parts) != 3:
            raise bad_value(
                name, value, "is not a quantity component (expected number|system|code)"
            )
        number = number_bounds(name, parts[0])[0]
        return escape_part(f"{number!r}|{unescape(parts[1])}|{unescape(parts[2])}")
    if ctype == "date":
        _prefix, lo, hi = parse_date(name, value)
        return f"{lo}..{hi}"
    return escape_part(unescape(value))  # uri
