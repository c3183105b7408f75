"""Validation and index rows of the loader's batches, computed in worker processes.

`ResourceLoader(workers=N)` hands each full batch to `BatchPreparer.submit` and goes on
queueing the next one while the workers validate it and compute its index rows
(`store.prepared_index`); the batch is written when its results are back, so the writing
process (the one holding the database transaction) only writes. At most two batches are
in the workers at once, which bounds memory and keeps the input order.
"""

from __future__ import annotations

import gc
import multiprocessing
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from carebase.errors import Issue
from carebase.store.prepared_index import PreparedIndex, prepare_index

#: What a worker returns for each resource of a batch: its errors, or its index rows.
Prepared = tuple[list[Issue], PreparedIndex | None]


def prepare_batch(resources: list[object], check: Any) -> list[Prepared]:
    """Validate each resource with `check`; index the valid ones (runs in a worker)."""
    out: list[Prepared] = []
    for resource in resources:
        issues = check(resource)
        out.append(
            (issues, None if issues or not isinstance(resource, dict) else prepare_index(resource))
        )
    return out


class BatchPreparer:
    """A pool of `workers` processes preparing batches (see the module docstring)."""

    def __init__(self, workers: int) -> None:
        self._pool = worker_pool(workers)

    def submit(self, resources: list[object], check: Any) -> Future[list[Prepared]]:
        """Start preparing one batch."""
        return self._pool.submit(prepare_batch, resources, check)

    def close(self) -> None:
        """Stop the workers (pending batches are abandoned)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` processes for the ingest path (the loader's and the importer's)."""
    methods = multiprocessing.get_all_start_methods()
    # fork: workers start with the definitions loaded and a script without a `__main__`
    # guard works; they never use the parent's database connections (and exit without
    # finalisers, so they do not close them either).
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_ignore_interrupts
    )


def _ignore_interrupts() -> None:
    """Ctrl-C is the writing process's to handle; a worker finishes its batch or exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.freeze()  # what the parent had loaded is permanent here too (see cli/import_.py)
