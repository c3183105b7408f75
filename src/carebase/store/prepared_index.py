"""Index rows computed ahead of a write, so another process can do that work.

The search index rows and full-text words of a resource depend on its content only, not on
the `meta.versionId`/`meta.lastUpdated` a write stamps on it (`_lastUpdated` is a column,
and the text index skips `meta`). An importer can therefore compute them in a worker process
(`prepare_index`) and hand them to `Transaction.create(..., prepared=...)`, which then skips
the indexing it would otherwise do itself, the largest part of a write's CPU time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from carebase.store.index_rows import IndexRows
from carebase.store.indexer import index_resource
from carebase.store.text_index import TextDocument, text_document


@dataclass(frozen=True, slots=True)
class PreparedIndex:
    """The index rows and full-text document of one resource's content."""

    rows: IndexRows
    text: TextDocument | None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Sent back from worker processes for every resource: plain lists and tuples unpickle
        # several times faster than the dataclasses' generic state.
        rows = self.rows
        text = (self.text.narrative, self.text.content) if self.text is not None else None
        return _rebuild, (
            rows.token, rows.string, rows.date, rows.number, rows.quantity, rows.uri,
            rows.reference, rows.composite, text,
        )  # fmt: skip


def _rebuild(*parts: Any) -> PreparedIndex:
    *lists, text = parts
    rows = IndexRows(*lists)
    return PreparedIndex(rows, TextDocument(*text) if text is not None else None)


def prepare_index(resource: dict[str, Any]) -> PreparedIndex:
    """What writing `resource` (exactly this content) will index."""
    return PreparedIndex(index_resource(resource), text_document(resource))
