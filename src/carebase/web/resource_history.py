"""Who changed what: the versions of one resource of a patient's record, newest first, each
with when it was written, how (created, updated, deleted), who wrote it (from the audit log:
the successful create/update/delete of that resource recorded at or right after the
version's time), and which elements differ from the version before.

Versions are read as over the API's instance history (`Type/id/_history`): the same access
check, and the page's audit entry names every version read.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import orjson

from carebase.auth.compartment import patients_of
from carebase.errors import NotFound
from carebase.store import audit_records
from carebase.store.base import StoredResource
from carebase.store.sql_store import SqlStore
from carebase.web.records import Records

MAX_VERSIONS = 100
#: How much earlier than the audit entry a version may be written (the entry is recorded
#: when the request ends, after the write commits).
_WINDOW_MS = 60_000
#: Elements every version changes: not what anyone changed.
_BOOKKEEPING = frozenset({"meta", "id", "resourceType"})


def versions(records: Records, patient_id: str, type_: str, id_: str) -> list[dict[str, Any]]:
    """The versions of Type/id (which must be about the patient), newest first."""
    ctx = records.ctx
    restriction = ctx.guard.history(ctx.store, type_, id_)  # 404 unless the user may read it
    page = ctx.store.history(
        type_, id_, count=MAX_VERSIONS, with_total=False, restriction=restriction
    )
    entries = page.entries
    current = next((e for e in entries if e.body is not None), None)
    if current is None or patient_id not in patients_of(type_, id_, current.body):
        raise NotFound(f"{type_}/{id_} is not part of this patient's record")
    ctx.guard.saw_all(entries)
    writers = _writers(records, f"{type_}/{id_}")
    bodies = [_elements(e) for e in entries]
    rows = []
    for position, entry in enumerate(entries):
        before = bodies[position + 1] if position + 1 < len(entries) else {}
        rows.append(
            {
                "version": entry.version,
                "when": entry.last_updated.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                "interaction": "delete" if entry.deleted else _interaction(entry),
                "who": _who(writers, entry),
                "changed": _changed(before, bodies[position]) if not entry.deleted else [],
            }
        )
    return rows


def _interaction(entry: StoredResource) -> str:
    return "create" if entry.version == 1 else str(entry.interaction or "update")


def _elements(entry: StoredResource) -> dict[str, Any]:
    if entry.body is None:
        return {}
    value: dict[str, Any] = orjson.loads(entry.body)
    return {k: v for k, v in value.items() if k not in _BOOKKEEPING}


def _changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The top-level elements added, removed or changed."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _writers(records: Records, entity: str) -> list[audit_records.AuditRecord]:
    """The successful writes of `entity` in the audit log, oldest first."""
    store = records.ctx.store
    if not isinstance(store, SqlStore) or not audit_records.has_log(store):
        return []
    query = audit_records.AuditQuery(entities=(entity,), actions=("C", "U", "D"))
    found = audit_records.search(store, query, limit=MAX_VERSIONS * 2)
    return sorted((r for r in found if r.outcome == "0"), key=lambda r: r.recorded)


def _who(writers: list[audit_records.AuditRecord], entry: StoredResource) -> str:
    """Who wrote this version: the first matching audit entry at or after its time."""
    written = int(entry.last_updated.timestamp() * 1000)
    action = "D" if entry.deleted else ("C" if entry.version == 1 else "U")
    for record in writers:
        if record.action == action and written - 1000 <= record.recorded <= written + _WINDOW_MS:
            return record.agent_name or record.agent or ""
    return ""
