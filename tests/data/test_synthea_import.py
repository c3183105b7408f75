"""The Synthea sample archive imported end to end: counts per type, references resolve."""

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path

import orjson
import pytest
from import_helpers import adds_up, run, write_tar

from carebase.store.base import Store

#: Per-type counts of the 100-patient sample (see shared/data/README.md).
EXPECTED = {
    "Observation": 16315,
    "Claim": 6083,
    "Encounter": 3697,
    "ExplanationOfBenefit": 3697,
    "MedicationRequest": 2386,
    "Procedure": 2351,
    "Immunization": 1287,
    "DiagnosticReport": 897,
    "Condition": 639,
    "Organization": 452,
    "Practitioner": 452,
    "CarePlan": 278,
    "CareTeam": 278,
    "Patient": 100,
    "AllergyIntolerance": 38,
    "ImagingStudy": 16,
    "Device": 4,
}
#: Distinct resources stored: each patient Bundle repeats the Practitioner and Organization
#: entries it refers to (same uuid), so 452 records of each are 203 resources.
STORED = {**EXPECTED, "Organization": 203, "Practitioner": 203}


def _subset(synthea_tar: Path, tmp_path: Path, patients: int) -> Path:
    """An archive of the hospital and practitioner Bundles and the first `patients`."""
    members: dict[str, bytes] = {}
    with tarfile.open(synthea_tar) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
        shared = [n for n in names if "Information" in n]
        people = [n for n in names if n not in shared][:patients]
        for name in people + shared:  # patients first: their references wait for the rest
            extracted = tar.extractfile(name)
            assert extracted is not None
            members[name] = extracted.read()
    return write_tar(tmp_path / "subset.tar.gz", members)


def _references_resolve(store: Store) -> None:
    patients = {r.id for r in store.iter_current("Patient")}
    practitioners = {r.id for r in store.iter_current("Practitioner")}
    encounters = list(store.iter_current("Encounter"))
    assert encounters
    for stored in encounters:
        assert stored.body is not None
        body = orjson.loads(stored.body)
        type_, id_ = body["subject"]["reference"].split("/")
        assert type_ == "Patient" and id_ in patients
        for participant in body.get("participant", []):
            ref = participant["individual"]["reference"]
            assert ref.startswith("Practitioner/") and ref.split("/")[1] in practitioners


def test_the_whole_archive_on_sqlite(synthea_tar: Path, store: Store) -> None:
    if store.dialect != "sqlite":
        pytest.skip("the whole archive runs on SQLite; PostgreSQL imports a subset below")
    summary, rejected, _ = run(store, [synthea_tar], workers=1)
    assert rejected == [] and adds_up(summary)
    assert summary.read == sum(EXPECTED.values()) and dict(summary.by_type) == EXPECTED
    assert summary.created == sum(STORED.values())
    assert dict(Counter(r.type for r in store.iter_current())) == STORED
    _references_resolve(store)


def test_a_subset_with_patients_before_practitioners(
    synthea_tar: Path, store: Store, tmp_path: Path
) -> None:
    archive = _subset(synthea_tar, tmp_path, patients=4)
    summary, rejected, _importer = run(store, [archive])
    assert rejected == [] and adds_up(summary) and summary.created > 0
    assert Counter(r.type for r in store.iter_current())["Patient"] == 4
    _references_resolve(store)
    again, _, _ = run(store, [archive])
    assert again.read == summary.read and again.unchanged == summary.read
