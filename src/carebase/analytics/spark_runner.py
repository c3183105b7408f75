"""The Spark view runner: views compiled to Spark SQL over VARIANT, on a local SparkSession."""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from carebase.analytics.ndjson_files import check_files
from carebase.analytics.runner import check_format
from carebase.analytics.sql_dialect import RESOURCE_TEXT, SparkDialect
from carebase.analytics.sql_view import SqlViewRunner, ViewQuery, translate_error
from carebase.analytics.view_model import ViewDefinition
from carebase.errors import Unsupported
from carebase.fhir.json_io import dumps

_SESSION: Any = None
_SESSION_LOCK = threading.Lock()
_VIEW_NAMES = itertools.count()
#: Spark writers by output format (a JSON array is not something Spark writes)
_WRITERS = {"parquet": "parquet", "csv": "csv", "ndjson": "json"}


#: session settings (Spark configuration keys) that `configure_session` changed
_SETTINGS: dict[str, str] = {}


def configure_session(settings: Mapping[str, str]) -> None:
    """Spark settings for the session not yet started, over the defaults of `spark_session`
    (the tests, for one, ask for a single core and a JVM that compiles code quickly)."""
    with _SESSION_LOCK:
        if _SESSION is not None and any(
            _SESSION.conf.get(k, None) != v for k, v in settings.items()
        ):
            raise RuntimeError("the Spark session has already started with other settings")
        _SETTINGS.update(settings)


def spark_session() -> Any:
    """The process's local SparkSession (local[2], no UI, quiet, or as `configure_session`
    set it), started once, stopped at exit."""
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None:
            try:
                from pyspark.sql import SparkSession
            except ImportError as exc:
                raise Unsupported(
                    "the spark view engine needs pyspark: pip install 'carebase[spark]'"
                ) from exc
            # local mode only: bind to loopback, no UI, no network
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            settings = {
                "spark.master": "local[2]",
                "spark.app.name": "carebase-views",
                "spark.ui.enabled": "false",
                "spark.ui.showConsoleProgress": "false",
                "spark.sql.shuffle.partitions": "2",
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.driver.host": "127.0.0.1",
                "spark.sql.ansi.enabled": "false",
                "spark.log.structuredLogging.enabled": "false",
                # compiled views are deep expressions; skip whole-stage codegen's 64 KB limit
                "spark.sql.codegen.wholeStage": "false",
                **_SETTINGS,
            }
            builder = SparkSession.builder
            for key, value in settings.items():
                builder = builder.config(key, value)
            session = builder.getOrCreate()
            session.sparkContext.setLogLevel("OFF")
            atexit.register(session.stop)
            _SESSION = session
        return _SESSION


def _spark_errors() -> tuple[type[Exception], ...]:
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    return (PySparkException, Py4JJavaError)


class SparkRunner(SqlViewRunner):
    """Runs each view as one Spark SQL query; the session starts on first use."""

    name = "spark"

    def __init__(self) -> None:
        self.dialect = SparkDialect()

    def run(
        self, view: ViewDefinition | Mapping[str, object], resources: Iterable[dict[str, object]]
    ) -> Iterator[dict[str, object]]:
        """Rows of `view` over in-memory resources, sent to Spark as JSON text in an Arrow
        table: Spark keeps such data as a local relation on the driver, so small inputs
        need no job at all (a parallelised list would cost one with a task per core). Only
        resources of the view's type are sent (the query would drop the others)."""
        parsed = self.parse(view)
        query = self.compile(parsed)
        spark = spark_session()
        kept = (r for r in resources if r.get("resourceType") == parsed.resource)
        texts = pa.array([dumps(r).decode() for r in kept], type=pa.string())
        frame = spark.createDataFrame(pa.table({"value": texts}))
        return self._stream(query, frame, "resources in memory")

    def run_files(
        self, view: ViewDefinition | Mapping[str, object], paths: Sequence[Path]
    ) -> Iterator[dict[str, object]]:
        """Rows of `view` over NDJSON files read by Spark."""
        query = self.compile(view)
        return self._stream(query, self._read(paths), ", ".join(map(str, paths)))

    def write_files(
        self,
        view: ViewDefinition | Mapping[str, object],
        paths: Sequence[Path],
        fmt: str,
        out: Path,
    ) -> int | None:
        """Writes parquet, csv or ndjson with Spark's writers into one file at `out` and returns
        the row count; None for `json` (a JSON array), which the caller writes from rows."""
        check_format(fmt)
        if fmt not in _WRITERS:
            return None
        query = self.compile(view)
        frame = self._frame(query, self._read(paths))
        frame = frame.selectExpr(
            *(
                f"{self.dialect.typed(self.dialect.ident(c.name), c)} AS {c.name}"
                for c in query.columns
            )
        )
        where = ", ".join(map(str, paths))
        staging = Path(tempfile.mkdtemp(prefix="carebase-spark-", dir=Path(out).parent))
        try:
            try:
                frame = frame.cache()
                rows = frame.count()
                writer = frame.coalesce(1).write.mode("overwrite")
                if fmt == "csv":
                    writer = writer.option("header", "true")
                getattr(writer, _WRITERS[fmt])(str(staging / "out"))
            except _spark_errors() as exc:
                raise translate_error(exc, where) from None
            finally:
                frame.unpersist()
            (part,) = [p for p in (staging / "out").glob("part-*") if not p.name.endswith(".crc")]
            shutil.move(str(part), str(out))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return int(rows)

    def _read(self, paths: Sequence[Path]) -> Any:
        files = check_files(paths)
        spark = spark_session()
        if not files:
            return spark.createDataFrame([], "value string")
        return spark.read.text([str(p) for p in files])

    def _frame(self, query: ViewQuery, text_frame: Any) -> Any:
        spark = spark_session()
        name = f"carebase_src_{next(_VIEW_NAMES)}"
        text_frame.createOrReplaceTempView(name)
        source = (
            f"(SELECT parse_json(value) AS resource, value AS {RESOURCE_TEXT} FROM {name} "
            "WHERE trim(value) <> '')"
        )
        return spark.sql(query.over(source))

    def _stream(self, query: ViewQuery, text_frame: Any, where: str) -> Iterator[dict[str, object]]:
        names = [c.name for c in query.columns]
        loads = orjson.loads
        try:
            rows = self._frame(query, text_frame).collect()
        except _spark_errors() as exc:
            raise translate_error(exc, where) from None
        for row in rows:
            yield {
                name: None if value is None else loads(value)
                for name, value in zip(names, row, strict=True)
            }
