"""The DuckDB view runner: each view is one SQL query over NDJSON files or resources in memory."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import count
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa

from carebase.analytics.ndjson_files import check_files
from carebase.analytics.runner import check_format
from carebase.analytics.sql_compile import SqlCompiler
from carebase.analytics.sql_dialect import DuckDBDialect
from carebase.analytics.sql_scalar import Step
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
#: what DuckDB's JSON reader says when a file's shape differs from the STRUCTs asked for
_SHAPE_ERROR = "JSON transform error"


class _Key:
    """A key the typed reader keeps: read whole as JSON (`keys` None), or as a STRUCT of
    the keys below it; `many` when R4 makes it an array (a LIST of those STRUCTs)."""

    def __init__(self, many: bool) -> None:
        self.many = many
        self.keys: dict[str, _Key] | None = {}

    def sql_type(self) -> str:
        if self.keys is None:
            return "JSON"
        inner = "STRUCT(" + ", ".join(f'"{k}" {v.sql_type()}' for k, v in self.keys.items()) + ")"
        return inner + "[]" if self.many else inner

    def add(self, steps: Sequence[Step], whole: bool) -> None:
        """Keeps the path of `steps` below this key; its last key read whole when `whole`."""
        node = self
        for n, step in enumerate(steps):
            if node.keys is None:  # read whole already: deeper keys come from its JSON
                return
            child = node.keys.setdefault(step.key, _Key(step.many))
            child.many = child.many or step.many
            if n == len(steps) - 1 and whole:
                child.keys = None
            node = child


class _TypedReads:
    """SQL reading pre-extracted fields, lists and element records from the typed reader's
    columns: STRUCT members and LIST transforms, no JSON parsed, down to the keys read
    whole; below those, the generic way (`SqlCompiler.chain`, exact for any JSON)."""

    def __init__(self, d: DuckDBDialect, root: _Key) -> None:
        self.d, self.root = d, root
        self.generic = SqlCompiler(d, ())
        self._names = count()

    def var(self) -> str:
        return f"_w{next(self._names)}"

    def field(self, keys: tuple[str, ...]) -> str:
        """The one value at `keys` (no array on the way), NULL when missing."""
        d, node, sql = self.d, self.root, ""
        for n, key in enumerate(keys):
            assert node.keys is not None
            node = node.keys[key]
            sql = d.ident(key) if n == 0 else f"struct_extract({sql}, {d.lit(key)})"
            if node.keys is None:
                return d.drop_null(d.member_path(sql, keys[n + 1 :]) if keys[n + 1 :] else sql)
        raise AssertionError("a field's last key is read whole")

    def walk(self, value: str, node: _Key, many: bool, steps: Sequence[Step]) -> tuple[str, bool]:
        """(SQL, whether it is JSON items): the values below `value` (one value of `node`,
        or a list of them when `many`) at `steps`: the list of JSON items when the path
        reaches a key read whole, else the list of STRUCTs it reaches."""
        d = self.d
        for n, step in enumerate(steps):
            if node.keys is None:
                return self.items(value, many, steps[n:]), True
            child = node.keys[step.key]
            key = d.lit(step.key)
            if many:
                x = self.var()
                value = f"list_transform({value}, lambda {x}: struct_extract({x}, {key}))"
                if child.many and child.keys is not None:
                    y = self.var()
                    value = f"flatten(list_filter({value}, lambda {y}: {y} IS NOT NULL))"
            else:
                value = f"struct_extract({value}, {key})"
                many = child.many and child.keys is not None
            node = child
        if node.keys is None:
            return self.items(value, many, ()), True
        if not many:
            value = f"CASE WHEN {value} IS NULL THEN [] ELSE [{value}] END"
        y = self.var()
        return f"list_filter(coalesce({value}, []), lambda {y}: {y} IS NOT NULL)", False

    def items(self, value: str, many: bool, steps: Sequence[Step]) -> str:
        """The JSON items of JSON `value` (or of each value of a list), then at `steps`."""
        d, g = self.d, self.generic
        x = g.var()
        lst = d.list_of(value) if not many else f"coalesce({value}, {d.empty})"
        # the reader writes JSON values minified: an array's text starts with "[" (a test of
        # the text, cheaper than json_type, which parses it)
        spread = (
            f"CASE WHEN {x} IS NULL OR {x} = 'null' THEN {d.empty} "
            f"WHEN starts_with({x}, '[') THEN {d.as_array(x)} ELSE {d.list_of(x)} END"
        )
        return g.chain(g.each(lst, spread, x), tuple(steps))

    def walk_root(self, steps: tuple[Step, ...]) -> tuple[str, bool]:
        """`walk` from the typed reader's column of the first step."""
        node = self.root.keys
        assert node is not None
        first = node[steps[0].key]
        many = first.many and first.keys is not None
        return self.walk(self.d.ident(steps[0].key), first, many, steps[1:])

    def records(
        self, steps: tuple[Step, ...], members: Sequence[tuple[tuple[Step, ...], str]]
    ) -> str:
        """The list of the elements at `steps`, each a record of its members' items."""
        d, e = self.d, self.var()
        elements, as_items = self.walk_root(steps)
        node = self._node(steps)
        picks: dict[str, str] = {}
        for rel, name in members:
            if as_items or node is None:
                picks[name] = self.generic.chain(d.list_of(e), rel)
            else:
                picks[name] = self.walk(e, node, False, rel)[0]
        return d.transform(elements, e, d.struct_of(picks))

    def _node(self, steps: tuple[Step, ...]) -> _Key | None:
        node: _Key | None = self.root
        for step in steps:
            if node is None or node.keys is None:
                return None
            node = node.keys[step.key]
        return node if node is not None and node.keys is not None else None


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
        target = f"TO {self.dialect.lit(str(out))} ({_COPY_OPTIONS[fmt]})"
        cursor = self._cursor()
        try:
            result = self.execute_over(
                cursor,
                view,
                paths,
                lambda rows: f"COPY (SELECT * FROM {rows}) {target}",
                containing=containing,
                within=within,
            ).fetchone()
        finally:
            cursor.close()
        return int(result[0]) if result else 0

    def close(self) -> None:
        """Closes the runner's in-memory database (tables made on its cursors go with it)."""
        self._con.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of the runner's in-memory database (tables made on one are seen by all);
        the caller closes it."""
        return self._cursor()

    def execute_over(
        self,
        cursor: duckdb.DuckDBPyConnection,
        view: ViewDefinition | Mapping[str, object],
        paths: Sequence[Path],
        statement: Callable[[str], str],
        *,
        containing: Sequence[str] = (),
        within: Sequence[str] = (),
    ) -> duckdb.DuckDBPyConnection:
        """Executes `statement(rows)` on `cursor`, where `rows` is a parenthesised relation
        of the rows of `view` over NDJSON `paths`, columns typed as written files type them
        (`Dialect.typed`): e.g. a CREATE TABLE that keeps some rows, so rows the caller
        would drop are never stored. Tried over the typed reader first and over whole
        resources when the files' shape refuses it (`containing`, `within`: `write_files`)."""
        query = self.compile(view)
        sqls = [
            statement(f"({sql})")
            for sql in self._file_queries(query, paths, containing, within, typed=True)
        ]
        for n, sql in enumerate(sqls, start=1):
            try:
                return cursor.execute(sql)
            except duckdb.Error as exc:
                if n == len(sqls) or _SHAPE_ERROR not in str(exc):
                    raise translate_error(exc, ", ".join(map(str, paths))) from None
        raise AssertionError("no query to run")  # _file_queries gives at least one

    def _file_queries(
        self,
        query: ViewQuery,
        paths: Sequence[Path],
        containing: Sequence[str] = (),
        within: Sequence[str] = (),
        *,
        typed: bool = False,
    ) -> list[str]:
        """`query` over NDJSON files, fastest first. When the query reads only fields,
        DuckDB's JSON reader keeps just their keys, objects on the way typed as STRUCTs (R4
        shape); a file of another shape makes that reader fail, and the next query (whole
        resources, exact for any JSON) is the one to use. `containing`: `write_files`."""
        files = check_files(paths)
        d = self.dialect
        if not files:
            return [query.over("(SELECT NULL::JSON AS resource WHERE false)", typed=typed)]
        listed = ", ".join(d.lit(str(p)) for p in files)
        exact = query.over(
            f"(SELECT json AS resource FROM read_json_objects([{listed}], "
            f"format = 'newline_delimited') WHERE {_contains(d, 'json', containing)})",
            typed=typed,
        )
        if query.needs_resource or not query.fields:
            return [exact]
        root = _Key(False)
        for keys, _ in query.fields:
            root.add([Step(k, False) for k in keys], True)
        for steps, _ in query.lists:
            root.add(steps, True)
        for steps, _, members in query.groups:
            root.add(steps, not members)
            for rel, _ in members:
                root.add([*steps, *rel], True)
        assert root.keys is not None
        columns = ", ".join(f"{d.lit(k)}: {d.lit(v.sql_type())}" for k, v in root.keys.items())
        reads = _TypedReads(d, root)
        picks = ", ".join(
            [f"{reads.field(keys)} AS {name}" for keys, name in query.fields]
            + [f"{reads.walk_root(steps)[0]} AS {name}" for steps, name in query.lists]
            + [
                f"{reads.records(steps, members)} AS {name}"
                for steps, name, members in query.groups
            ]
        )
        read = [(keys[0], n) for keys, n in query.fields]
        read += [(steps[0].key, n) for steps, n in query.lists]
        read += [(steps[0].key, n) for steps, n, _ in query.groups]
        searched = [n for key, n in read if key in within] or [n for _, n in read]
        text = "concat_ws(',', " + ", ".join(f"CAST({n} AS VARCHAR)" for n in searched) + ")"
        shaped = query.over_fields(
            f"(SELECT * FROM (SELECT {picks} FROM read_json([{listed}], "
            f"format = 'newline_delimited', columns = {{{columns}}})) "
            f"WHERE {_contains(d, text, containing)})",
            typed=typed,
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
