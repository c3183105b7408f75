"""The importer on SQLite and PostgreSQL: Bundles, bad records, idempotence, resuming."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from import_helpers import (
    adds_up,
    patient,
    post,
    run,
    transaction,
    write_json,
    write_ndjson,
    write_tar,
)

from carebase.data.import_progress import Checkpoint
from carebase.data.import_report import ImportReport
from carebase.data.importer import Importer
from carebase.store.base import Store

PAT = "11111111-1111-4111-8111-111111111111"
ENC = "22222222-2222-4222-8222-222222222222"
DOC = "33333333-3333-4333-8333-333333333333"


def _encounter(subject: str) -> dict[str, object]:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "AMB"},
        "subject": {"reference": subject},
    }


def _body(store: Store, type_: str, id_: str) -> dict[str, object]:
    stored = store.read(type_, id_)
    assert stored is not None and stored.body is not None
    return orjson.loads(stored.body)


def test_transaction_bundle_ids_and_references(store: Store, tmp_path: Path) -> None:
    bundle = transaction(
        [
            post(PAT, {"resourceType": "Patient", "name": [{"family": "Ng"}]}),
            post(ENC, _encounter(f"urn:uuid:{PAT}")),
            {
                "resource": patient("put-1", "Li"),
                "request": {"method": "PUT", "url": "Patient/put-1"},
            },
            {"request": {"method": "DELETE", "url": "Patient/x"}},
        ]
    )
    summary, rejected, _ = run(store, [write_json(tmp_path / "b.json", bundle)])
    assert (summary.read, summary.created, summary.rejected) == (4, 3, 1)
    assert _body(store, "Encounter", ENC)["subject"] == {"reference": f"Patient/{PAT}"}
    assert store.read("Patient", "put-1") is not None
    assert rejected[0].origin.location == "entry[3]"
    assert "DELETE entries are not imported" in rejected[0].issues[0].diagnostics


def test_references_into_a_later_file_resolve_after_it(store: Store, tmp_path: Path) -> None:
    # The patient Bundle comes first and refers to a Practitioner of the second Bundle by
    # urn:uuid and by a conditional reference, the way Synthea's archives do.
    practitioner = {
        "resourceType": "Practitioner",
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "9999"}],
    }
    encounter = _encounter(f"urn:uuid:{PAT}")
    encounter["participant"] = [
        {"individual": {"reference": f"urn:uuid:{DOC}"}},
        {
            "individual": {
                "reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999"
            }
        },
    ]
    members = {
        "a/patient.json": orjson.dumps(
            transaction([post(PAT, patient(PAT)), post(ENC, encounter)])
        ),
        "b/practitioners.json": orjson.dumps(
            transaction(
                [
                    post(
                        DOC,
                        practitioner,
                        ifNoneExist="identifier=http://hl7.org/fhir/sid/us-npi|9999",
                    )
                ],
                "batch",
            )
        ),
    }
    tar = write_tar(tmp_path / "in.tar.gz", members)
    summary, rejected, importer = run(store, [tar])
    assert rejected == [] and summary.created == 3 and importer.progress.deferred == 1
    participants = _body(store, "Encounter", ENC)["participant"]
    assert participants == [
        {"individual": {"reference": f"Practitioner/{DOC}"}},
        {"individual": {"reference": f"Practitioner/{DOC}"}},
    ]
    # Again: nothing new, and the conditional create matches the stored practitioner.
    again, _, _ = run(store, [tar])
    assert (again.read, again.unchanged, again.created, again.updated) == (3, 3, 0, 0)


def test_unresolvable_references_are_rejected_with_the_reason(store: Store, tmp_path: Path) -> None:
    encounter = _encounter("Patient?identifier=nobody")
    bundle = transaction([post(ENC, encounter), post(PAT, patient("ignored"))])
    summary, rejected, _ = run(store, [write_json(tmp_path / "b.json", bundle)])
    assert (summary.created, summary.rejected) == (1, 1)
    assert "Patient?identifier=nobody" in rejected[0].issues[0].diagnostics
    assert rejected[0].origin.location == "entry[0]"


@pytest.mark.parametrize("workers", [0, 1])
def test_mixed_bad_and_good_records_all_accounted_for(
    store: Store, tmp_path: Path, workers: int
) -> None:
    lines: list[object | str] = [
        patient("a"),
        '{"resourceType": "Patient", "id": ',  # malformed JSON
        '["not", "a", "resource"]',
        {"resourceType": "Nonsense", "id": "n"},
        {"resourceType": "Patient", "id": "b", "birthDate": "not-a-date"},
        patient("c"),
    ]
    path = write_ndjson(tmp_path / "mixed.ndjson", lines)
    (tmp_path / "bad.json").write_text("this is not FHIR")
    report = ImportReport(tmp_path / "report.json")
    importer = Importer(store, on_rejected=report.add, workers=workers)
    summary = importer.run([path, tmp_path / "bad.json"])
    report.close(summary.read)
    assert adds_up(summary)
    assert (summary.read, summary.created, summary.rejected) == (7, 2, 5)
    issues = orjson.loads((tmp_path / "report.json").read_bytes())["issue"]
    assert len(issues) == 5
    assert [i["diagnostics"].split(":")[1].strip() for i in issues[:4]] == [
        "line 2",
        "line 3",
        "line 4",
        "line 5",
    ]
    assert "Patient.birthDate" in issues[3]["expression"]
    assert issues[4]["diagnostics"].startswith(f"{tmp_path / 'bad.json'}:")
    assert store.read("Patient", "a") is not None and store.read("Patient", "c") is not None


def test_second_run_creates_nothing(store: Store, tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "p.ndjson", [patient(str(i)) for i in range(30)])
    first, _, _ = run(store, [path], batch_size=7)
    second, _, _ = run(store, [path], batch_size=7)
    assert (first.created, first.unchanged) == (30, 0)
    assert (second.created, second.updated, second.unchanged) == (0, 0, 30)
    assert all(r.version == 1 for r in store.iter_current("Patient"))


class _Interrupt(Exception):
    pass


def test_an_interrupted_import_resumes_to_the_same_state(store: Store, tmp_path: Path) -> None:
    files = [
        write_ndjson(tmp_path / f"{n}.ndjson", [patient(f"{n}-{i}") for i in range(10)])
        for n in range(5)
    ]
    checkpoint = Checkpoint(tmp_path / "progress", store.url)
    importer = Importer(store, batch_size=4, checkpoint=checkpoint)
    batches = 0

    def interrupt_after_five(_counts: object) -> None:
        nonlocal batches
        batches += 1
        importer._batch_done(_counts)  # type: ignore[arg-type]  # keep checkpointing
        if batches == 5:
            raise _Interrupt

    importer.loader._on_batch = interrupt_after_five  # the hook the importer checkpoints in
    with pytest.raises(_Interrupt):
        importer.run(files)
    importer.close()
    assert sum(1 for _ in store.iter_current("Patient")) == 20  # five batches of four
    done = Checkpoint(tmp_path / "progress", store.url).load()
    assert len(done) == 1  # 0.ndjson was committed whole; 1.ndjson only in part

    resumed = Importer(store, batch_size=4, checkpoint=Checkpoint(tmp_path / "progress", store.url))
    summary = resumed.run(files)
    assert resumed.progress.skipped == 1
    assert (summary.read, summary.created, summary.unchanged) == (40, 30, 10)
    ids = sorted(r.id for r in store.iter_current("Patient"))
    assert ids == sorted(f"{n}-{i}" for n in range(5) for i in range(10))
    assert all(r.version == 1 for r in store.iter_current("Patient"))
    assert not (tmp_path / "progress").exists()  # a finished run forgets its checkpoint


def test_a_corrupt_archive_is_reported_and_the_rest_imported(store: Store, tmp_path: Path) -> None:
    broken = tmp_path / "a-broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00not really gzip at all")
    good = write_ndjson(tmp_path / "b.ndjson", [patient("a")])
    summary, rejected, _ = run(store, [broken, good])
    assert (summary.read, summary.created, summary.rejected) == (2, 1, 1)
    assert rejected[0].origin.source == str(broken)
    assert "cannot read the file" in rejected[0].issues[0].diagnostics
