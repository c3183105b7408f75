"""The DuckDB view runner: each view is one SQL query over NDJSON files or resources in memory."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa

from carebase.analytics.ndjson_files import check_files
from carebase.analytics.runner import ViewRunner, check_format
from carebase.analytics.sql_dialect import DuckDBDialect
from carebase.analytics.sql_view import ViewQuery, compile_view_query, translate_error
from carebase.analytics.view_model import ViewDefinition

_COPY_OPTIONS = {
    "parquet": "FORMAT parquet",
    "csv": "FORMAT csv, HEADER true",
    "ndjson": "FORMAT json",
    "json": "FORMAT json, ARRAY true",
}
#: rows fetched from DuckDB per batch while streaming
_BATCH = 10_000


class DuckDBRunner(ViewRunner):
    """Compiles each view to one DuckDB query; files are read by DuckDB itself, in parallel."""

    name = "duckdb"

    def __init__(self, threads: int | None = None) -> None:
        self._con = duckdb.connect(":memory:")
        if threads is not None:
            self._con.execute(f"SET threads = {int(threads)}")
        self._lock = threading.Lock()  # the connection is shared; each run takes a cursor
        self.dialect = DuckDBDialect()

    def compile(self, view: ViewDefinition | Mapping[str, object]) -> ViewQuery:
        """The query of `view` (for inspection and reuse)."""
        return compile_view_query(self.parse(view), self.dialect)

    def run(
        self, view: ViewDefinition | Mapping[str, object], resources: Iterable[dict[str, object]]
    ) -> Iterator[dict[str, object]]:
        """Rows of `view` over in-memory resources (loaded into DuckDB as one JSON column)."""
        query = self.compile(view)
        texts = [orjson.dumps(r).decode() for r in resources]
        table = pa.table({"resource": pa.array(texts, type=pa.string())})
        sql = query.over("(SELECT CAST(resource AS JSON) AS resource FROM src)")
        return self._stream(query, sql, table, "resources in memory")

    def run_files(
        self, view: ViewDefinition | Mapping[str, object], paths: Sequence[Path]
    ) -> Iterator[dict[str, object]]:
        """Rows of `view` over NDJSON files, read and flattened by DuckDB."""
        query = self.compile(view)
        sql = self._file_query(query, paths)
        return self._stream(query, sql, None, ", ".join(map(str, paths)))

    def write_files(
        self,
        view: ViewDefinition | Mapping[str, object],
        paths: Sequence[Path],
        fmt: str,
        out: Path,
    ) -> int | None:
        """COPY the rows of `view` over NDJSON `paths` to `out` (csv, parquet, ndjson, json);
        returns the number of rows written."""
        check_format(fmt)
        query = self.compile(view)
        picks = ", ".join(
            f"{self.dialect.typed(self.dialect.ident(c.name), c)} AS {self.dialect.ident(c.name)}"
            for c in query.columns
        )
        sql = (
            f"COPY (SELECT {picks} FROM ({self._file_query(query, paths)})) "
            f"TO {self.dialect.lit(str(out))} ({_COPY_OPTIONS[fmt]})"
        )
        cursor = self._cursor()
        try:
            result = cursor.execute(sql).fetchone()
        except duckdb.Error as exc:
            raise translate_error(exc, ", ".join(map(str, paths))) from None
        finally:
            cursor.close()
        return int(result[0]) if result else 0

    def _file_query(self, query: ViewQuery, paths: Sequence[Path]) -> str:
        """`query` over NDJSON files: when it reads only fields, DuckDB's typed JSON reader
        keeps just the top-level keys they start from (much less to copy than whole lines)."""
        files = check_files(paths)
        d = self.dialect
        if not files:
            return query.over("(SELECT NULL::JSON AS resource WHERE false)")
        listed = ", ".join(d.lit(str(p)) for p in files)
        if query.needs_resource or not query.fields:
            return query.over(
                f"(SELECT json AS resource FROM read_json_objects([{listed}], "
                "format = 'newline_delimited'))"
            )
        tops = sorted({keys[0] for keys, _ in query.fields})
        columns = ", ".join(f"{d.lit(k)}: 'JSON'" for k in tops)
        picks = ", ".join(
            f"{d.drop_null(d.ident(keys[0]) if len(keys) == 1 else d.member_path(d.ident(keys[0]), keys[1:]))} AS {name}"
            for keys, name in query.fields
        )
        return query.over_fields(
            f"(SELECT {picks} FROM read_json([{listed}], format = 'newline_delimited', "
            f"columns = {{{columns}}}))"
        )

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self._con.cursor()

    def _stream(
        self, query: ViewQuery, sql: str, table: pa.Table | None, where: str
    ) -> Iterator[dict[str, object]]:
        cursor = self._cursor()
        names = [c.name for c in query.columns]
        loads = orjson.loads
        try:
            if table is not None:
                cursor.register("src", table)
            result = cursor.execute(sql)
            while True:
                batch = result.fetchmany(_BATCH)
                if not batch:
                    break
                for row in batch:
                    yield {
                        name: None if value is None else loads(value)
                        for name, value in zip(names, row, strict=True)
                    }
        except duckdb.Error as exc:
            raise translate_error(exc, where) from None
        finally:
            cursor.close()
