"""The SQL spellings the view compiler needs, per engine: DuckDB (JSON) and Spark (VARIANT).

A FHIRPath item is one JSON value (DuckDB `JSON`, Spark `VARIANT`); a collection is a list of
items (`JSON[]`, `array<variant>`). Each method returns SQL text; arguments are SQL text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from carebase.analytics.view_model import ColumnInfo

#: FHIR column types -> the SQL type written files use (other columns are text)
SQL_TYPES = {
    "integer": "BIGINT",
    "positiveInt": "BIGINT",
    "unsignedInt": "BIGINT",
    "integer64": "BIGINT",
    "decimal": "DOUBLE",
    "boolean": "BOOLEAN",
}


def quote(text: str) -> str:
    """`text` as a SQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


#: the column of Spark's source relation holding each resource's JSON text
RESOURCE_TEXT = "resource_text"
#: a JSON string token (possessive loops: no backtracking, no deep recursion on long strings)
_JSON_STRING = r'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
#: the same for RE2 (DuckDB), which needs no possessive loops and has none
_JSON_STRING_RE2 = r'"(?:[^"\\]|\\.)*"'
#: a JSON number with a fraction (an exponent, if any, is part of the match)
_WRITTEN_DECIMAL = r"-?[0-9]+\.[0-9]+(?:[eE][-+]?[0-9]+)?"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def substitute(body: str, var: str, name: str) -> str:
    """`body` with the lambda variable `var` (a unique `vN` token) replaced by `name`."""
    return re.sub(rf"\b{re.escape(var)}\b", name, body)


class Dialect:
    """Operations shared by both engines (standard SQL and HOFs both spell alike)."""

    name = ""
    #: SQL type of a collection of items
    empty = ""

    def lit(self, text: str) -> str:
        """A string literal (both engines read backslash escapes in these literals)."""
        return quote(text)

    def list_of(self, *items: str) -> str:
        raise NotImplementedError

    def transform(self, lst: str, var: str, body: str) -> str:
        return f"transform({lst}, {var} -> {body})"

    def transform_indexed(self, lst: str, var: str, index: str, body: str) -> str:
        """`body` may use `self.index0(index)` for the 0-based position."""
        return f"transform({lst}, ({var}, {index}) -> {body})"

    def index0(self, index: str) -> str:
        return index

    def filter(self, lst: str, var: str, body: str) -> str:
        return f"filter({lst}, {var} -> {body})"

    def filter_indexed(self, lst: str, var: str, index: str, body: str) -> str:
        return f"filter({lst}, ({var}, {index}) -> {body})"

    def flatten(self, lst: str) -> str:
        return f"flatten({lst})"

    def length(self, lst: str) -> str:
        return f"size({lst})"

    def at(self, lst: str, index0: str) -> str:
        """The item at a 0-based position or NULL."""
        raise NotImplementedError

    def concat(self, *lists: str) -> str:
        return f"concat({', '.join(lists)})"

    def slice(self, lst: str, start0: str, count: str) -> str:
        raise NotImplementedError

    def let(self, value: str, var: str, body: str) -> str:
        """`body` with `var` bound to `value` once (a one-item list transformed); a plain
        name is substituted instead, which spares the engine a list per row."""
        if _NAME.fullmatch(value):
            return substitute(body, var, value)
        return self.at(self.transform(self.list_of(value), var, body), "0")

    def single_name(self, lst: str) -> str | None:
        """The name `n` when `lst` is the one-item list of a plain name, else None."""
        inner = self.list_of("\x00")
        head, _, tail = inner.partition("\x00")
        if lst.startswith(head) and lst.endswith(tail):
            name = lst[len(head) : len(lst) - len(tail)]
            if _NAME.fullmatch(name):
                return name
        return None

    def error(self, message: str) -> str:
        raise NotImplementedError

    # --- items
    def item_json(self, text: str) -> str:
        """An item from JSON text written in the query."""
        raise NotImplementedError

    def member(self, item: str, name: str) -> str:
        """The value at key `name` of an object item, NULL when missing or not an object."""
        raise NotImplementedError

    def kind(self, item: str) -> str:
        """'string', 'integer', 'decimal', 'boolean', 'object', 'array' or 'null'."""
        raise NotImplementedError

    def member_string(self, item: str, name: str) -> str:
        """The string at key `name` of an object item (NULL when missing)."""
        raise NotImplementedError

    def member_path(self, item: str, keys: tuple[str, ...]) -> str:
        """The value at a path of keys below an object item (NULL when missing)."""
        raise NotImplementedError

    def items(self, item: str) -> str:
        """A non-NULL item as a list: an array's elements, anything else alone."""
        return (
            f"CASE WHEN {self.kind(item)} = 'array' THEN {self.as_array(item)} "
            f"ELSE {self.list_of(item)} END"
        )

    def drop_null(self, item: str) -> str:
        """The item, or NULL when it is JSON null (FHIRPath has no null item)."""
        raise NotImplementedError

    def with_fields(
        self,
        source: str,
        fields: Mapping[tuple[str, ...], str],
        computed: Mapping[str, str] | None = None,
    ) -> str:
        """`source` (column `resource`) plus one column per key path, named by `fields`,
        holding the value there (NULL when missing or JSON null; each resource parsed once),
        then the `computed` columns (name -> SQL over `resource` and those fields)."""
        out = self.field_columns(source, fields) if fields else source
        if computed:
            extra = ", ".join(f"{sql} AS {name}" for name, sql in computed.items())
            out = f"(SELECT *, {extra} FROM {out} AS _fields)"
        return out

    def field_columns(self, source: str, fields: Mapping[tuple[str, ...], str]) -> str:
        """`with_fields` without computed columns, `fields` not empty."""
        raise NotImplementedError

    def struct_of(self, members: Mapping[str, str]) -> str:
        """A record of named members (name -> SQL value)."""
        raise NotImplementedError

    def struct_get(self, record: str, name: str) -> str:
        """A member of a record."""
        raise NotImplementedError

    def as_array(self, item: str) -> str:
        raise NotImplementedError

    def as_string(self, item: str) -> str:
        raise NotImplementedError

    def as_double(self, item: str) -> str:
        raise NotImplementedError

    def as_bool(self, item: str) -> str:
        raise NotImplementedError

    def text(self, item: str) -> str:
        """The JSON text of an item (a VARCHAR)."""
        raise NotImplementedError

    def from_string(self, value: str) -> str:
        raise NotImplementedError

    def from_bool(self, value: str) -> str:
        raise NotImplementedError

    def from_bigint(self, value: str) -> str:
        raise NotImplementedError

    def from_double(self, value: str) -> str:
        raise NotImplementedError

    def collection_json(self, lst: str) -> str:
        """A collection as one JSON array text (collection columns)."""
        raise NotImplementedError

    null_item = ""

    def collection_item(self, lst: str) -> str:
        """A collection as one item (a JSON array), the value of a collection column."""
        raise NotImplementedError

    def output(self, item: str) -> str:
        """An item as the query returns it: JSON text."""
        raise NotImplementedError

    def ident(self, name: str) -> str:
        raise NotImplementedError

    def explode(self, lst: str) -> str:
        """One output row per list element (a set-returning select item)."""
        raise NotImplementedError

    def typed(self, text: str, column: ColumnInfo) -> str:
        """A column's JSON text as the typed value written files hold (collections stay JSON)."""
        raise NotImplementedError

    #: the resource's JSON text as it was read, in any scope of a compiled view
    resource_text = ""
    #: a JSON string token, as this engine's regular expressions spell it
    json_string = _JSON_STRING

    def stored_places(self, item: str) -> str:
        """How many digits after the point a number item keeps (trailing zeros may be gone)."""
        text = self.text(item)
        return f"CASE WHEN {text} LIKE '%.%' THEN length(split_part({text}, '.', 2)) ELSE 0 END"

    def json_numbers(self, text: str) -> str:
        """The numbers with a fraction written in JSON `text`, as they are written (those
        inside strings left out), a list of strings."""
        outside = f"regexp_replace({text}, {self.lit(self.json_string)}, '\"\"')"
        return f"regexp_extract_all({outside}, {self.lit(_WRITTEN_DECIMAL)}, 0)"

    def list_max(self, lst: str) -> str:
        return f"array_max({lst})"

    #: how deep `repeat` is unrolled (deeper data raises an evaluation error); binding time
    #: grows about 3.5x per level, so this stays small
    repeat_depth = 6

    def regexp_extract(self, text: str, pattern: str, group: int) -> str:
        return f"regexp_extract({text}, {self.lit(pattern)}, {group})"

    def matches(self, text: str, pattern: str) -> str:
        """Whether all of `text` matches the regular expression."""
        return f"({text} RLIKE {self.lit('^' + pattern + '$')})"

    def last_day(self, year: str, month: str) -> str:
        return f"day(last_day(make_date({year}, {month}, 1)))"


class DuckDBDialect(Dialect):
    """DuckDB (1.3+ lambda syntax): items are JSON, lists are JSON[]; indexes are 1-based."""

    name = "duckdb"
    empty = "[]::JSON[]"

    def list_of(self, *items: str) -> str:
        return "[" + ", ".join(items) + "]" if items else self.empty

    def transform(self, lst: str, var: str, body: str) -> str:
        return f"list_transform({lst}, lambda {var}: {body})"

    def transform_indexed(self, lst: str, var: str, index: str, body: str) -> str:
        return f"list_transform({lst}, lambda {var}, {index}: {body})"

    def index0(self, index: str) -> str:
        return f"({index} - 1)"

    def filter(self, lst: str, var: str, body: str) -> str:
        return f"list_filter({lst}, lambda {var}: {body})"

    def filter_indexed(self, lst: str, var: str, index: str, body: str) -> str:
        return f"list_filter({lst}, lambda {var}, {index}: {body})"

    def length(self, lst: str) -> str:
        return f"len({lst})"

    def at(self, lst: str, index0: str) -> str:
        return f"list_extract({lst}, ({index0}) + 1)"

    def concat(self, *lists: str) -> str:
        out = lists[0]
        for other in lists[1:]:
            out = f"list_concat({out}, {other})"
        return out

    def slice(self, lst: str, start0: str, count: str) -> str:
        return f"list_slice({lst}, ({start0}) + 1, ({start0}) + ({count}))"

    def lit(self, text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    def error(self, message: str) -> str:
        return f"error({self.lit(message)})"

    def item_json(self, text: str) -> str:
        return f"{self.lit(text)}::JSON"

    def member(self, item: str, name: str) -> str:
        return f"json_extract({item}, {self.lit('$.' + json.dumps(name))})"

    def kind(self, item: str) -> str:
        return (
            f"CASE json_type({item}) WHEN 'VARCHAR' THEN 'string' WHEN 'BIGINT' THEN 'integer' "
            "WHEN 'UBIGINT' THEN 'integer' WHEN 'DOUBLE' THEN 'decimal' "
            "WHEN 'BOOLEAN' THEN 'boolean' WHEN 'OBJECT' THEN 'object' "
            "WHEN 'ARRAY' THEN 'array' ELSE 'null' END"
        )

    def member_string(self, item: str, name: str) -> str:
        return f"json_extract_string({item}, {self.lit('$.' + json.dumps(name))})"

    def member_path(self, item: str, keys: tuple[str, ...]) -> str:
        return f"json_extract({item}, {self.json_path(keys)})"

    def json_path(self, keys: tuple[str, ...]) -> str:
        return self.lit("$" + "".join("." + json.dumps(k) for k in keys))

    def drop_null(self, item: str) -> str:
        return f"nullif({item}, 'null')"

    def items(self, item: str) -> str:
        # one parse: TRY_CAST gives NULL for anything but an array
        return f"coalesce(TRY_CAST({item} AS JSON[]), [{item}])"

    def field_columns(self, source: str, fields: Mapping[tuple[str, ...], str]) -> str:
        paths = ", ".join(self.json_path(keys) for keys in fields)
        picks = ", ".join(
            f"{self.drop_null(f'list_extract(_p, {n})')} AS {name}"
            for n, name in enumerate(fields.values(), start=1)
        )
        # one json_extract with a list of paths parses the document once for all of them
        return (
            f"(SELECT resource, {picks} FROM (SELECT resource, "
            f"json_extract(resource, [{paths}]) AS _p FROM {source}) AS _parsed)"
        )

    def struct_of(self, members: Mapping[str, str]) -> str:
        pairs = members or {"_": "true"}  # a record needs a member
        return "struct_pack(" + ", ".join(f"{k} := {v}" for k, v in pairs.items()) + ")"

    def struct_get(self, record: str, name: str) -> str:
        return f"struct_extract({record}, {self.lit(name)})"

    def as_array(self, item: str) -> str:
        return f"CAST({item} AS JSON[])"

    def as_string(self, item: str) -> str:
        return f"json_extract_string({item}, '$')"

    def as_double(self, item: str) -> str:
        return f"CAST({item} AS DOUBLE)"

    def as_bool(self, item: str) -> str:
        return f"CAST({item} AS BOOLEAN)"

    def text(self, item: str) -> str:
        return f"CAST({item} AS VARCHAR)"

    def from_string(self, value: str) -> str:
        return f"to_json(CAST({value} AS VARCHAR))"

    def from_bool(self, value: str) -> str:
        return f"to_json(CAST({value} AS BOOLEAN))"

    def from_bigint(self, value: str) -> str:
        return f"to_json(CAST({value} AS BIGINT))"

    def from_double(self, value: str) -> str:
        return f"to_json(CAST({value} AS DOUBLE))"

    def collection_json(self, lst: str) -> str:
        return f"to_json({lst})"

    null_item = "NULL::JSON"

    def collection_item(self, lst: str) -> str:
        return f"to_json({lst})"

    def output(self, item: str) -> str:
        return item

    def ident(self, name: str) -> str:
        return f'"{name}"'

    def explode(self, lst: str) -> str:
        return f"unnest({lst})"

    def typed(self, text: str, column: ColumnInfo) -> str:
        if column.collection:
            return text
        sql_type = SQL_TYPES.get(column.type or "")
        value = f"json_extract_string({text}, '$')"
        return value if sql_type is None else f"TRY_CAST({value} AS {sql_type})"

    def matches(self, text: str, pattern: str) -> str:
        return f"regexp_full_match({text}, {self.lit(pattern)})"

    # a JSON column holds the text it was read from; values taken out of it are rewritten
    # (1.50 comes out as 1.5), so written digits are looked up in the resource's text
    resource_text = "CAST(resource AS VARCHAR)"
    json_string = _JSON_STRING_RE2

    def json_numbers(self, text: str) -> str:
        outside = f"regexp_replace({text}, {self.lit(self.json_string)}, '\"\"', 'g')"
        return f"regexp_extract_all({outside}, {self.lit(_WRITTEN_DECIMAL)})"

    def list_max(self, lst: str) -> str:
        return f"list_max({lst})"


class SparkDialect(Dialect):
    """Spark SQL: items are VARIANT, lists are array<variant>; indexes are 0-based."""

    name = "spark"
    repeat_depth = 4  # planning time grows about 3x per level
    empty = "CAST(array() AS array<variant>)"

    def list_of(self, *items: str) -> str:
        return "array(" + ", ".join(items) + ")" if items else self.empty

    def at(self, lst: str, index0: str) -> str:
        return f"try_element_at({lst}, CAST({index0} AS INT) + 1)"

    def slice(self, lst: str, start0: str, count: str) -> str:
        # slice() rejects a zero length, so an empty range is spelled out
        return (
            f"CASE WHEN ({count}) <= 0 OR ({start0}) >= size({lst}) THEN {self.empty} "
            f"ELSE slice({lst}, CAST({start0} AS INT) + 1, CAST({count} AS INT)) END"
        )

    def error(self, message: str) -> str:
        return f"raise_error({self.lit(message)})"

    def item_json(self, text: str) -> str:
        return f"parse_json({self.lit(text)})"

    def member(self, item: str, name: str) -> str:
        return f"try_variant_get({item}, {self.lit('$[' + json.dumps(name) + ']')})"

    def kind(self, item: str) -> str:
        # the item appears twice only: items are often long expressions
        return (
            f"CASE WHEN is_variant_null({item}) THEN 'null' ELSE coalesce(map('STRING', 'string', "
            "'BIGINT', 'integer', 'INT', 'integer', 'SMALLINT', 'integer', 'TINYINT', 'integer', "
            "'BOOLEAN', 'boolean', 'OBJECT', 'object', 'ARRAY', 'array')"
            f"[regexp_extract(schema_of_variant({item}), '^[A-Z]+', 0)], 'decimal') END"
        )

    # VARIANT drops trailing zeros (1.0 reads back as DECIMAL(1,0)): the written digits come
    # from the resource's text, which Spark's source relation carries beside the VARIANT
    resource_text = RESOURCE_TEXT

    def stored_places(self, item: str) -> str:
        return (
            f"coalesce(CAST(regexp_extract(schema_of_variant({item}), ',([0-9]+)[)]', 1) AS INT), "
            "0)"
        )

    def member_string(self, item: str, name: str) -> str:
        return f"try_variant_get({self.member(item, name)}, '$', 'string')"

    def member_path(self, item: str, keys: tuple[str, ...]) -> str:
        path = "$" + "".join(f"[{json.dumps(k)}]" for k in keys)
        return f"try_variant_get({item}, {self.lit(path)})"

    def drop_null(self, item: str) -> str:
        return f"CASE WHEN is_variant_null({item}) THEN NULL ELSE {item} END"

    def field_columns(self, source: str, fields: Mapping[tuple[str, ...], str]) -> str:
        picks = ", ".join(
            f"{self.drop_null(self.member_path('resource', keys))} AS {name}"
            for keys, name in fields.items()
        )
        return f"(SELECT resource, {RESOURCE_TEXT}, {picks} FROM {source} AS _parsed)"

    def struct_of(self, members: Mapping[str, str]) -> str:
        pairs = members or {"_": "true"}  # a record needs a member
        return "named_struct(" + ", ".join(f"{self.lit(k)}, {v}" for k, v in pairs.items()) + ")"

    def struct_get(self, record: str, name: str) -> str:
        return f"{record}.{name}"

    def as_array(self, item: str) -> str:
        return f"variant_get({item}, '$', 'array<variant>')"

    def as_string(self, item: str) -> str:
        return f"try_variant_get({item}, '$', 'string')"

    def as_double(self, item: str) -> str:
        return f"try_variant_get({item}, '$', 'double')"

    def as_bool(self, item: str) -> str:
        return f"try_variant_get({item}, '$', 'boolean')"

    def text(self, item: str) -> str:
        return f"to_json({item})"

    def from_string(self, value: str) -> str:
        return f"CAST(CAST({value} AS STRING) AS VARIANT)"

    def from_bool(self, value: str) -> str:
        return f"CAST(CAST({value} AS BOOLEAN) AS VARIANT)"

    def from_bigint(self, value: str) -> str:
        return f"CAST(CAST({value} AS BIGINT) AS VARIANT)"

    def from_double(self, value: str) -> str:
        return f"CAST(CAST({value} AS DOUBLE) AS VARIANT)"

    null_item = "CAST(NULL AS VARIANT)"

    def collection_item(self, lst: str) -> str:
        return f"parse_json({self.collection_json(lst)})"

    def output(self, item: str) -> str:
        return f"to_json({item})"

    def ident(self, name: str) -> str:
        return f"`{name}`"

    def explode(self, lst: str) -> str:
        return f"explode({lst})"

    def typed(self, text: str, column: ColumnInfo) -> str:
        if column.collection:
            return text
        sql_type = SQL_TYPES.get(column.type or "", "STRING")
        return f"try_variant_get(parse_json({text}), '$', '{sql_type}')"

    def collection_json(self, lst: str) -> str:
        return f"concat('[', array_join(transform({lst}, x -> to_json(x)), ','), ']')"
