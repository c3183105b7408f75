"""The view-runner extension point: an abstract ViewRunner, a registry and `get_runner(name)`."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from carebase.analytics.ndjson_files import iter_resources
from carebase.analytics.view_model import ViewDefinition, parse_view_definition
from carebase.errors import BadRequest

#: output formats `write_files` accepts
OUTPUT_FORMATS = ("csv", "parquet", "ndjson", "json")

#: engine name -> "module:Class"; engines register here so the factory can import them lazily
#: (DuckDB and Spark are optional dependencies)
_RUNNERS: dict[str, str] = {
    "python": "carebase.analytics.python_runner:PythonRunner",
    "duckdb": "carebase.analytics.duckdb_runner:DuckDBRunner",
    "spark": "carebase.analytics.spark_runner:SparkRunner",
}


class ViewRunner(ABC):
    """Runs a ViewDefinition over FHIR resources (JSON dicts) and yields rows.

    `run` yields each row as a dict whose keys are `view.column_names` in that order; values
    are FHIR JSON primitives (str, int, float, bool) or None, and lists for `collection`
    columns. Resources of other types than `view.resource` are skipped. Errors: a bad view
    raises ViewDefinitionError (400); data a valid view cannot turn into rows raises
    ViewEvaluationError (422).
    """

    #: the engine name `get_runner` knows it by
    name: str = ""

    @abstractmethod
    def run(
        self, view: ViewDefinition | Mapping[str, object], resources: Iterable[dict[str, object]]
    ) -> Iterator[dict[str, object]]:
        """Rows of `view` over `resources`, lazily."""

    def run_files(
        self, view: ViewDefinition | Mapping[str, object], paths: Sequence[Path]
    ) -> Iterator[dict[str, object]]:
        """Rows of `view` over the resources of NDJSON files (`.ndjson`, `.ndjson.gz`, `.json`
        lines). This default streams the files through `run`; engines that read files
        natively override it. A missing or malformed file raises BadRequest naming it."""
        return self.run(view, iter_resources(paths))

    def write_files(
        self,
        view: ViewDefinition | Mapping[str, object],
        paths: Sequence[Path],
        fmt: str,
        out: Path,
    ) -> int | None:
        """Writes the rows of `view` over NDJSON `paths` to `out` in `fmt` (one of
        OUTPUT_FORMATS) natively and returns the row count, or returns None when this engine
        has no native writer (the caller then writes the rows of `run_files` itself)."""
        check_format(fmt)
        return None

    @staticmethod
    def parse(view: ViewDefinition | Mapping[str, object]) -> ViewDefinition:
        """`view` parsed when given as JSON (helper for implementations)."""
        return view if isinstance(view, ViewDefinition) else parse_view_definition(view)


def check_format(fmt: str) -> str:
    """`fmt` when it is one of OUTPUT_FORMATS, else BadRequest naming the known ones."""
    if fmt not in OUTPUT_FORMATS:
        raise BadRequest(
            f"unknown output format {fmt!r}; known formats: {', '.join(OUTPUT_FORMATS)}",
            location="format",
        )
    return fmt


def register_runner(name: str, target: str) -> None:
    """Make `get_runner(name)` build the class at `target` ("package.module:ClassName")."""
    _RUNNERS[name] = target


def runner_names() -> tuple[str, ...]:
    """Names `get_runner` accepts."""
    return tuple(sorted(_RUNNERS))


def get_runner(name: str = "python") -> ViewRunner:
    """A new runner of the named engine; BadRequest naming the known engines otherwise."""
    target = _RUNNERS.get(name)
    if target is None:
        raise BadRequest(
            f"unknown view engine {name!r}; known engines: {', '.join(runner_names())}",
            location="engine",
        )
    module_name, _, class_name = target.partition(":")
    runner_class = getattr(importlib.import_module(module_name), class_name)
    runner = runner_class()
    if not isinstance(runner, ViewRunner):
        raise TypeError(f"{target} is not a ViewRunner")
    return runner
