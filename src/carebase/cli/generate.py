"""`carebase generate`: a deterministic synthetic population, as NDJSON files or into the
database."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

from carebase.cli.options import DatabaseOption, err_console, opened_store
from carebase.data.loader import LoadSummary, Rejected
from carebase.data.synthetic.population import Population, load_into_store, write_ndjson

PatientsOption = Annotated[
    int, typer.Option("--patients", min=1, help="How many patients to generate.")
]
SeedOption = Annotated[
    int, typer.Option("--seed", help="Random seed: the same patients and seed give the same data.")
]


class RateColumn(ProgressColumn):
    """Patients per second, and resources per second, so far."""

    def __init__(self, resources: Callable[[], int]) -> None:
        super().__init__()
        self._resources = resources
        self._started = time.perf_counter()

    def render(self, task: Task) -> Text:
        elapsed = max(time.perf_counter() - self._started, 1e-6)
        return Text(
            f"{task.completed / elapsed:,.0f} patients/s, "
            f"{self._resources() / elapsed:,.0f} resources/s",
            style="progress.data.speed",
        )


@contextmanager
def patient_progress(
    console: Console, patients: int, what: str
) -> Iterator[Callable[[int, int], None]]:
    """A progress bar over patients; yields the callback that advances it."""
    made = [0]
    with Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(lambda: made[0]),
        console=console,
        transient=not console.is_terminal,
    ) as progress:
        task = progress.add_task(what, total=patients)

        def advance(_number: int, resources: int) -> None:
            made[0] += resources
            progress.advance(task)

        yield advance


def generate_into(database: str | None, patients: int, seed: int, console: Console) -> LoadSummary:
    """Migrate the database, then load the population into it; rejected records (there
    should be none) are printed, one line each."""

    def rejected(record: Rejected) -> None:
        why = record.issues[0].diagnostics if record.issues else ""
        err_console.print(
            f"[red]rejected[/red] {escape(str(record.origin))} "
            f"{record.resource_type}/{record.resource_id}: {escape(why)}"
        )

    with opened_store(database) as store:
        applied = store.migrate()
        if applied:
            console.print(f"Database migrated ({applied}).")
        with patient_progress(console, patients, "Generating and loading") as advance:
            return load_into_store(
                Population(seed), patients, store, on_patient=advance, on_rejected=rejected
            )


def describe_load(summary: LoadSummary) -> str:
    """One line: what a load did."""
    return (
        f"{summary.read:,} resources: {summary.created:,} created, {summary.updated:,} updated, "
        f"{summary.unchanged:,} unchanged, {summary.rejected:,} rejected"
    )


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command()
    def generate(
        patients: PatientsOption = 100,
        seed: SeedOption = 1,
        out: Annotated[
            Path | None,
            typer.Option(
                "--out",
                help="Write FHIR Bulk Data NDJSON (one <Type>.ndjson per resource type) into "
                "this directory instead of loading into the database.",
                file_okay=False,
            ),
        ] = None,
        database: DatabaseOption = None,
    ) -> None:
        """Generate a synthetic patient population (synthetic data, not real people)."""
        console = Console(stderr=True)
        if out is not None and database is not None:
            err_console.print("[red]error:[/red] give --out DIR or --database URL, not both")
            raise typer.Exit(2)
        started = time.perf_counter()
        if out is not None:
            try:
                with patient_progress(console, patients, "Generating") as advance:
                    counts = write_ndjson(Population(seed), patients, out, on_patient=advance)
            except OSError as exc:
                err_console.print(f"[red]error:[/red] cannot write to {escape(str(out))}: {exc}")
                raise typer.Exit(1) from exc
            total = sum(counts.values())
            elapsed = time.perf_counter() - started
            console.print(
                f"Wrote {total:,} resources of {patients:,} patients to {escape(str(out))} "
                f"in {elapsed:.1f} s ({patients / elapsed:,.0f} patients/s): "
                + ", ".join(f"{type_} {n:,}" for type_, n in counts.items())
            )
            return
        summary = generate_into(database, patients, seed, console)
        console.print(
            f"Generated {patients:,} patients (seed {seed}) in "
            f"{time.perf_counter() - started:.1f} s; {describe_load(summary)}."
        )
        if summary.rejected:
            raise typer.Exit(1)
