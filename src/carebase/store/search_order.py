"""`_sort` and keyset paging: sort keys over the index tables, and opaque page cursors.

Every search is ordered by its sort keys and then by `rid` (the resource row), so the order
is total and a page can continue from the last row of the previous one with a keyset
condition ("rows after these values") instead of OFFSET: deep pages cost what page 1 costs,
and rows inserted or deleted between requests never shift a match onto another page.

A sort key is one value per resource, computed by a correlated subquery on the parameter's
index table: ascending sorts use the smallest value a resource has, descending ones the
largest (for dates: the earliest lower bound, the latest upper bound, an open end counting as
the latest). Resources without a value come last in both directions.

A cursor is base64url JSON holding the sort it belongs to, the boundary row's key values and
rid, and the direction (`n` next: rows after it; `p` previous: rows before it).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from carebase.errors import BadRequest
from carebase.fhir.definitions.loader import get_definitions
from carebase.store.schema import param_key

Dialect = Literal["sqlite", "postgresql"]
Direction = Literal["n", "p"]

#: An open lower/upper date bound as a sortable number (epoch ms far beyond any real date).
OPEN_LOW = -(2**62)
OPEN_HIGH = 2**62
#: Separates the parts of a composite text key; below every character a FHIR value can hold,
#: so comparing "code<sep>system" orders by code, then system.
KEY_SEPARATOR = "\x01"

_TEXT = "text"
_NUMBER = "number"


@dataclass(frozen=True, slots=True)
class SortKey:
    """One `_sort` key: its name as written, direction, SQL value expression and value kind."""

    name: str
    descending: bool
    expression: str  # over the unaliased `resource` table; `?` placeholders
    args: tuple[Any, ...]
    kind: str  # "text" or "number": what a cursor may hold for it


@dataclass(frozen=True, slots=True)
class SortPlan:
    """The keys of one search's order (empty: by rid only) and the `_sort` text they came from."""

    keys: tuple[SortKey, ...]
    spec: str


def _bad_sort(value: str, why: str) -> BadRequest:
    return BadRequest(f"_sort={value!r}: {why}", location="_sort")


def _text_key(dialect: Dialect, expression: str) -> str:
    """Text compared by code point on both databases (PostgreSQL's default collation is not)."""
    return f'({expression}) COLLATE "C"' if dialect == "postgresql" else expression


def _index_key(
    code: str, ptype: str, keys: int, descending: bool, dialect: Dialect
) -> tuple[str, str]:
    """(SQL aggregate over the index rows of `resource` under `keys` parameter keys, value
    kind) for one parameter type."""
    pick = "MAX" if descending else "MIN"
    sep = "chr(1)" if dialect == "postgresql" else "char(1)"
    if ptype == "string":
        table, value, kind = "idx_string", _text_key(dialect, "x.norm"), _TEXT
    elif ptype == "token":
        value = _text_key(dialect, f"x.code || {sep} || COALESCE(x.system, '')")
        table, kind = "idx_token", _TEXT
    elif ptype == "date":
        table, kind = "idx_date", _NUMBER
        value = f"COALESCE(x.hi, {OPEN_HIGH})" if descending else f"COALESCE(x.lo, {OPEN_LOW})"
    elif ptype in ("number", "quantity"):
        table, value, kind = f"idx_{ptype}", "x.value", _NUMBER
    elif ptype == "uri":
        table, value, kind = "idx_uri", _text_key(dialect, "x.uri"), _TEXT
    elif ptype == "reference":
        table, kind = "idx_reference", _TEXT
        value = _text_key(dialect, "COALESCE(x.target_type || '/' || x.target_id, x.url)")
    else:
        raise _bad_sort(code, f"a {ptype} parameter cannot be sorted on")
    # `+x.pkey` on SQLite: without statistics it would otherwise scan the (pkey, ...) lookup
    # index (every row of the parameter) for each match instead of the match's few rows
    plus = "+" if dialect == "sqlite" else ""
    where = f"x.rid = resource.rid AND {plus}x.pkey IN ({', '.join('?' * keys)})"
    if ptype == "token":
        where += " AND x.code IS NOT NULL"
    return f"(SELECT {pick}({value}) FROM {table} x WHERE {where})", kind


def _shared_param(types: tuple[str, ...], code: str) -> str | None:
    """The type of parameter `code` when every one of `types` has it with that one type."""
    defs = get_definitions()
    params = [defs.search_param(t, code) for t in types]
    kinds = {p.type for p in params if p is not None and p.expression is not None}
    return kinds.pop() if len(kinds) == 1 and len(params) == len(types) and all(params) else None


def parse_sort(types: tuple[str, ...] | None, raw: str | None, dialect: Dialect) -> SortPlan:
    """The sort keys of `_sort=a,-b,...` for a search of `types` (None: all types, which
    sort on `_id` and `_lastUpdated` only; several: on parameters all of them share)."""
    if raw is None:
        return SortPlan((), "")
    keys: list[SortKey] = []
    seen: set[str] = set()
    args: tuple[Any, ...]
    for item in raw.split(","):
        name = item.strip()
        descending = name.startswith("-")
        code = name[1:] if descending else name
        if code == "":
            raise _bad_sort(raw, "has an empty sort key (expected e.g. _sort=-date,name)")
        if code in seen:
            raise _bad_sort(raw, f"sorts on '{code}' twice")
        seen.add(code)
        if code == "_id":
            expression, kind, args = _text_key(dialect, "resource.id"), _TEXT, ()
        elif code == "_lastUpdated":
            expression, kind, args = "resource.last_updated", _NUMBER, ()
        else:
            ptype = _shared_param(types, code) if types else None
            if ptype is None:
                where = (
                    f"for {', '.join(types)}"
                    if types
                    else "across resource types (only _id, _lastUpdated)"
                )
                raise _bad_sort(code, f"is not a search parameter that can be sorted on {where}")
            expression, kind = _index_key(code, ptype, len(types or ()), descending, dialect)
            args = tuple(param_key(t, code) for t in types or ())
        keys.append(SortKey(code, descending, expression, args, kind))
    return SortPlan(tuple(keys), ",".join(("-" if k.descending else "") + k.name for k in keys))


# ------------------------------------------------------------------------------ cursors


@dataclass(frozen=True, slots=True)
class Cursor:
    """A decoded `_cursor`: the boundary row's key values and rid, and which side to page to."""

    values: tuple[Any, ...]
    rid: int
    direction: Direction


def encode_cursor(plan: SortPlan, values: tuple[Any, ...], rid: int, direction: Direction) -> str:
    """The opaque `_cursor` text for the rows after (`n`) or before (`p`) a boundary row."""
    data = orjson.dumps({"s": plan.spec, "k": list(values), "r": rid, "d": direction})
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _invalid_cursor(text: str) -> BadRequest:
    shown = text if len(text) <= 60 else text[:57] + "..."
    return BadRequest(
        f"Paging cursor {shown!r} is not valid for this search; follow the links the server "
        "returned",
        location="_cursor",
    )


def _valid_value(value: Any, kind: str) -> bool:
    if value is None:
        return True
    if kind == _TEXT:
        return isinstance(value, str)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def decode_cursor(plan: SortPlan, text: str | None) -> Cursor | None:
    """The cursor in `text` (None when absent), checked against this search's sort; 400 when
    it is malformed or belongs to another sort."""
    if text is None or text == "":
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        raise _invalid_cursor(text) from None
    if not isinstance(data, dict) or set(data) != {"s", "k", "r", "d"}:
        raise _invalid_cursor(text)
    values, rid, direction = data["k"], data["r"], data["d"]
    ok = (
        data["s"] == plan.spec
        and isinstance(values, list)
        and len(values) == len(plan.keys)
        and all(_valid_value(v, k.kind) for v, k in zip(values, plan.keys, strict=False))
        and isinstance(rid, int)
        and not isinstance(rid, bool)
        and 0 <= rid < 2**63
        and direction in ("n", "p")
    )
    if not ok:
        raise _invalid_cursor(text)
    return Cursor(tuple(values), rid, direction)


# ------------------------------------------------------------------------------ SQL


def key_column(index: int) -> str:
    """The column alias of sort key `index` in the ordered subquery."""
    return f"k{index}"


def _column(plan: SortPlan, index: int, dialect: Dialect) -> str:
    column = f"m.{key_column(index)}"
    return _text_key(dialect, column) if plan.keys[index].kind == _TEXT else column


def order_by(plan: SortPlan, dialect: Dialect, *, reverse: bool = False) -> str:
    """The ORDER BY list over the subquery `m` (reversed: for paging backwards)."""
    parts = []
    for i, key in enumerate(plan.keys):
        descending = key.descending != reverse
        nulls = "FIRST" if reverse else "LAST"
        parts.append(f"{_column(plan, i, dialect)} {'DESC' if descending else 'ASC'} NULLS {nulls}")
    parts.append(f"m.rid {'DESC' if reverse else 'ASC'}")
    return ", ".join(parts)


def beyond(plan: SortPlan, cursor: Cursor, dialect: Dialect) -> tuple[str, list[Any]]:
    """The keyset condition over `m`: rows strictly after the cursor's row in the order the
    cursor pages in (forward for `n`, the reversed order for `p`)."""
    reverse = cursor.direction == "p"
    sql = f"m.rid {'<' if reverse else '>'} ?"
    args: list[Any] = [cursor.rid]
    for i in range(len(plan.keys) - 1, -1, -1):
        key, value = plan.keys[i], cursor.values[i]
        column = _column(plan, i, dialect)
        nulls_last = not reverse
        if value is None:
            after, after_args = ("FALSE", []) if nulls_last else (f"{column} IS NOT NULL", [])
            same, same_args = f"{column} IS NULL", []
        else:
            op = "<" if key.descending != reverse else ">"
            after, after_args = f"{column} {op} ?", [value]
            if nulls_last:
                after = f"({after} OR {column} IS NULL)"
            same, same_args = f"{column} = ?", [value]
        sql = f"({after} OR ({same} AND {sql}))"
        args = [*after_args, *same_args, *args]
    return sql, args
