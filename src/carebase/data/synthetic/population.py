"""The synthetic population: the fixed organisations and practitioners, then each patient's
resources, one patient at a time (memory stays flat however many patients are asked for)."""

from __future__ import annotations

from collections.abc import Iterator

from carebase.data.synthetic.demographics import clinicians
from carebase.data.synthetic.fhir_clinical import ClinicalBuilder
from carebase.data.synthetic.fhir_notes import document_reference
from carebase.data.synthetic.fhir_people import Ids, Resource, patient, staff_resources
from carebase.data.synthetic.timeline import Timeline, simulate

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
