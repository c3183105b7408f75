"""Loading NDJSON lines with several writer processes, each with its own connection.

`ResourceLoader` writes from one process, which is then the bottleneck of a large import:
parsing, validation, index rows, serialising bodies and the database round trips all share
one core. `ParallelWriters` runs `workers` processes, each holding its own store connection
and its own `ResourceLoader`, which write their batches in their own transactions. The
parent only hands out raw lines. Writers are forked from a forkserver (not from the server,
which has threads) that has imported the writer's code and definitions once
(`writer_warmup`), so a job's writers start in milliseconds; where there is no forkserver
they are spawned (a fresh interpreter each).

Every record goes to the writer chosen by a hash of its (resourceType, id), so all records of
one resource meet in the same writer, in input order: "the first record of an id wins" and
the unchanged and repeated counts stay what one loader would count, and no two writers ever
touch the same row. Each writer answers every batch with its counts and its rejected records
(with their origins); the parent folds them into one `LoadSummary`. References are not
resolved here (NDJSON carries final ids), so it does not matter which writer stores which
end of a reference.

Only for PostgreSQL: SQLite allows one writer at a time.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import signal
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import orjson

from carebase.config import Settings
from carebase.data.loader import (
    DEFAULT_BATCH,
    LoadSummary,
    Origin,
    Rejected,
    ResourceLoader,
    tune_for_ingest,
)
from carebase.errors import CarebaseError, StorageError
from carebase.store.factory import open_store

log = logging.getLogger("carebase.import")
#: Batches queued per writer beyond the one it is writing: bounds memory, keeps it busy.
AHEAD = 2
#: Seconds a writer gets to finish its batch and exit when the load stops early.
STOP_GRACE = 30.0
#: A batch as sent to a writer: (line, source, location) per record.
_Batch = list[tuple[bytes, str, str]]


class ParallelWriters:
    """`workers` writer processes loading into the database at `url` (see the module
    docstring); use as a context manager or call `finish()`, like `ResourceLoader`.

    `on_rejected` gets every record a writer refused; `on_batch` the counts of each
    committed batch, in the parent, and may raise to stop the load (a cancelled job).
    """

    def __init__(
        self,
        url: str,
        settings: Settings,
        workers: int,
        *,
        batch_size: int = DEFAULT_BATCH,
        on_rejected: Callable[[Rejected], None] | None = None,
        on_batch: Callable[[LoadSummary], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("ParallelWriters needs at least one worker")
        self._batch_size = batch_size
        self._on_rejected = on_rejected
        self._on_batch = on_batch
        self.summary = LoadSummary()
        context = writer_context()
        self._stop: Event = context.Event()
        self._results: Queue[Any] = context.Queue()
        self._inboxes: list[Queue[_Batch | None]] = []
        self._processes: list[BaseProcess] = []
        # One connection is all a writer uses.
        writer_settings = settings.with_(pool_size=1)
        for index in range(workers):
            inbox: Queue[_Batch | None] = context.Queue()
            process = context.Process(
                target=_write_batches,
                args=(index, url, writer_settings, inbox, self._results, self._stop),
                name=f"carebase-import-{index}",
                daemon=True,
            )
            process.start()
            self._inboxes.append(inbox)
            self._processes.append(process)
        self._buffers: list[_Batch] = [[] for _ in range(workers)]
        self._in_flight = [0] * workers
        self._closed = False

    def __enter__(self) -> ParallelWriters:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.close()

    def add(self, resource: dict[str, Any], line: bytes, origin: Origin) -> None:
        """Queue the NDJSON `line` that parsed to `resource` for the writer of its key."""
        id_ = resource.get("id")
        key = (resource.get("resourceType"), id_ if isinstance(id_, str) else None)
        writer = hash(key) % len(self._buffers)
        buffer = self._buffers[writer]
        buffer.append((line, origin.source, origin.location))
        if len(buffer) >= self._batch_size:
            self._send(writer)
        self._collect(block=False)

    @property
    def pids(self) -> list[int]:
        """The writer processes' ids (for operators and tests)."""
        return [p.pid for p in self._processes if p.pid is not None]

    @property
    def pending(self) -> int:
        """Records handed out whose batch has not been answered yet (a bound, in batches)."""
        return sum(len(b) for b in self._buffers) + sum(self._in_flight) * self._batch_size

    def finish(self) -> LoadSummary:
        """Send the last batches, wait for every answer, stop the writers; the summary."""
        try:
            for writer in range(len(self._buffers)):
                self._send(writer)
            while any(self._in_flight):
                self._collect(block=True)
        finally:
            self.close()
        return self.summary

    def close(self) -> None:
        """Stop the writers: each finishes the batch it is writing and drops the rest."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for inbox in self._inboxes:
            inbox.put(None)
        deadline = time.monotonic() + STOP_GRACE
        for process in self._processes:
            # Answers still arriving are drained, or a writer could block on a full pipe.
            while process.is_alive() and time.monotonic() < deadline:
                process.join(0.1)
                self._drain()
            if process.is_alive():
                process.kill()
                process.join()
        self._drain()
        for inbox in self._inboxes:
            # Every writer has exited. Batches one never read (it failed, or was killed) are
            # dropped: read here what is in the pipe, and do not wait for the queue's feeder
            # thread, which would wait forever for room in a pipe nobody reads.
            try:
                while True:
                    inbox.get_nowait()
            except (queue.Empty, OSError, ValueError):
                pass
            inbox.cancel_join_thread()
            inbox.close()
        self._results.close()
        # Let the queues' semaphores go now, not whenever a reference cycle is collected
        # (a server stopped meanwhile would report them leaked).
        self._inboxes, self._processes = [], []

    def _send(self, writer: int) -> None:
        batch, self._buffers[writer] = self._buffers[writer], []
        if not batch:
            return
        while self._in_flight[writer] > AHEAD:
            self._collect(block=True)
        self._inboxes[writer].put(batch)
        self._in_flight[writer] += 1

    def _collect(self, *, block: bool) -> None:
        """Fold in the answers that are in (`block`: wait for at least one)."""
        while True:
            try:
                answer = self._results.get(timeout=1.0) if block else self._results.get_nowait()
            except queue.Empty:
                if not block:
                    return
                self._check_alive()
                continue
            self._fold(answer)
            block = False

    def _fold(self, answer: tuple[int, LoadSummary | None, list[Rejected] | str]) -> None:
        writer, counts, rejected = answer
        if counts is None:
            assert isinstance(rejected, str)
            log.error("import writer %d failed:\n%s", writer, rejected)
            raise StorageError(
                f"An import writer process failed ({rejected.strip().splitlines()[-1]}); the"
                " records it had not committed were not loaded. See the server log, then run"
                " the import again (it is idempotent)"
            )
        self._in_flight[writer] -= 1
        assert isinstance(rejected, list)
        if self._on_rejected is not None:
            for item in rejected:
                self._on_rejected(item)
        self.summary.add(counts)
        if self._on_batch is not None:
            self._on_batch(counts)

    def _check_alive(self) -> None:
        for writer, process in enumerate(self._processes):
            if self._in_flight[writer] and not process.is_alive():
                raise StorageError(
                    f"Import writer process {writer} ended (exit code {process.exitcode})"
                    " before it had written its records; run the import again (it is"
                    " idempotent)"
                )

    def _drain(self) -> None:
        """Discard answers of a load that is stopping."""
        try:
            while True:
                self._results.get_nowait()
        except (queue.Empty, OSError, ValueError):
            return


def writer_context() -> ForkServerContext | SpawnContext:
    """How writer processes start: forked from the warmed-up forkserver where the platform
    has one (started with the first job, it stays for the life of this process), else
    spawned."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["carebase.data.writer_warmup"])  # before it starts
    return context


def _write_batches(
    index: int,
    url: str,
    settings: Settings,
    inbox: Queue[_Batch | None],
    results: Queue[Any],
    stop: Event,
) -> None:
    """A writer process: load each batch of lines in one transaction, answer its counts."""
    # Ctrl-C reaches the whole process group; stopping is the parent's decision.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # As the server process is tuned (without it ingest is ~30% slower); forked from the
    # warmed-up forkserver this only collects what arrived since.
    tune_for_ingest()
    try:
        store = open_store(url, settings)
    except CarebaseError as exc:
        results.put((index, None, f"{type(exc).__name__}: {exc.message}"))
        return
    rejected: list[Rejected] = []
    # One loader for the whole job: it remembers the keys it has written, so a later record
    # of an id (always sent to this same writer) is counted as repeated, not written.
    loader = ResourceLoader(store, batch_size=sys.maxsize, on_rejected=rejected.append)
    try:
        while (batch := _next(inbox)) is not None:
            if stop.is_set():
                continue  # stopping: skip to the end marker
            for line, source, location in batch:
                loader.add(orjson.loads(line), Origin(source, location))
            loader.flush()
            # A copy: the queue pickles in a thread of its own, after `put` returns.
            results.put((index, loader.take_summary(), rejected[:]))
            rejected.clear()
    except Exception:  # reported to the parent, which fails the job with it
        results.put((index, None, traceback.format_exc()))
    finally:
        store.close()


def _next(inbox: Queue[_Batch | None]) -> _Batch | None:
    """The next batch, or None at the end marker or once the parent is gone (killed: the
    queue's pipe stays open in this process too, so no end of file would ever come)."""
    parent = multiprocessing.parent_process()
    while True:
        try:
            return inbox.get(timeout=1.0)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return None
