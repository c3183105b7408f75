"""Where a generated population goes: FHIR Bulk Data NDJSON files (one per resource type,
written as patients are generated) or the store, through the one ingest path (the loader)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from carebase.data.loader import LoadSummary, Origin, Rejected, ResourceLoader
from carebase.data.synthetic.population import Population
from carebase.fhir import json_io
from carebase.store.base import Store

PatientDone = Callable[[int, int], None]  # (patient number, resources of that patient)


class NdjsonWriter:
    """Writes resources to `<dir>/<Type>.ndjson`, one compact JSON object a line (the FHIR
    Bulk Data format). Files are opened on first use and truncated, so rerunning into the
    same directory replaces its files rather than appending to them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, IO[bytes]] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> NdjsonWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def write(self, resource: dict[str, Any]) -> None:
        """Append one resource to its type's file."""
        type_ = resource["resourceType"]
        out = self._files.get(type_)
        if out is None:
            out = self._files[type_] = (self.directory / f"{type_}.ndjson").open("wb")
            self.counts[type_] = 0
        out.write(json_io.dumps(resource) + b"\n")
        self.counts[type_] += 1

    def close(self) -> None:
        """Flush and close every file."""
        for out in self._files.values():
            out.close()
        self._files.clear()


def write_ndjson(
    population: Population, patients: int, directory: Path, on_patient: PatientDone | None = None
) -> dict[str, int]:
    """Generate `patients` patients into NDJSON files; returns resources written per type."""
    with NdjsonWriter(directory) as writer:
        for resource in population.shared():
            writer.write(resource)
        for number, resources in population.patients(patients):
            for resource in resources:
                writer.write(resource)
            if on_patient is not None:
                on_patient(number, len(resources))
        return dict(sorted(writer.counts.items()))


def load_into_store(
    population: Population,
    patients: int,
    store: Store,
    *,
    on_patient: PatientDone | None = None,
    on_rejected: Callable[[Rejected], None] | None = None,
) -> LoadSummary:
    """Generate `patients` patients into the store (validated, batched, idempotent: loading
    the same population again writes nothing)."""
    loader = ResourceLoader(store, on_rejected=on_rejected)
    shared = Origin("generated", "organisations and practitioners")
    for resource in population.shared():
        loader.add(resource, shared)
    for number, resources in population.patients(patients):
        origin = Origin("generated", f"patient {number}")
        for resource in resources:
            loader.add(resource, origin)
        if on_patient is not None:
            on_patient(number, len(resources))
    return loader.finish()
