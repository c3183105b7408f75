"""The DuckDB view runner: each view is one SQL query over NDJSON files or resources in memory."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from carebase.analytics.ndjson_files import check_files
from carebase.analytics.runner import check_format
from carebase.analytics.sql_dialect import DuckDBDialect
from carebase.analytics.sql_view import SqlViewRunner, ViewQuery, translate_error
from carebase.analytics.view_model import ViewDefinition
from carebase.fhir.json_io import dumps

_COPY_OPTIONS = {
    "parquet": "FORMAT parquet",
    "csv": "FORMAT csv, HEADER true",
    "ndjson": "FORMAT json",
    "json": "FORMAT json, ARRAY true",
}
#: rows fetched from DuckDB per batch while streaming
_BATCH = 10_000
#: a key read whole as JSON (its own field), in the tree of keys the typed reader keeps
_LEAF: dict[str, Any] = {}
#: what DuckDB's JSON reader says when a file's shape differs from the STRUCTs asked for
_SHAPE_ERROR = "JSON transform error"


def _sql_type(node: dict[str, Any]) -> str:
    if node is _LEAF:
        return "JSON"
    return "STRUCT(" + ", ".join(f'"{k}" {_sql_type(v)}' for k, v in node.items()) + ")"


def _access(d: DuckDBDialect, tree: dict[str, Any], keys: tuple[str, ...]) -> str:
    """The SQL reading `keys` from the typed reader's columns."""
    node, sql = tree[keys[0]], d.ident(keys[0])
    for n, key in enumerate(keys[1:], start=1):
        if node is _LEAF:
            return d.member_path(sql, keys[n:])
        node, sql = node[key], f"struct_extract({sql}, {d.lit(key)})"
    return sql


def _contains(d: DuckDBDialect, text: str, strings: Sequence[str]) -> str:
    """SQL: `text` holds one of `strings` or a backslash (true when there are none); one
    regular expression of literals, one pass over the text (cheaper than a `contains` each)."""
    if not strings:
        return "true"
    pattern = "|".join(re.escape(s) for s in (*dict.fromkeys(strings), "\\"))
    return f"regexp_matches({text}, {d.lit(pattern)})"


class DuckDBRunner(SqlViewRunner):
    """Compiles each view to one DuckDB query; files are read by DuckDB itself, in parallel."""

    name = "duckdb"

    def __init__(self, threads: int | None = None) -> None:
        self._con = duckdb.connect(":memory:")
        if threads is not None:
            self._con.execute(f"SET threads = {int(threads)}")
        self._lock = threading.Lock()  # the connection is shared; each run takes a cursor
        self.dialect: DuckDBDialect = DuckDBDialect()

    def run(
        self, view: ViewDefinition | Mapping[str, object], resources: Iterable[dict[str, object]]
    ) -> Iterator[dict[str, object]]:
        """Rows of `view` over in-memory resources (loaded into DuckDB as one JSON column)."""
        query = self.compile(view)
        texts = [dumps(r).decode() for r in resources]
        table = pa.table({"resource": pa.array(texts, type=pa.string())})
        sql = query.over("(SELECT CAST(resource AS JSON) AS resource FROM src)")
        return self._stream(query, [sql], table, "resources in memory")

    def run_files(
        self, view: ViewDefinition | Mapping[str, object], paths: Sequence[Path]
    ) -> Iterator[dict[str, object]]:
        """Rows of `view` over NDJSON files, read and flattened by DuckDB."""
        query = self.compile(view)
        sqls = self._file_queries(query, paths)
        return self._stream(query, sqls, None, ", ".join(map(str, paths)))

    def write_files(
        self,
        view: ViewDefinition | Mapping[str, object],
        paths: Sequence[Path],
        fmt: str,
        out: Path,
        *,
        containing: Sequence[str] = (),
        within: Sequence[str] = (),
    ) -> int | None:
        """COPY the rows of `view` over NDJSON `paths` to `out` (csv, parquet, ndjson, json);
        returns the number of rows written.

        `containing` pre-selects resources by text before the view's (far costlier) columns
        are computed: a resource is flattened only when its JSON text contains one of the
        strings, or any backslash escape (an escaped character could spell one). With the
        typed reader the text searched is the fields the view reads of the top-level elements
        `within` (of all it reads when empty or when it reads none of them); with whole
        resources it is the whole resource. It is a superset, not a filter: callers that want,
        say, the rows of some codes pass `"<code>"` and still test the rows' codes."""
        check_format(fmt)
        query = self.compile(view)
        picks = ", ".join(
            f"{self.dialect.typed(self.dialect.ident(c.name), c)} AS {self.dialect.ident(c.name)}"
            for c in query.columns
        )
        sqls = [
            f"COPY (SELECT {picks} FROM ({sql})) "
            f"TO {self.dialect.lit(str(out))} ({_COPY_OPTIONS[fmt]})"
            for sql in self._file_queries(query, paths, containing, within)
        ]
        cursor = self._cursor()
        try:
            for n, sql in enumerate(sqls, start=1):
                try:
                    result = cursor.execute(sql).fetchone()
                    break
                except duckdb.Error as exc:
                    if n == len(sqls) or _SHAPE_ERROR not in str(exc):
                        raise translate_error(exc, ", ".join(map(str, paths))) from None
        finally:
            cursor.close()
        return int(result[0]) if result else 0

    def _file_queries(
        self,
        query: ViewQuery,
        paths: Sequence[Path],
        containing: Sequence[str] = (),
        within: Sequence[str] = (),
    ) -> list[str]:
        """`query` over NDJSON files, fastest first. When the query reads only fields,
        DuckDB's JSON reader keeps just their keys, objects on the way typed as STRUCTs (R4
        shape); a file of another shape makes that reader fail, and the next query (whole
        resources, exact for any JSON) is the one to use. `containing`: `write_files`."""
        files = check_files(paths)
        d = self.dialect
        if not files:
            return [query.over("(SELECT NULL::JSON AS resource WHERE false)")]
        listed = ", ".join(d.lit(str(p)) for p in files)
        exact = query.over(
            f"(SELECT json AS resource FROM read_json_objects([{listed}], "
            f"format = 'newline_delimited') WHERE {_contains(d, 'json', containing)})"
        )
        if query.needs_resource or not query.fields:
            return [exact]
        tree: dict[str, Any] = {}
        for keys, _ in query.fields:
            node = tree
            for key in keys[:-1]:
                node = node.setdefault(key, {})
                if node is _LEAF:  # already read whole: deeper keys come from its JSON
                    break
            else:
                node[keys[-1]] = _LEAF
        columns = ", ".join(f"{d.lit(k)}: {d.lit(_sql_type(v))}" for k, v in tree.items())
        picks = ", ".join(
            f"{d.drop_null(_access(d, tree, keys))} AS {name}" for keys, name in query.fields
        )
        searched = [n for keys, n in query.fields if keys[0] in within] or [
            n for _, n in query.fields
        ]
        text = "concat_ws(',', " + ", ".join(f"CAST({n} AS VARCHAR)" for n in searched) + ")"
        shaped = query.over_fields(
            f"(SELECT * FROM (SELECT {picks} FROM read_json([{listed}], "
            f"format = 'newline_delimited', columns = {{{columns}}})) "
            f"WHERE {_contains(d, text, containing)})"
        )
        return [shaped, exact]

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self._con.cursor()

    def _stream(
        self, query: ViewQuery, sqls: list[str], table: pa.Table | None, where: str
    ) -> Iterator[dict[str, object]]:
        """Rows of the first of `sqls` that runs; a later one is tried only when the
        typed reader rejected the files' shape before any row was given out."""
        cursor = self._cursor()
        names = [c.name for c in query.columns]
        loads = orjson.loads
        given = False
        try:
            if table is not None:
                cursor.register("src", table)
            for n, sql in enumerate(sqls, start=1):
                try:
                    result = cursor.execute(sql)
                    while batch := result.fetchmany(_BATCH):
                        for row in batch:
                            given = True
                            yield {
                                name: None if value is None else loads(value)
                                for name, value in zip(names, row, strict=True)
                            }
                    return
                except duckdb.Error as exc:
                    if given or n == len(sqls) or _SHAPE_ERROR not in str(exc):
                        raise translate_error(exc, where) from None
        finally:
            cursor.close()
