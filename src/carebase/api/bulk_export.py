"""Runs one `$export` job: writes an NDJSON file per resource type and returns the manifest.

Everything the requester may search, nothing more: each type's resources come from the
store's search under the requester's access restriction (`auth.policy`), with `_since`,
`_typeFilter` and, at Patient and Group level, the patients' compartments as search
criteria. When nothing narrows a type (a system-level export by a `system/` token without
filters) the stored bodies are streamed straight from the resource table in id order
(`store.bulk_jobs.scan_bodies`): no parsing, no paging cost. Lines are the stored bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from carebase.api.bulk_params import ExportParameters, parameters_from, principal_from
from carebase.auth.compartment import compartment_types
from carebase.auth.policy import policy_for
from carebase.errors import BadRequest
from carebase.fhir.definitions.loader import get_definitions
from carebase.store.base import Store, StoredResource
from carebase.store.bulk_jobs import BulkJob, present_types, scan_bodies
from carebase.store.search_restriction import Restriction
from carebase.store.sql_store import SqlStore

#: Called with a progress text after each batch; False means stop (the job was cancelled).
Progress = Callable[[str], bool]
#: Patients named in one compartment search (`subject=Patient/a,Patient/b,...`).
PATIENT_BATCH = 100
PAGE = 1000


class JobStopped(Exception):
    """The job is no longer this worker's to run (cancelled, or reclaimed)."""


def export_types(params: ExportParameters) -> list[str]:
    """The types an export covers before access control: `_type`, else every type (system
    level) or every Patient compartment type (Patient and Group level)."""
    if params.types is not None:
        return list(params.types)
    if params.level == "system":
        return sorted(get_definitions().resource_types)
    return sorted(compartment_types())


def run_export(
    store: SqlStore, job: BulkJob, directory: Path, progress: Progress
) -> dict[str, Any]:
    """Write the job's files into `directory`; the manifest's `output` and counts."""
    request = job.request
    params = parameters_from(request["parameters"])
    policy = policy_for(principal_from(request["principal"]))
    restriction = policy.restriction("s")
    types = request["types"]  # checked against the scopes at kick-off
    patients: list[str] | None = request.get("patients")
    if params.level != "system" and patients is None:
        patients = visible_patients(store, restriction)
    directory.mkdir(parents=True, exist_ok=True)
    output: list[dict[str, Any]] = []
    total = 0
    present = present_types(store)
    for type_ in types:
        if type_ not in present:
            continue  # nothing stored: spare the (per patient batch) searches
        if restriction is not None and restriction.of(type_) is None:
            continue  # the scopes no longer allow it (never happens within one token)
        path = directory / f"{type_}.ndjson"
        count = 0
        with path.open("wb", buffering=1 << 20) as out:
            for bodies in _bodies(store, type_, params, restriction, patients):
                for body in bodies:
                    out.write(body)
                    out.write(b"\n")
                count += len(bodies)
                if not progress(f"{type_}: {count} resources ({total + count} in all)"):
                    raise JobStopped(job.id)
        total += count
        if count:
            output.append({"type": type_, "url": path.name, "count": count})
        else:
            path.unlink()
    return {"output": output, "error": [], "total": total}


def _bodies(
    store: SqlStore,
    type_: str,
    params: ExportParameters,
    restriction: Restriction | None,
    patients: list[str] | None,
) -> Iterator[list[bytes]]:
    """Batches of the bodies of `type_` the export holds."""
    filters = params.type_filters.get(type_) or [[]]
    since = [] if params.since is None else [("_lastUpdated", f"ge{_instant(params)}")]
    visibility = None if restriction is None else restriction.of(type_)
    unrestricted = visibility is None or visibility.unrestricted
    if params.level == "system":
        if unrestricted and not params.type_filters.get(type_):
            yield from scan_bodies(store, type_, params.since)
            return
        yield from searched_bodies(store, type_, [f + since for f in filters], restriction)
        return
    criteria_sets = [
        f + since + [criterion] for criterion in compartment_criteria(type_, patients or [])
        for f in filters
    ]  # fmt: skip
    yield from searched_bodies(store, type_, criteria_sets, restriction)


def _instant(params: ExportParameters) -> str:
    assert params.since is not None
    return params.since.isoformat().replace("+00:00", "Z")


def compartment_criteria(type_: str, patients: list[str]) -> Iterator[tuple[str, str]]:
    """Search criteria that together select the compartments of `patients` for `type_`:
    `_id` batches for Patient, else one per compartment parameter and batch of patients."""
    batches = [patients[i : i + PATIENT_BATCH] for i in range(0, len(patients), PATIENT_BATCH)]
    if type_ == "Patient":
        for batch in batches:
            yield ("_id", ",".join(batch))
        return
    for code in get_definitions().patient_compartment.get(type_, ()):
        for batch in batches:
            yield (code, ",".join(f"Patient/{p}" for p in batch))


def searched_bodies(
    store: Store,
    type_: str,
    criteria_sets: list[list[tuple[str, str]]],
    restriction: Restriction | None,
    on_page: Callable[[list[StoredResource]], None] | None = None,
) -> Iterator[list[bytes]]:
    """The matches of any of the searches, each resource once, page by page; `on_page` sees
    each page's resources (for audit) before its bodies are yielded."""
    seen: set[str] | None = set() if len(criteria_sets) > 1 else None
    for criteria in criteria_sets:
        cursor: str | None = None
        while True:
            try:
                page = store.search(
                    type_, criteria, count=PAGE, cursor=cursor, total="none",
                    restriction=restriction,
                )  # fmt: skip
            except BadRequest as exc:  # e.g. a compartment parameter the index lacks
                raise BadRequest(f"Exporting {type_}: {exc.message}") from exc
            if on_page is not None:
                on_page(page.entries)
            bodies = []
            for stored in page.entries:
                if stored.body is None:
                    continue
                if seen is not None:
                    if stored.id in seen:
                        continue
                    seen.add(stored.id)
                bodies.append(stored.body)
            if bodies:
                yield bodies
            cursor = page.next_cursor
            if cursor is None:
                break


def visible_patients(store: SqlStore, restriction: Restriction | None) -> list[str]:
    """Ids of every Patient the restriction lets the requester search (Patient/$export
    without a `patient` parameter covers them all)."""
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = store.search(
            "Patient", [], count=PAGE, cursor=cursor, total="none", restriction=restriction
        )
        ids.extend(stored.id for stored in page.entries)
        cursor = page.next_cursor
        if cursor is None:
            return ids


def group_members(body: dict[str, Any]) -> list[str]:
    """The Patient ids a Group lists as active members (`member.entity`)."""
    ids: list[str] = []
    for member in body.get("member") or []:
        if not isinstance(member, dict) or member.get("inactive") is True:
            continue
        entity = member.get("entity")
        reference = entity.get("reference") if isinstance(entity, dict) else None
        if isinstance(reference, str):
            kind, _, id_ = reference.rpartition("/")
            if kind.endswith("Patient") and id_:
                ids.append(id_)
    return list(dict.fromkeys(ids))
