"""`carebase encryption keygen|status|rotate|retire`: keys for encryption at rest.

Resource bodies and history are sealed with AES-256-GCM when a key is configured
(`CAREBASE_ENCRYPTION_KEY_FILE`, a key ring file, or `CAREBASE_ENCRYPTION_KEY`); see
docs/security/hardening.md for key management.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from carebase.cli.options import DatabaseOption, err_console, friendly_errors, opened_store
from carebase.config import Settings
from carebase.store import body_encryption
from carebase.store.base import Store
from carebase.store.body_cipher import BodyCipher, key_id, new_key, read_ring_file, write_ring_file
from carebase.store.sql_store import SqlStore

group = typer.Typer(help="Encryption at rest of resource bodies: keys, status, rotation.")
BATCH_SIZE = 500


def register(app: typer.Typer) -> None:
    """Add the command group to the app."""
    app.add_typer(group, name="encryption")


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


@group.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="The key ring file to create (mode 0600).")],
) -> None:
    """Create a key ring file holding one new random AES-256 key."""
    if out.exists():
        raise _fail(f"{out} exists; keys are never overwritten (rotate adds one to a ring)", 2)
    key = new_key()
    with friendly_errors():
        write_ring_file(out, [key])
    Console().print(
        f"Wrote key {key_id(key)} to {out} (mode 0600). Set CAREBASE_ENCRYPTION_KEY_FILE={out} "
        "and keep a backup of it: bodies sealed with a lost key cannot be read."
    )


@group.command()
def status(database: DatabaseOption = None) -> None:
    """Count stored bodies per key id (and plaintext ones), per table."""
    console = Console()
    with opened_store(database) as store:
        usage = body_encryption.key_usage(store)
        cipher = _cipher(store)
    ring = set(cipher.key_ids) if cipher else set()
    table = Table("key", "resource", "resource_version", "in key ring")
    kids = sorted({kid for counts in usage.values() for kid in counts} | ring)
    for kid in kids:
        label = kid + (" (active)" if cipher and kid == cipher.active_id else "")
        in_ring = "-" if kid == body_encryption.PLAINTEXT else ("yes" if kid in ring else "NO")
        table.add_row(
            label, str(usage["resource"][kid]), str(usage["resource_version"][kid]), in_ring
        )
    console.print(table)
    if cipher is None:
        console.print("Encryption at rest is off (no CAREBASE_ENCRYPTION_KEY_FILE or _KEY).")
    missing = [k for k in kids if k not in ring and k != body_encryption.PLAINTEXT]
    if missing:
        raise _fail(f"bodies are sealed with key(s) not in the ring: {', '.join(missing)}")


@group.command()
def rotate(
    database: DatabaseOption = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Do not add a key: finish resealing with the current active key.",
        ),
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Bodies per transaction.")] = BATCH_SIZE,
) -> None:
    """Add a new active key to the ring and reseal every body and history row with it
    (plaintext rows too). Safe to interrupt: `rotate --resume` finishes the job."""
    console = Console()
    path = _ring_path()
    with opened_store(database) as store:
        store.migrate()
        if not resume:
            keys = read_ring_file(path)
            key = new_key()
            write_ring_file(path, [*keys, key])
            console.print(f"Added key {key_id(key)} to {path}; it is now the active key.")
        sql_store = _sql(store)
        sql_store.cipher = BodyCipher(read_ring_file(path), source=path)
        active = sql_store.cipher.active_id
        remaining = body_encryption.count_to_reseal(store, active)
        done = 0
        try:
            with Progress(
                TextColumn(f"Resealing with key {active}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("reseal", total=remaining)
                for table in body_encryption.BODY_TABLES:
                    after = 0
                    while batch := body_encryption.reseal_batch(store, table, after, batch_size):
                        after, done = batch.last, done + batch.resealed
                        progress.update(task, completed=min(done, remaining))
        except KeyboardInterrupt:
            console.print(
                f"Interrupted after {done} bodies; run `carebase encryption rotate --resume` "
                "to finish."
            )
            raise typer.Exit(130) from None
        left = body_encryption.count_to_reseal(store, active)
    console.print(f"Resealed {done} bodies with key {active}.")
    if left:  # written meanwhile by a server still sealing with the previous key
        console.print(
            f"{left} bodies were written under an older key meanwhile; restart the servers and "
            "run `carebase encryption rotate --resume`."
        )


@group.command()
def retire(
    kid: Annotated[str, typer.Argument(help="The key id to remove from the ring.")],
    database: DatabaseOption = None,
) -> None:
    """Remove a key from the ring once no stored body is sealed with it."""
    path = _ring_path()
    with opened_store(database) as store:
        usage = body_encryption.key_usage(store)
        keys = read_ring_file(path)
        ids = [key_id(key) for key in keys]
        if kid not in ids:
            raise _fail(f"key {kid} is not in {path} (keys: {', '.join(ids)})", 2)
        if kid == ids[-1]:
            raise _fail(f"key {kid} is the active key; rotate first", 2)
        used = sum(counts[kid] for counts in usage.values())
        if used:
            raise _fail(
                f"{used} stored bodies are still sealed with key {kid}; run "
                "`carebase encryption rotate --resume` first",
                2,
            )
        write_ring_file(path, [key for key in keys if key_id(key) != kid])
    Console().print(f"Removed key {kid} from {path}.")


def _ring_path() -> Path:
    settings = Settings.from_env()
    if not settings.encryption_key_file:
        raise _fail(
            "key rotation needs a key ring file: set CAREBASE_ENCRYPTION_KEY_FILE "
            "(create one with `carebase encryption keygen --out FILE`)",
            2,
        )
    return Path(settings.encryption_key_file)


def _sql(store: Store) -> SqlStore:
    assert isinstance(store, SqlStore)  # open_store only makes SQL stores
    return store


def _cipher(store: Store) -> BodyCipher | None:
    return store.cipher if isinstance(store, SqlStore) else None
