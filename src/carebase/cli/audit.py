"""`carebase audit verify|tail`: check the audit log's hash chain, show its latest entries."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from carebase.auth.audit_chain import verify as verify_chain
from carebase.cli.options import DatabaseOption, err_console, opened_store
from carebase.store import audit_records
from carebase.store.audit_records import AuditRecord
from carebase.store.base import Store
from carebase.store.clock import ms_to_instant
from carebase.store.sql_store import SqlStore

audit_app = typer.Typer(name="audit", help="The tamper-evident audit log.", no_args_is_help=True)


def _audit_store(store: Store) -> SqlStore:
    """The store, if it holds an audit log; else a clear message and exit 1."""
    if not isinstance(store, SqlStore) or not audit_records.has_log(store):
        err_console.print(
            "[red]error:[/red] this database has no audit log yet (run `carebase migrate`)"
        )
        raise typer.Exit(1)
    return store


@audit_app.command()
def verify(database: DatabaseOption = None) -> None:
    """Check every entry's hash and link: exit 0 if the chain is intact, else 1 naming the
    first broken entry and what is wrong with it."""
    console = Console(soft_wrap=True)
    with opened_store(database) as opened:
        store = _audit_store(opened)
        total = audit_records.count(store)
        with Progress(
            TextColumn("Verifying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=total < 10_000,  # a bar only where the wait is noticeable
        ) as progress:
            task = progress.add_task("verify", total=total)
            result = verify_chain(
                audit_records.iter_records(store),
                progress=lambda done: progress.update(task, completed=done),
            )
    if not result.intact:
        err_console.print(
            f"[red]BROKEN[/red] at entry seq {result.broken_seq} (AuditEvent/"
            f"{escape(str(result.broken_id))}): {escape(str(result.reason))}. "
            f"{result.count - 1} entries before it are intact."
        )
        raise typer.Exit(1)
    console.print(f"Audit log intact, {result.count} entries; head hash {result.head}")
    if result.unclean_restarts:
        console.print(
            f"[yellow]note:[/yellow] {result.unclean_restarts} start(s) after an unclean "
            "shutdown are recorded; entries of the last milliseconds before each may be lost"
        )


@audit_app.command()
def tail(
    database: DatabaseOption = None,
    n: Annotated[int, typer.Option("-n", "--lines", min=1, help="How many entries.")] = 20,
) -> None:
    """Print the latest entries, oldest first, one line each."""
    console = Console(soft_wrap=True)
    with opened_store(database) as opened:
        records = audit_records.tail(_audit_store(opened), n)
    if not records:
        console.print("The audit log is empty.")
    for record in records:
        console.print(escape(describe(record)), highlight=False)


def describe(record: AuditRecord) -> str:
    """One line for an entry: seq, when, outcome, action, what, who, patients, flags."""
    patients = ",".join(record.patients) or "-"
    flags = "  BREAK-GLASS" if record.break_glass else ""
    return (
        f"{record.seq:>8}  {ms_to_instant(record.recorded)}  outcome={record.outcome:<2} "
        f"{record.action} {record.interaction:<16} agent={record.agent or '-'}  "
        f"patients={patients}{flags}"
    )


def register(app: typer.Typer) -> None:
    """Add the command group to the app."""
    app.add_typer(audit_app, name="audit")
