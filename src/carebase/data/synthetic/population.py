"""The synthetic population: the fixed organisations and practitioners, then each patient's
resources, one patient at a time (memory stays flat however many patients are asked for),
written as FHIR Bulk Data NDJSON or loaded into the store through the one ingest path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from carebase.data.loader import LoadSummary, Origin, Rejected, ResourceLoader
from carebase.data.synthetic.demographics import clinicians
from carebase.data.synthetic.fhir_clinical import ClinicalBuilder
from carebase.data.synthetic.fhir_notes import document_reference
from carebase.data.synthetic.fhir_people import Ids, Resource, patient, staff_resources
from carebase.data.synthetic.timeline import Timeline, simulate
from carebase.fhir import json_io
from carebase.store.base import Store

# Bump when the output for a given (patients, seed) changes, so cached demo data is rebuilt.
GENERATOR_VERSION = "1"


class Population:
    """Generates the population of one seed; `patient(n)` is independent of other patients."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.ids = Ids(seed)
        self.staff = clinicians(seed)

    def shared(self) -> list[Resource]:
        """Organisations and practitioners (the same for every patient count)."""
        return staff_resources(self.ids, self.staff)

    def timeline(self, number: int) -> Timeline:
        """Patient `number`'s simulated life."""
        return simulate(self.seed, number, self.staff)

    def patient(self, number: int) -> list[Resource]:
        """Every resource of patient `number` (Patient first, then per visit in time order)."""
        timeline = self.timeline(number)
        out = [patient(self.ids, timeline)]
        build = ClinicalBuilder(self.ids, timeline)
        for index, visit in enumerate(timeline.visits):
            out.append(build.encounter(index, visit))
            if index == 0:
                out.extend(build.allergies(index, visit))
                out.append(build.smoking_status(index, visit))
            out.extend(build.conditions(index, visit))
            out.extend(build.observations(index, visit))
            out.extend(build.medication_requests(index, visit))
            out.extend(build.immunizations(index, visit))
            out.extend(build.procedures(index, visit))
            out.append(document_reference(self.ids, timeline, index, visit))
        return out

    def patients(self, count: int, first: int = 0) -> Iterator[tuple[int, list[Resource]]]:
        """(number, resources) of patients `first` .. `first + count - 1`."""
        for number in range(first, first + count):
            yield number, self.patient(number)


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
