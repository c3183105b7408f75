"""`carebase view run|list`: run a SQL on FHIR ViewDefinition over NDJSON files or a database."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from carebase.analytics.ndjson_files import NDJSON_SUFFIXES
from carebase.analytics.output import FORMATS, write_rows
from carebase.analytics.runner import ViewRunner, get_runner, runner_names
from carebase.analytics.view_errors import ViewDefinitionError
from carebase.analytics.view_model import ViewDefinition, parse_view_definition
from carebase.analytics.views import load_view, view_names
from carebase.cli.options import DatabaseOption, friendly_errors, opened_store
from carebase.errors import BadRequest, NotFound

group = typer.Typer(help="SQL on FHIR views: run a ViewDefinition, list the library views.")
err = Console(stderr=True, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the `view` command group to the app."""
    app.add_typer(group, name="view", no_args_is_help=True)


@group.command("list")
def list_views() -> None:
    """List the ViewDefinitions shipped with carebase (use a name as VIEW in `view run`)."""
    table = Table("name", "resource", "columns", "title")
    for name in view_names():
        view = load_view(name)
        parsed = parse_view_definition(view)
        table.add_row(name, parsed.resource, str(len(parsed.columns)), view.get("title"))
    Console(soft_wrap=True).print(table)


@group.command("run")
def run(
    view: Annotated[
        str, typer.Argument(help="A ViewDefinition JSON file, or a library view name.")
    ],
    source: Annotated[
        list[Path] | None,
        typer.Option(help="NDJSON file(s) (.ndjson, .ndjson.gz...) or directories of them."),
    ] = None,
    database: DatabaseOption = None,
    engine: Annotated[
        str, typer.Option(help=f"View engine: {', '.join(runner_names())}.")
    ] = "python",
    fmt: Annotated[
        str | None,
        typer.Option("--format", help=f"{', '.join(FORMATS)} (default: from --out, else csv)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output file (default: standard output; not for parquet).")
    ] = None,
) -> None:
    """Run a view over NDJSON files (--source) or the store's resources (--database) and
    write its rows as csv, parquet, ndjson or json."""
    with friendly_errors():
        parsed, chosen = _view(view), _format(fmt, out)
        runner = get_runner(engine)
        if source and database:
            raise BadRequest("Give --source or --database, not both", location="--source")
        if not source and database is None:
            raise BadRequest("Say where the data is: --source FILES... or --database URL")
        if chosen == "parquet" and out is None:
            raise BadRequest("parquet output needs --out FILE", location="--out")
    if source:
        with friendly_errors():
            paths = ndjson_paths(source, parsed.resource)
            count = _write(
                parsed, chosen, out, lambda: runner.run_files(parsed, paths), runner, paths
            )
    else:
        with opened_store(database) as store:
            resources = (
                orjson.loads(s.body) for s in store.iter_current(parsed.resource) if s.body
            )
            count = _write(parsed, chosen, out, lambda: runner.run(parsed, resources))
    where = str(out) if out else "standard output"
    err.print(f"{count} rows of {parsed.name or view} written to {escape(where)} ({chosen}).")


def _view(argument: str) -> ViewDefinition:
    """The view a VIEW argument names: a JSON file, else a library view."""
    path = Path(argument)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise NotFound(f"{path}: no such ViewDefinition file", location=str(path))
        try:
            doc = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"{path}: not valid JSON ({exc})", location=str(path)) from None
        try:
            return parse_view_definition(doc)
        except ViewDefinitionError as exc:
            raise BadRequest(f"{path}: {exc.message}", location=exc.location) from None
    return parse_view_definition(load_view(argument))


def _format(fmt: str | None, out: Path | None) -> str:
    if fmt is None:
        suffix = out.suffix.lstrip(".").lower() if out else ""
        return suffix if suffix in FORMATS else "csv"
    if fmt not in FORMATS:
        raise BadRequest(f"--format {fmt!r}: use one of {', '.join(FORMATS)}", location="--format")
    return fmt


def ndjson_paths(sources: Iterable[Path], resource: str) -> list[Path]:
    """The NDJSON files to read: files as given; for a directory its NDJSON files, only those
    named after the view's resource type (`Patient.ndjson`, `Patient-1.ndjson.gz`, as Bulk
    Data export writes them) when there are such."""
    paths: list[Path] = []
    for source in sources:
        if not source.exists():
            raise NotFound(f"{source}: no such file or directory", location=str(source))
        if not source.is_dir():
            paths.append(source)
            continue
        found = sorted(p for p in source.iterdir() if p.name.endswith(NDJSON_SUFFIXES))
        named = [p for p in found if p.name.split(".")[0].split("-")[0] == resource]
        if not found:
            raise NotFound(f"{source}: holds no NDJSON files", location=str(source))
        paths.extend(named or found)
    return paths


def _write(
    view: ViewDefinition,
    fmt: str,
    out: Path | None,
    rows: Any,
    runner: ViewRunner | None = None,
    paths: list[Path] | None = None,
) -> int:
    """Write the rows with a progress display on stderr; a failed run leaves no file."""
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err
    ) as progress:
        task = progress.add_task(f"Running {view.name or view.resource} view", total=None)
        try:
            if runner is not None and paths is not None and out is not None:
                native = runner.write_files(view, paths, fmt, out)
                if native is not None:
                    return native

            def counted(source: Iterable[Mapping[str, object]]) -> Iterator[Mapping[str, object]]:
                for n, row in enumerate(source, start=1):
                    if n % 1000 == 0:
                        progress.update(task, description=f"{n} rows")
                    yield row

            if out is None:
                return write_rows(view, counted(rows()), fmt, sys.stdout.buffer)
            with out.open("wb") as handle:
                return write_rows(view, counted(rows()), fmt, handle)
        except BaseException:
            if out is not None:
                out.unlink(missing_ok=True)
            raise
