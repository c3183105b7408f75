"""`carebase import` without the terminal: inputs in, resources loaded, rejects reported.

`Importer.run` reads every input document (sources.py), plans its resources
(bundle_import.py) and feeds them to the one ingest path, `ResourceLoader`. Bad records
(malformed JSON, non-resources, invalid resources, entries that cannot be imported) go to the
`on_rejected` callback with their file and line or entry; nothing else is dropped, and the
summary's counts add up (read = created + updated + unchanged + rejected).

Documents whose references point at resources not stored yet are read again after all the
others (a second streaming pass over their file), so input order does not matter: Synthea's
archive lists patient Bundles before the practitioner Bundle they refer to. Documents whose
resources are all committed are recorded in the checkpoint, which lets a re-run after an
interruption skip them.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from carebase.data.bundle_import import (
    Deferred,
    Existing,
    Load,
    Planned,
    ReferenceResolver,
    Refused,
    plan,
)
from carebase.data.import_progress import Checkpoint
from carebase.data.loader import DEFAULT_BATCH, LoadSummary, Origin, Rejected, ResourceLoader
from carebase.data.parallel_plan import PlannedValue, plan_chunk, planned_in_order
from carebase.data.sources import Chunk, ParseFailure, chunks_of, file_key, iter_documents
from carebase.errors import Issue
from carebase.store.base import Store
from carebase.store.prepared_index import PreparedIndex


@dataclass(slots=True)
class ImportProgress:
    """Where a run is, for progress bars: documents done and records read so far."""

    documents: int = 0
    skipped: int = 0  # documents a checkpoint said were committed already
    deferred: int = 0  # documents read again at the end
    summary: LoadSummary = field(default_factory=LoadSummary)


class Importer:
    """Imports files into `store`; one instance per run."""

    def __init__(
        self,
        store: Store,
        *,
        batch_size: int = DEFAULT_BATCH,
        on_rejected: Callable[[Rejected], None] | None = None,
        on_progress: Callable[[ImportProgress], None] | None = None,
        checkpoint: Checkpoint | None = None,
        resume: bool = True,
        workers: int = 0,
    ) -> None:
        self._store = store
        self._checkpoint = checkpoint
        self._resume = resume
        self._workers = workers  # processes parsing and validating (0: this one)
        self.on_progress = on_progress
        self.on_file_done: Callable[[int], None] | None = None  # files finished so far
        self._committed: list[str] = []  # documents fully added, awaiting their commit
        self.loader = ResourceLoader(
            store, batch_size=batch_size, on_rejected=on_rejected, on_batch=self._batch_done
        )
        self.progress = ImportProgress(summary=self.loader.summary)
        self._resolver = ReferenceResolver(store, self._flush_for_lookup)

    def run(self, files: list[Path]) -> LoadSummary:
        """Import every document of `files` (and deferred ones last); the summary."""
        skip: frozenset[str] = frozenset()
        if self._checkpoint is not None:
            done = self._checkpoint.load()
            skip = done if self._resume else frozenset()
            self.progress.skipped = len(skip)
            self._checkpoint.start(self._resume)
        deferred: dict[Path, set[str]] = {}
        finished_files = 0

        def chunks() -> Iterator[Chunk]:
            nonlocal finished_files
            for path in files:
                try:
                    for document in iter_documents(path, skip):
                        yield from chunks_of(document)
                except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
                    # An unreadable file or a corrupt archive: reported as one rejected
                    # record; what was read of it before stays loaded.
                    error = f"cannot read the file: {exc}"
                    yield Chunk(str(path), f"{path}!error", b"", False, error=error)
                finished_files += 1

        for chunk, planned in planned_in_order(chunks(), self._workers):
            if not self._import(chunk, planned, final=False):
                deferred.setdefault(self._path_of(files, chunk), set()).add(chunk.key)
                self.progress.deferred += 1
            if self.on_file_done is not None:
                self.on_file_done(max(finished_files - len(deferred), 0))
        # Read again what referred to resources not stored yet, now that all else is.
        for path, keys in deferred.items():
            for document in iter_documents(path, skip):
                if document.key in keys:
                    for chunk in chunks_of(document):
                        self._import(chunk, plan_chunk(chunk), final=True)
        if self.on_file_done is not None:
            self.on_file_done(len(files))
        summary = self.loader.finish()
        self._mark_committed()
        if self._checkpoint is not None:
            self._checkpoint.finish()
        return summary

    def close(self) -> None:
        """Release the checkpoint file after an interrupted run (it is kept for resuming)."""
        if self._checkpoint is not None:
            self._checkpoint.close()

    @staticmethod
    def _path_of(files: list[Path], chunk: Chunk) -> Path:
        # A chunk's key starts with its file's key (archive members add `!member`).
        for path in files:
            if chunk.key.split("!", 1)[0] == file_key(path):
                return path
        raise LookupError(chunk.source)

    def _import(self, chunk: Chunk, planned: list[PlannedValue], *, final: bool) -> bool:
        """Load one planned chunk; False when it was deferred (nothing loaded: only whole
        JSON documents are deferred, as an NDJSON line after loaded ones cannot wait)."""
        items: list[tuple[Planned, list[Issue] | None, PreparedIndex | None]] = []
        for value in planned:
            origin = Origin(chunk.source, value.location)
            if value.planned is not None:
                items.extend(value.planned)
            elif isinstance(value.raw, ParseFailure):
                failure = [Issue("error", "structure", value.raw.message)]
                items.append((Refused(origin, failure), None, None))
            elif not isinstance(value.raw, dict) or not isinstance(
                value.raw.get("resourceType"), str
            ):
                text = "not a FHIR resource (a JSON object with a resourceType)"
                refused = Refused(origin, [Issue("error", "structure", text)], value.raw)
                items.append((refused, None, None))
            else:
                try:
                    again = plan(value.raw, origin, self._resolver, final=final or chunk.ndjson)
                    items.extend((item, None, None) for item in list(again))
                except Deferred:
                    return False
        for item, issues, prepared in items:
            self._apply(item, issues, prepared)
        if chunk.last:
            self.progress.documents += 1
            self._committed.append(chunk.key)
        if self.on_progress is not None:
            self.on_progress(self.progress)
        return True

    def _apply(
        self, item: Planned, issues: list[Issue] | None, prepared: PreparedIndex | None
    ) -> None:
        if isinstance(item, Load):
            self.loader.add(item.resource, item.origin, issues, prepared)
        elif isinstance(item, Existing):
            self.loader.count_existing(item.resource_type)
        elif isinstance(item, Refused):
            self.loader.reject(item.origin, item.issues, item.resource)

    def _flush_for_lookup(self) -> bool:
        """Commit the queued batch before a lookup is retried; whether there was one."""
        if not self.loader.pending:
            return False
        self.loader.flush()
        return True

    def _batch_done(self, _counts: LoadSummary) -> None:
        # Documents completed before this batch began are now entirely committed.
        self._mark_committed()
        if self.on_progress is not None:
            self.on_progress(self.progress)

    def _mark_committed(self) -> None:
        done, self._committed = self._committed, []
        if self._checkpoint is not None:
            self._checkpoint.mark(done)
