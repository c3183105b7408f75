"""Rebuilding the search index rows of every stored resource (`carebase reindex`).

Needed when a database already holds resources as a migration adds an index table (migration
2, full text) and whenever the indexing rules change. Resources are taken in rid order, a batch
per transaction: each batch deletes the index rows of its resource rows and writes fresh ones
for the current versions, and records how far it got in `reindex_progress` in the same
transaction. An interrupted run therefore resumes after the last committed batch; running it
again from the start is harmless (the result is the same). The server may keep running:
batches are short transactions, and on PostgreSQL they lock the rows they rebuild.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from carebase.errors import StorageError
from carebase.store.base import Store
from carebase.store.repository import SqlTransaction

#: resource rows per transaction
BATCH_SIZE = 500


@dataclass(frozen=True, slots=True)
class ReindexStart:
    """Where a run starts: after this rid (0: the beginning), and how many resources remain."""

    after: int
    remaining: int
    resumed: bool


def _sql(tx: object) -> SqlTransaction:
    if not isinstance(tx, SqlTransaction):
        raise StorageError("This store cannot rebuild its index rows")
    return tx


def start(store: Store, *, restart: bool = False) -> ReindexStart:
    """Where a run begins: after the last batch of an unfinished run, unless `restart`."""
    with store.transaction() as tx:
        sql = _sql(tx)
        last = None if restart else sql.reindex_progress()
        after = last or 0
        return ReindexStart(after, sql.current_count(after), last is not None)


def run(store: Store, after: int = 0, batch_size: int = BATCH_SIZE) -> Iterator[int]:
    """Rebuild index rows of resources with rid > `after`; yields resources done per batch."""
    while True:
        with store.transaction() as tx:
            sql = _sql(tx)
            done = sql.reindex_after(after, batch_size)
            sql.set_reindex_progress(None if done is None else done[0])
        if done is None:
            return
        after, count = done
        yield count


def reindex(store: Store, *, restart: bool = False, batch_size: int = BATCH_SIZE) -> int:
    """Rebuild every resource's index rows (resuming an unfinished run); returns how many."""
    begin = start(store, restart=restart)
    return sum(run(store, begin.after, batch_size))
