"""Search parameters as SQL conditions over the index tables (the basic, un-chained forms).

`build_search(type, params)` returns WHERE fragments over the `resource` table plus their
arguments, written with `?` placeholders. Each parameter becomes `rid IN (SELECT rid FROM
idx_... WHERE pkey = ? AND ...)`; comma-separated values are ORed inside, repeated
parameters are ANDed. Chaining, `_has`, `_include` and sorting belong to the search engine
that builds on this module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from carebase.errors import BadRequest, Unsupported
from carebase.fhir.definitions.loader import get_definitions
from carebase.fhir.definitions.model import SearchParam
from carebase.store.index_values import date_range, normalize_string
from carebase.store.schema import param_key

#: Parameters that shape the result rather than select resources; the API handles them,
#: and they are ignored here should they arrive.
RESULT_PARAMETERS = frozenset(
    {"_count", "_total", "_summary", "_elements", "_format", "_pretty", "_cursor"}
)
#: Search features of R4 this engine does not implement yet: refused with 501 rather than
#: ignored, so a client never mistakes an unfiltered result for a filtered one.
NOT_YET = frozenset(
    {
        "_sort", "_include", "_revinclude", "_contained", "_containedType", "_has", "_list",
        "_query", "_filter", "_text", "_content", "_type",
    }
)  # fmt: skip
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_SEARCH_DATE_RE = re.compile(
    r"\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_NUMBER_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")

Condition = tuple[str, list[Any]]

#: the most values (comma-separated ones counted singly) one search may have
MAX_SEARCH_VALUES = 500
#: the most ANDed parameters one search may have: PostgreSQL's planning time grows steeply
#: with them (measured: 20 take 0.2 s to plan, 40 take 3 s, 120 take 40 s)
MAX_SEARCH_CRITERIA = 20


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
    values: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            current.append(raw[i : i + 2])
            i += 2
            continue
        if ch == ",":
            values.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    values.append("".join(current))
    return values


def _split_unescaped(value: str, sep: str) -> list[str]:
    parts = re.split(r"(?<!\\)" + re.escape(sep), value)
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in _PREFIXES and not value[:2].isdigit():
        return value[:2], value[2:]
    return "eq", value


def _bad(name: str, value: str, why: str) -> BadRequest:
    return BadRequest(f"Search parameter '{name}': value '{value}' {why}", location=name)


def _range_condition(prefix: str, lo: Any, hi: Any, col_lo: str, col_hi: str) -> Condition:
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
    # ap: overlaps the value widened by 10% of its distance... use overlap of the range.
    return f"({lo_open} <= ?) AND {hi_open} >= ?))", [hi, lo]


def _number_bounds(name: str, text: str) -> tuple[float, float, float]:
    if not _NUMBER_RE.fullmatch(text):
        raise _bad(name, text, "is not a number")
    value = float(text)
    mantissa = text.lower().split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    try:  # 1e400 is infinite as a float; 0e999 has a precision no float can hold
        exponent = int(text.lower().split("e")[1]) if "e" in text.lower() else 0
        half = 0.5 * 10.0 ** (exponent - decimals)
    except (OverflowError, ValueError):  # ValueError: int() refuses over 4,300 digits
        half = math.inf
    if not math.isfinite(value + half):
        raise _bad(name, text, "is out of range")
    return value, value - half, value + half


def _number_condition(prefix: str, value: float, lo: float, hi: float, col: str) -> Condition:
    ops = {"gt": ">", "lt": "<", "ge": ">=", "le": "<=", "sa": ">", "eb": "<"}
    if prefix == "eq":
        return f"({col} >= ? AND {col} < ?)", [lo, hi]
    if prefix == "ne":
        return f"NOT ({col} >= ? AND {col} < ?)", [lo, hi]
    if prefix == "ap":
        margin = abs(value) * 0.1
        return f"({col} >= ? AND {col} <= ?)", [value - margin, value + margin]
    return f"({col} {ops[prefix]} ?)", [value]


def _any_of(parts: list[str]) -> str:
    """`(a OR b OR ...)` nested as a balanced tree: SQLite refuses expression trees deeper
    than 1,000, which a flat chain of a few hundred ORs already is."""
    if len(parts) <= 16:
        return "(" + " OR ".join(parts) + ")"
    mid = len(parts) // 2
    return f"({_any_of(parts[:mid])} OR {_any_of(parts[mid:])})"


class _Builder:
    """Turns one parameter's values into an OR of conditions on one index table."""

    def __init__(self, type_: str, param: SearchParam, name: str, modifier: str | None) -> None:
        self.type = type_
        self.param = param
        self.name = name
        self.modifier = modifier

    def conditions(self, values: list[str]) -> Condition:
        handler: Callable[[str], Condition] = getattr(
            self, f"_{self.param.type}", self._unsupported
        )
        parts, args = [], []
        for value in values:
            if value == "":
                raise _bad(self.name, value, "is empty")
            sql, a = handler(value)
            parts.append(sql)
            args.extend(a)
        return _any_of(parts), args

    def _unsupported(self, value: str) -> Condition:
        raise Unsupported(
            f"Search parameter '{self.name}' of type {self.param.type} is not supported yet",
            location=self.name,
        )

    def _token(self, value: str) -> Condition:
        if self.modifier == "text":
            return "LOWER(text) LIKE ? ESCAPE '\\'", [f"%{_like_escape(_unescape(value).lower())}%"]
        parts = _split_unescaped(value, "|")
        if len(parts) == 1:
            return "code = ?", [_unescape(parts[0])]
        if len(parts) != 2:
            raise _bad(self.name, value, "has more than one '|' (expected [system]|[code])")
        system, code = _unescape(parts[0]), _unescape(parts[1])
        if system == "":
            return "(system IS NULL AND code = ?)", [code]
        if code == "":
            return "system = ?", [system]
        return "(code = ? AND system = ?)", [code, system]

    def _string(self, value: str) -> Condition:
        text = _unescape(value)
        if self.modifier == "exact":
            return "exact = ?", [text]
        norm = _like_escape(normalize_string(text))
        if self.modifier == "contains":
            return "norm LIKE ? ESCAPE '\\'", [f"%{norm}%"]
        return "norm LIKE ? ESCAPE '\\'", [f"{norm}%"]

    def _date(self, value: str) -> Condition:
        prefix, text = _prefix(value)
        bounds = date_range_ms(text)
        if bounds is None:
            raise _bad(
                self.name,
                value,
                "is not a valid date (expected e.g. 2015, 2015-02, 2015-02-07 or "
                "2015-02-07T13:28:17Z, optionally prefixed by eq/ne/gt/lt/ge/le/sa/eb/ap)",
            )
        return _range_condition(prefix, bounds[0], bounds[1], "lo", "hi")

    def _number(self, value: str) -> Condition:
        prefix, text = _prefix(value)
        number, lo, hi = _number_bounds(self.name, text)
        return _number_condition(prefix, number, lo, hi, "value")

    def _quantity(self, value: str) -> Condition:
        prefix, text = _prefix(value)
        parts = _split_unescaped(text, "|")
        if len(parts) not in (1, 3):
            raise _bad(self.name, value, "is not a quantity (expected [prefix]number|system|code)")
        number, lo, hi = _number_bounds(self.name, parts[0])
        sql, args = _number_condition(prefix, number, lo, hi, "value")
        if len(parts) == 3:
            system, code = _unescape(parts[1]), _unescape(parts[2])
            if code:
                sql += (
                    " AND (code = ? OR (code IS NULL AND unit = ?))"
                    if not system
                    else " AND code = ? AND system = ?"
                )
                args += [code, code] if not system else [code, system]
            elif system:
                sql += " AND system = ?"
                args.append(system)
        return f"({sql})", args

    def _uri(self, value: str) -> Condition:
        text = _unescape(value)
        if self.modifier == "below":
            return "uri LIKE ? ESCAPE '\\'", [f"{_like_escape(text)}%"]
        return "uri = ?", [text]

    def _reference(self, value: str) -> Condition:
        text = _unescape(value)
        if "://" in text or text.startswith("urn:"):
            return "url = ?", [text]
        target_type = self.modifier
        if "/" in text:
            pieces = text.split("/")
            if len(pieces) >= 2:
                target_type, text = pieces[-2], pieces[-1]
                if len(pieces) >= 4 and pieces[-2] == "_history":
                    target_type, text = pieces[-4], pieces[-3]
        if target_type:
            return "(target_id = ? AND target_type = ?)", [text, target_type]
        return "target_id = ?", [text]


_TABLES = {
    "token": "idx_token",
    "string": "idx_string",
    "date": "idx_date",
    "number": "idx_number",
    "quantity": "idx_quantity",
    "uri": "idx_uri",
    "reference": "idx_reference",
}


def _parameter_condition(type_: str, name: str, raw: str) -> Condition:
    code, _, modifier = name.partition(":")
    if "." in name:
        raise Unsupported(f"Chained search parameter '{name}' is not supported yet", location=name)
    values = split_values(raw)
    if code == "_id":
        return f"id IN ({', '.join('?' * len(values))})", [_unescape(v) for v in values]
    if code == "_lastUpdated":
        parts, args = [], []
        for value in values:
            prefix, text = _prefix(value)
            bounds = date_range_ms(text)
            if bounds is None:
                raise _bad(name, value, "is not a valid date")
            sql, a = _range_condition(prefix, bounds[0], bounds[1], "last_updated", "last_updated")
            parts.append(sql)
            args.extend(a)
        return "(" + " OR ".join(parts) + ")", args
    param = get_definitions().search_param(type_, code)
    if param is None:
        raise BadRequest(
            f"Unknown search parameter '{code}' for {type_}; see /fhir/metadata for the "
            "parameters this server supports",
            location=name,
        )
    table = _TABLES.get(param.type)
    if table is None or param.expression is None:
        raise Unsupported(
            f"Search parameter '{code}' ({param.type}) is not supported yet", location=name
        )
    if modifier:
        _check_modifier(param, modifier, name)
    builder = _Builder(type_, param, name, modifier or None)
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise _bad(name, raw, "must be true or false")
        op = "NOT IN" if raw == "true" else "IN"
        return f"rid {op} (SELECT rid FROM {table} WHERE pkey = ?)", [param_key(type_, code)]
    if modifier == "identifier" and param.type == "reference":
        sub_sql, sub_args = _Builder(
            type_, SearchParam(code, type_, "token", None, ""), name, None
        ).conditions(values)
        return (
            f"rid IN (SELECT rid FROM idx_token WHERE pkey = ? AND {sub_sql})",
            [param_key(type_, f"{code}:identifier"), *sub_args],
        )
    if table is None:
        builder._unsupported(raw)
    sub_sql, sub_args = builder.conditions(values)
    if modifier == "not":
        return f"rid NOT IN (SELECT rid FROM {table} WHERE pkey = ? AND {sub_sql})", [
            param_key(type_, code),
            *sub_args,
        ]
    return f"rid IN (SELECT rid FROM {table} WHERE pkey = ? AND {sub_sql})", [
        param_key(type_, code),
        *sub_args,
    ]


#: Modifiers implemented, per parameter type.
_MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"text", "not", "missing"},
    "reference": {"identifier", "missing"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"below", "missing"},
}
#: Modifiers R4 defines that are not implemented yet (refused with 501 rather than 400).
_LATER_MODIFIERS = {"above", "below", "in", "not-in", "of-type", "iterate"}


def _check_modifier(param: SearchParam, modifier: str, name: str) -> None:
    if modifier in _MODIFIERS.get(param.type, ()):
        return
    if param.type == "reference" and modifier in (
        param.targets or get_definitions().resource_types
    ):
        return
    if modifier in _LATER_MODIFIERS:
        raise Unsupported(
            f"Search parameter '{name}': modifier ':{modifier}' is not supported yet", location=name
        )
    raise BadRequest(
        f"Search parameter '{name}': modifier ':{modifier}' is not valid for a "
        f"{param.type} parameter",
        location=name,
    )


def is_supported(param: SearchParam) -> bool:
    """Whether this engine can search on `param` (what /metadata lists)."""
    return param.expression is not None and param.type in _TABLES and param.code not in NOT_YET


def build_search(type_: str | None, params: list[tuple[str, str]]) -> tuple[list[str], list[Any]]:
    """WHERE fragments (ANDed) and arguments selecting current resources matching `params`."""
    where = ["deleted = 0"]
    args: list[Any] = []
    if type_ is not None:
        where.append("type = ?")
        args.append(type_)
    criteria = sum(1 for name, _raw in params if name not in RESULT_PARAMETERS)
    if criteria > MAX_SEARCH_CRITERIA:
        raise BadRequest(
            f"The search has {criteria} parameters; at most {MAX_SEARCH_CRITERIA} are allowed "
            "in one search (combine values of one parameter with commas, or narrow it first)"
        )
    values = sum(1 + raw.count(",") for name, raw in params if name not in RESULT_PARAMETERS)
    if values > MAX_SEARCH_VALUES:  # each value binds a few arguments; databases cap those
        raise BadRequest(
            f"The search has {values} parameter values; at most {MAX_SEARCH_VALUES} are "
            "allowed in one search, so split it into several"
        )
    for name, raw in params:
        if name in RESULT_PARAMETERS:
            continue
        if "\x00" in raw:  # no resource holds one, and PostgreSQL refuses it in text
            raise _bad(name, raw, "contains a NUL character")
        if name.partition(":")[0] in NOT_YET:
            raise Unsupported(f"Search parameter '{name}' is not supported yet", location=name)
        if type_ is None and name not in ("_id", "_lastUpdated"):
            raise BadRequest(
                f"Search parameter '{name}' needs a resource type; search a type such as "
                f"/fhir/Patient?{name}=...",
                location=name,
            )
        sql, a = _parameter_condition(type_ or "Resource", name, raw)
        where.append(sql)
        args.extend(a)
    return where, args
