"""`$import`: the inputs a kick-off names, checked, and the job that loads them.

Inputs are NDJSON files the server may read: `file://` URLs inside one of the configured
`import_dirs` (nothing is fetched over the network), or the request body itself, saved in
the job's directory at kick-off so the job survives a restart. The job reads each file line
by line and hands every resource to `data.loader.ResourceLoader` (validated, batched,
idempotent); a line that is not JSON, not a resource of its input's type, or of a type the
requester may not create and update is rejected with its place, like invalid resources, into
an OperationOutcome NDJSON error file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import orjson

from carebase.api.bulk_export import JobStopped
from carebase.api.bulk_params import principal_from
from carebase.auth.policy import AccessPolicy, policy_for
from carebase.config import Settings
from carebase.data.loader import (
    LoadSummary,
    Origin,
    Rejected,
    ResourceLoader,
    refresh_after_load,
)
from carebase.data.parallel_load import ParallelWriters
from carebase.errors import BadRequest, Forbidden, Issue
from carebase.fhir.definitions.loader import get_definitions
from carebase.store.bulk_jobs import BulkJob
from carebase.store.sql_store import SqlStore

INPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
ERROR_FILE = "errors.ndjson"
#: Resources per loader transaction: fewer commits and round trips than the loader's 500
#: (about 7% less database CPU per resource, measured), still a fraction of a second of work.
BATCH = 1000
#: Inputs smaller than this (about one batch per writer) are written by the job's thread:
#: starting writer processes would cost more than they save.
PARALLEL_FROM_BYTES = 256 * 1024


def parse_import(body: object, settings: Settings) -> list[dict[str, str | None]]:
    """The inputs of an import `Parameters` body: [{type, url, path}]; 400 naming the part
    that is wrong (unknown format, a URL this server may not read, a type it does not know)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest(
            "POST $import takes a Parameters resource (or an application/fhir+ndjson body)",
            location="Parameters",
        )
    inputs: list[dict[str, str | None]] = []
    for i, part in enumerate(body.get("parameter") or []):
        where = f"Parameters.parameter[{i}]"
        name = part.get("name") if isinstance(part, dict) else None
        if name == "inputFormat":
            value = part.get("valueCode") or part.get("valueString")
            if value not in INPUT_FORMATS:
                raise BadRequest(
                    f"inputFormat {value!r} is not supported; use application/fhir+ndjson",
                    location=f"{where}.valueCode",
                )
        elif name == "inputSource":
            continue  # informational: where the client got the data
        elif name == "input":
            inputs.append(_input(part, where, settings))
        elif name in ("storageDetail", "mode"):
            continue  # how to fetch: only local files are read, whatever the client prefers
        else:
            raise BadRequest(f"Unknown $import parameter {name!r}", location=where)
    if not inputs:
        raise BadRequest("$import needs at least one input part", location="Parameters.parameter")
    return inputs


def _input(part: dict[str, Any], where: str, settings: Settings) -> dict[str, str | None]:
    values = {p.get("name"): p for p in part.get("part") or [] if isinstance(p, dict)}
    type_part, url_part = values.get("type"), values.get("url")
    type_ = (type_part or {}).get("valueCode") or (type_part or {}).get("valueString")
    if type_ is not None and type_ not in get_definitions().resource_types:
        raise BadRequest(f"{where}: type {type_!r} is not a resource type", location=where)
    url = (url_part or {}).get("valueUrl") or (url_part or {}).get("valueUri")
    if not isinstance(url, str):
        raise BadRequest(f"{where} needs a url part (valueUrl)", location=f"{where}.part")
    return {"type": type_, "url": url, "path": str(readable_file(url, where, settings))}


def readable_file(url: str, where: str, settings: Settings) -> Path:
    """The local file `url` names, when it lies inside an allowed import directory."""
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        raise BadRequest(
            f"{where}: {url} is a network URL; this server reads no network inputs. Copy the"
            " file into an import directory (CAREBASE_IMPORT_DIRS) and use a file:// URL, or"
            " POST the NDJSON as the request body",
            location=f"{where}.url",
        )
    if parsed.scheme != "file":
        raise BadRequest(f"{where}: {url} is not a file:// URL", location=f"{where}.url")
    if not settings.import_dirs:
        raise BadRequest(
            "$import of files is turned off: no import directory is configured"
            " (CAREBASE_IMPORT_DIRS)",
            location=f"{where}.url",
        )
    path = Path(unquote(parsed.path)).resolve()
    allowed = [Path(d).resolve() for d in settings.import_dirs]
    if not any(path.is_relative_to(d) for d in allowed):
        raise BadRequest(
            f"{where}: {path} is outside the import directories", location=f"{where}.url"
        )
    if not path.is_file():
        raise BadRequest(f"{where}: {path} does not exist", location=f"{where}.url")
    return path


def run_import(
    store: SqlStore,
    job: BulkJob,
    directory: Path,
    progress: Callable[[str], bool],
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Load every input; the manifest's output (counts per type) and error file. On
    PostgreSQL with `settings.import_workers` > 0 and inputs of PARALLEL_FROM_BYTES or more,
    the lines are written by that many writer processes (`data.parallel_load`), else by a
    loader in this thread."""
    policy = policy_for(principal_from(job.request["principal"]))
    directory.mkdir(parents=True, exist_ok=True)
    errors_path = directory / ERROR_FILE
    rejected = 0
    workers = settings.import_workers if settings is not None else 0
    with errors_path.open("wb") as errors:

        def reject(item: Rejected) -> None:
            nonlocal rejected
            rejected += 1
            errors.write(_outcome(item) + b"\n")

        def batch_done(_counts: LoadSummary) -> None:
            if not progress(f"{sink.summary.read} lines loaded, {rejected} rejected"):
                raise JobStopped(job.id)

        sink: ResourceLoader | ParallelWriters
        size = sum(Path(spec["path"]).stat().st_size for spec in job.request["inputs"])
        if (
            workers > 0
            and store.dialect == "postgresql"
            and settings is not None
            and size >= PARALLEL_FROM_BYTES
        ):
            sink = ParallelWriters(
                store.url, settings, workers, batch_size=BATCH,
                on_rejected=reject, on_batch=batch_done,
            )  # fmt: skip
        else:
            sink = ResourceLoader(store, batch_size=BATCH, on_rejected=reject, on_batch=batch_done)
        with sink:
            refused = sum(_load_file(sink, spec, policy, reject) for spec in job.request["inputs"])
        summary = sink.summary
        if isinstance(sink, ParallelWriters):  # a ResourceLoader refreshes them itself
            refresh_after_load(store, summary)
    output = [{"type": type_, "count": count} for type_, count in sorted(summary.by_type.items())]
    error = []
    if rejected:
        error.append({"type": "OperationOutcome", "url": ERROR_FILE, "count": rejected})
    else:
        errors_path.unlink()
    counts = {
        "read": summary.read + refused, "created": summary.created, "updated": summary.updated,
        "unchanged": summary.unchanged, "rejected": rejected,
    }  # fmt: skip
    return {"output": output, "error": error, "total": summary.read + refused, "counts": counts}


def _load_file(
    sink: ResourceLoader | ParallelWriters,
    spec: dict[str, Any],
    policy: AccessPolicy,
    reject: Callable[[Rejected], None],
) -> int:
    """Hand the lines of one input to the loader (or the writers); returns how many it
    refused itself."""
    refused = 0
    source: str = spec["url"]
    expected: str | None = spec.get("type")
    with open(spec["path"], "rb") as lines:
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            origin = Origin(source, f"line {n}")
            problem, resource = _parse(line, expected, policy)
            if problem is not None:
                refused += 1
                reject(Rejected(origin, [problem], *_type_and_id(resource)))
                continue
            if isinstance(sink, ParallelWriters):
                sink.add(resource, line, origin)
            else:
                sink.add(resource, origin)
    return refused


def _parse(line: bytes, expected: str | None, policy: AccessPolicy) -> tuple[Issue | None, Any]:
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return Issue("error", "structure", f"not JSON: {exc}"), None
    type_ = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(type_, str):
        return Issue("error", "structure", "not a FHIR resource (no resourceType)"), resource
    if expected is not None and type_ != expected:
        return Issue("error", "value", f"a {type_} in an input of type {expected}"), resource
    for letter in ("c", "u"):
        try:
            visibility = policy.visibility(type_, letter)
        except Forbidden as exc:
            return Issue("error", "forbidden", exc.message), resource
        if visibility is None or not visibility.unrestricted:
            need = policy.missing_scope(type_, letter).replace("user/", "system/", 1)
            return Issue(
                "error", "forbidden", f"importing {type_} needs {need} without restriction"
            ), resource
    return None, resource


def _type_and_id(resource: Any) -> tuple[str | None, str | None]:
    if not isinstance(resource, dict):
        return None, None
    type_, id_ = resource.get("resourceType"), resource.get("id")
    return (type_ if isinstance(type_, str) else None, id_ if isinstance(id_, str) else None)


def _outcome(item: Rejected) -> bytes:
    """One rejected record as an OperationOutcome line, saying where it was."""
    issues = []
    for issue in item.issues:
        entry = issue.to_fhir()
        entry["diagnostics"] = f"{item.origin}: {issue.diagnostics}"
        issues.append(entry)
    return orjson.dumps({"resourceType": "OperationOutcome", "issue": issues})
