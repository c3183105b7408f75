"""The OperationOutcome report of an import: one issue per rejected record, streamed to disk.

Issues are written as they happen (the file is a valid OperationOutcome once `close` has
run), so a million rejected lines cost no memory. Each issue's diagnostics name the file and
the line or Bundle entry, the resource when known, and every validation message; its
expression lists the FHIRPath locations the validator named.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

import orjson

from carebase.data.loader import Rejected
from carebase.errors import Issue


class ImportReport:
    """Writes `Rejected` records to an OperationOutcome JSON file as they arrive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] | None = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._file.write(b'{"resourceType":"OperationOutcome","issue":[\n')
        self.count = 0

    def add(self, rejected: Rejected) -> None:
        """Append one issue describing `rejected`."""
        assert self._file is not None, "the report is closed"
        if self.count:
            self._file.write(b",\n")
        self._file.write(orjson.dumps(issue_of(rejected).to_fhir()))
        self.count += 1

    def close(self, read: int) -> None:
        """Finish the file; when nothing was rejected it holds one informational issue."""
        if self._file is None:
            return
        if not self.count:
            done = Issue("information", "informational", f"all {read} records were imported")
            self._file.write(orjson.dumps(done.to_fhir()))
        self._file.write(b"\n]}\n")
        self._file.close()
        self._file = None


def issue_of(rejected: Rejected) -> Issue:
    """The report issue of one rejected record (error; the first reason's code)."""
    what = ""
    if rejected.resource_type:
        what = f" {rejected.resource_type}" + (
            f"/{rejected.resource_id}" if rejected.resource_id else ""
        )
    reasons = "; ".join(issue.diagnostics for issue in rejected.issues) or "rejected"
    expressions = [e for issue in rejected.issues for e in issue.expression]
    code = rejected.issues[0].code if rejected.issues else "invalid"
    return Issue("error", code, f"{rejected.origin}:{what} {reasons}", expressions)
