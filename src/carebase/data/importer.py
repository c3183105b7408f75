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

from collections.abc import Callable
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
from carebase.data.sources import Document, ParseFailure, iter_documents, read_items
from carebase.errors import Issue
from carebase.store.base import Store


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
    ) -> None:
        self._store = store
        self._checkpoint = checkpoint
        self._resume = resume
        self._on_progress = on_progress
        self._committed: list[str] = []  # documents fully added, awaiting their commit
        self.loader = ResourceLoader(
            store, batch_size=batch_size, on_rejected=on_rejected, on_batch=self._batch_done
        )
        self.progress = ImportProgress(summary=self.loader.summary)
        self._resolver = ReferenceResolver(store, self._flush_for_lookup)

    def run(self, files: list[Path]) -> LoadSummary:
        """Import every document of `files` (and deferred ones last); the summary."""
        skip = frozenset()
        if self._checkpoint is not None:
            done = self._checkpoint.load()
            skip = done if self._resume else frozenset()
            self._checkpoint.start(self._resume)
        deferred: dict[Path, set[str]] = {}
        for path in files:
            for document in iter_documents(path, skip):
                if not self._import(document, final=False):
                    deferred.setdefault(path, set()).add(document.key)
                    self.progress.deferred += 1
        if skip:
            self.progress.skipped = len(skip)
        for path, keys in deferred.items():
            for document in iter_documents(path, skip):
                if document.key in keys:
                    self._import(document, final=True)
        summary = self.loader.finish()
        self._mark_committed()
        if self._checkpoint is not None:
            self._checkpoint.finish()
        return summary

    def close(self) -> None:
        """Release the checkpoint file after an interrupted run (it is kept for resuming)."""
        if self._checkpoint is not None:
            self._checkpoint.close()

    def _import(self, document: Document, *, final: bool) -> bool:
        """Plan and load one document; False when it was deferred (nothing loaded)."""
        for value, location in read_items(document):
            origin = Origin(document.source, location)
            if isinstance(value, ParseFailure):
                self.loader.reject(origin, [Issue("error", "structure", value.message)])
                continue
            if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
                text = "not a FHIR resource (a JSON object with a resourceType)"
                self.loader.reject(origin, [Issue("error", "structure", text)], value)
                continue
            # An NDJSON line is never deferred: the lines before it are loaded already.
            try:
                planned = list(plan(value, origin, self._resolver, final=final or document.ndjson))
            except Deferred:
                return False
            for item in planned:
                self._apply(item)
        self.progress.documents += 1
        self._committed.append(document.key)
        if self._on_progress is not None:
            self._on_progress(self.progress)
        return True

    def _apply(self, item: Planned) -> None:
        if isinstance(item, Load):
            self.loader.add(item.resource, item.origin)
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
        if self._on_progress is not None:
            self._on_progress(self.progress)

    def _mark_committed(self) -> None:
        done, self._committed = self._committed, []
        if self._checkpoint is not None:
            self._checkpoint.mark(done)
