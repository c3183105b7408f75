"""`carebase reindex`: rebuild the search index rows (and full-text rows) of every resource."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from carebase.cli.options import DatabaseOption, opened_store
from carebase.store import reindex as rebuild


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command()
    def reindex(
        database: DatabaseOption = None,
        restart: Annotated[
            bool,
            typer.Option(
                "--restart", help="Start from the first resource even if a previous run stopped."
            ),
        ] = False,
        batch_size: Annotated[
            int, typer.Option(min=1, help="Resources rebuilt per transaction.")
        ] = rebuild.BATCH_SIZE,
    ) -> None:
        """Rebuild the search index of every resource (after `migrate` added an index, or
        when indexing rules changed). Safe to interrupt and run again: it resumes."""
        console = Console()
        done = 0
        with opened_store(database) as store:
            try:
                applied = store.migrate()
                if applied:
                    console.print(f"Applied migrations {applied} first.")
                begin = rebuild.start(store, restart=restart)
                if begin.resumed:
                    console.print(
                        f"Resuming an unfinished reindex after resource row {begin.after} "
                        "(--restart starts over)."
                    )
                with Progress(
                    TextColumn("Reindexing"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeRemainingColumn(),
                    console=console,
                ) as progress:
                    task = progress.add_task("reindex", total=begin.remaining)
                    for count in rebuild.run(store, begin.after, batch_size):
                        done += count
                        progress.update(task, completed=done)
            except KeyboardInterrupt:
                console.print(
                    f"Interrupted after {done} resources; run `carebase reindex` again to resume."
                )
                raise typer.Exit(130) from None
        console.print(f"Reindexed {done} resources.")
