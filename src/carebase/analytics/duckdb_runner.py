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
        return self._stream(query, "(SELECT CAST(resource AS JSON) AS resource FROM src)", table)

    def run_files(
        self, view: ViewDefinition | Mapping[str, object], paths: Sequence[Path]
    ) -> Iterator[dict[str, object]]:
        """Rows of `view` over NDJSON files, read and flattened by DuckDB."""
        query = self.compile(view)
        return self._stream(query, self._file_source(paths), None)

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
            f"COPY (SELECT {picks} FROM ({query.over(self._file_source(paths))})) "
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

    def _file_source(self, paths: Sequence[Path]) -> str:
        files = check_files(paths)
        if not files:
            return "(SELECT NULL::JSON AS resource WHERE false)"
        listed = ", ".join(self.dialect.lit(str(p)) for p in files)
        return (
            f"(SELECT json AS resource FROM read_json_objects([{listed}], "
            "format = 'newline_delimited'))"
        )

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self._con.cursor()

    def _stream(
        self, query: ViewQuery, source: str, table: pa.Table | None
    ) -> Iterator[dict[str, object]]:
        cursor = self._cursor()
        names = [c.name for c in query.columns]
        loads = orjson.loads
        try:
            if table is not None:
                cursor.register("src", table)
            result = cursor.execute(query.over(source))
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
            raise translate_error(exc, source) from None
        finally:
            cursor.close()
