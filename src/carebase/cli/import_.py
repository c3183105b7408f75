"""`carebase import`: load FHIR Bundles, NDJSON and archives of them into the database."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from carebase.cli.options import DatabaseOption, err_console, opened_store, settings_for
from carebase.data.import_progress import Checkpoint
from carebase.data.import_report import ImportReport
from carebase.data.importer import Importer, ImportProgress
from carebase.data.loader import DEFAULT_BATCH, LoadSummary
from carebase.data.sources import UnreadablePath, input_files

DEFAULT_REPORT = "carebase-import-report.json"


def default_workers() -> int:
    """One worker beside the writer when there is a second core, else none."""
    return 1 if (os.cpu_count() or 1) > 1 else 0


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command("import")
    def import_(
        paths: Annotated[
            list[str],
            typer.Argument(
                help="Files or directories: Bundles (.json), NDJSON (.ndjson, .jsonl), their "
                ".gz, and .tar.gz/.tgz/.tar archives of them.",
                show_default=False,
            ),
        ],
        database: DatabaseOption = None,
        report: Annotated[
            Path,
            typer.Option(help="OperationOutcome file listing every rejected record."),
        ] = Path(DEFAULT_REPORT),
        batch_size: Annotated[
            int, typer.Option(min=1, help="Resources written per transaction.")
        ] = DEFAULT_BATCH,
        workers: Annotated[
            int,
            typer.Option(
                min=0,
                help="Worker processes parsing, validating and indexing ahead of the writer"
                " (0: none, all in one process).",
            ),
        ] = default_workers(),
        restart: Annotated[
            bool,
            typer.Option(
                "--restart", help="Read every input again even if an interrupted run committed it."
            ),
        ] = False,
    ) -> None:
        """Import FHIR resources (idempotent: unchanged resources are not written again).
        Safe to interrupt and run again: it resumes after the files already committed."""
        try:
            files = input_files(paths)
        except UnreadablePath as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from None
        if not files:
            err_console.print("[red]error:[/red] no input files found in the given paths")
            raise typer.Exit(2)
        console = Console(soft_wrap=True)  # summary lines stay whole in pipes and logs
        url = settings_for(database).resolved_database_url
        checkpoint = Checkpoint(report.with_name(report.name + ".progress"), url)
        try:
            out = ImportReport(report)
        except OSError as exc:
            err_console.print(f"[red]error:[/red] cannot write the report {report}: {exc}")
            raise typer.Exit(2) from None
        # The FHIR definitions loaded so far are a large graph of objects that live as long
        # as the process: taking them out of the collector's generations saves it walking
        # them again and again while millions of short-lived dicts come and go (about 10%).
        gc.collect()
        gc.freeze()
        started = time.perf_counter()
        with opened_store(database) as store:
            applied = store.migrate()
            if applied:
                console.print(f"Applied migrations {applied} first.")
            importer = Importer(
                store,
                batch_size=batch_size,
                on_rejected=out.add,
                checkpoint=checkpoint,
                resume=not restart,
                workers=workers,
            )
            try:
                summary = _run_with_progress(console, importer, files)
            except KeyboardInterrupt:
                importer.close()
                out.close(importer.loader.summary.read)
                done = importer.progress
                console.print(
                    f"Interrupted after {done.documents} documents ({done.summary.read} records);"
                    " run the same command again to resume."
                )
                raise typer.Exit(130) from None
        out.close(summary.read)
        elapsed = time.perf_counter() - started
        _print_summary(console, summary, importer.progress, elapsed)
        console.print(f"Report: {report}")
        if summary.rejected:
            console.print(
                f"[yellow]{summary.rejected} records were rejected[/yellow]; each is in the report "
                "with its file, line or entry and the reasons."
            )
            raise typer.Exit(1)


def _run_with_progress(console: Console, importer: Importer, files: list[Path]) -> LoadSummary:
    started = time.perf_counter()
    with Progress(
        TextColumn("Importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files · {task.fields[records]} records · {task.fields[rate]} resources/s"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        # The bar counts input files; archives count as one each until they are done.
        task = progress.add_task("import", total=len(files), records=0, rate=0)

        def update(state: ImportProgress) -> None:
            if interrupted.is_set():
                raise KeyboardInterrupt  # here, between batches: nothing is half-written
            seconds = max(time.perf_counter() - started, 1e-6)
            progress.update(
                task,
                records=state.summary.read,
                rate=f"{state.summary.read / seconds:,.0f}",
            )

        def file_done(done: int) -> None:
            progress.update(task, completed=done)

        importer.on_progress = update
        importer.on_file_done = file_done
        # Ctrl-C is noted and acted on at the next progress report (after a commit); raised
        # anywhere, it could land inside a database write. A second Ctrl-C stops at once.
        interrupted = threading.Event()

        def note_interrupt(_signum: int, _frame: object) -> None:
            interrupted.set()
            signal.signal(signal.SIGINT, signal.default_int_handler)

        previous = signal.signal(signal.SIGINT, note_interrupt)
        try:
            return importer.run(files)
        finally:
            signal.signal(signal.SIGINT, previous)


def _print_summary(
    console: Console, summary: LoadSummary, state: ImportProgress, elapsed: float
) -> None:
    table = Table(title="Imported resources")
    table.add_column("Resource type")
    table.add_column("Resources", justify="right")
    for type_, count in sorted(summary.by_type.items(), key=lambda item: (-item[1], item[0])):
        table.add_row(type_, f"{count:,}")
    table.add_row("[bold]total[/bold]", f"[bold]{sum(summary.by_type.values()):,}[/bold]")
    console.print(table)
    rate = summary.read / elapsed if elapsed > 0 else 0.0
    console.print(
        f"Read {summary.read:,} records from {state.documents:,} documents in {elapsed:.1f} s"
        f" ({rate:,.0f}/s): {summary.created:,} created, {summary.updated:,} updated,"
        f" {summary.unchanged:,} unchanged, {summary.rejected:,} rejected."
    )
    if summary.repeated:
        console.print(
            f"{summary.repeated:,} of the unchanged records repeat a resource id read earlier in"
            " this import; the first record of each id was kept."
        )
    if state.skipped:
        console.print(
            f"Skipped {state.skipped:,} documents an interrupted run had committed"
            " (--restart reads them again)."
        )
