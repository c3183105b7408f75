"""Features from FHIR: values checked by hand, labels, exclusions, and no leakage from after
the index time."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from ml_helpers import Resources, cond, enc, future_copies, med, obs, patient

from carebase.data.synthetic.population import Population, load_into_store
from carebase.errors import BadRequest
from carebase.ml.features import build_dataset, dataset_from_store, patient_features
from carebase.ml.tasks import load_task, parse_task, task_names
from carebase.store.base import Store

ICD, SCT = "http://hl7.org/fhir/sid/icd-10-cm", "http://snomed.info/sct"
INDEX = datetime(2019, 1, 1, tzinfo=UTC)


def hand_task() -> Any:
    return parse_task(
        {
            "name": "hand",
            "kind": "classification",
            "index": {"type": "fixed", "date": "2019-01-01T00:00:00Z"},
            "label": {
                "type": "condition",
                "codes": ["icd10:E11*", "snomed:44054006"],
                "within_days": 365,
            },
            "exclusions": [{"type": "condition", "codes": ["icd10:E10*"]}, {"type": "deceased"}],
            "features": {
                "observations": [{"name": "a1c", "codes": ["loinc:4548-4"], "lookback_days": 365}],
                "conditions": [{"name": "htn", "codes": ["icd10:I10"]}],
                "medications": [
                    {"name": "statin", "codes": ["rxnorm:312961"], "lookback_days": 365}
                ],
                "encounters": [{"name": "ed", "classes": ["EMER"], "lookback_days": 365}],
            },
        }
    )


def hand_patient(pid: str = "p1") -> list[dict[str, Any]]:
    return [
        patient(pid),
        obs(pid, 1, "4548-4", 5.0, "2017-06-01T00:00:00Z"),  # outside the 365-day look-back
        obs(pid, 2, "4548-4", 6.0, "2018-03-01T00:00:00Z"),
        obs(pid, 3, "4548-4", 7.0, "2018-09-01T00:00:00Z"),
        obs(pid, 4, "4548-4", 9.9, "2019-01-01T00:00:01Z"),  # one second after the index
        # SNOMED first, ICD-10 second: matched through the second coding
        cond(pid, 1, [(SCT, "59621000"), (ICD, "I10")], "2016-01-01", "2016-01-01"),
        cond(pid, 2, [(ICD, "E11.9")], "2019-05-01T00:00:00Z", "2019-05-01T00:00:00Z"),
        med(pid, 1, "312961", "2018-12-31T00:00:00Z"),
        enc(pid, 1, "EMER", "2018-02-01T10:00:00Z", "2018-02-01T14:00:00Z"),
        enc(pid, 2, "EMER", "2019-02-01T10:00:00Z", "2019-02-01T14:00:00Z"),
        enc(pid, 3, "AMB", "2018-02-01T10:00:00Z", "2018-02-01T10:30:00Z"),
    ]


def test_hand_computed_features_label_and_used_resources() -> None:
    task = hand_task()
    data = build_dataset(task, [("p1", hand_patient())])
    row = data.X.iloc[0].to_dict()
    assert row["age"] == pytest.approx((INDEX - datetime(1960, 6, 15, tzinfo=UTC)).days / 365.25)
    assert row["sex"] == "female"
    assert (
        row["a1c_latest"],
        row["a1c_mean"],
        row["a1c_min"],
        row["a1c_max"],
        row["a1c_count"],
    ) == (7.0, 6.5, 6.0, 7.0, 2.0)
    assert (row["htn"], row["statin"], row["ed"]) == (1.0, 1.0, 1.0)
    assert data.y.tolist() == [1] and data.index_times == ["2019-01-01T00:00:00Z"]
    X, used = patient_features(task, hand_patient(), INDEX)
    assert X.iloc[0].to_dict() == row
    assert used == [
        "Condition/c1",
        "Encounter/e1",
        "MedicationRequest/m1",
        "Observation/o2",
        "Observation/o3",
        "Patient/p1",
    ]


def test_missing_values_are_nan_and_void_resources_ignored() -> None:
    resources = [
        patient("p2"),
        cond("p2", 9, [(ICD, "I10")], "2016-01-01", status="entered-in-error"),
    ]
    X, used = patient_features(hand_task(), resources, INDEX)
    assert math.isnan(X.loc[0, "a1c_latest"]) and X.loc[0, "a1c_count"] == 0
    assert X.loc[0, "htn"] == 0.0 and used == ["Patient/p2"]


def test_exclusions_and_cohort() -> None:
    task = hand_task()
    type1 = [*hand_patient("p3"), cond("p3", 5, [(ICD, "E10.9")], "2010-01-01")]
    dead = hand_patient("p4")
    dead[0]["deceasedDateTime"] = "2018-12-01T00:00:00Z"
    # known diabetes recorded after the index but begun before: not an onset
    prevalent = [*hand_patient("p5"), cond("p5", 6, [(ICD, "E10.1")], "2012-01-01", "2019-03-01")]
    data = build_dataset(
        task, [("p3", type1), ("p4", dead), ("p5", prevalent), ("p1", hand_patient())]
    )
    assert data.patient_ids == ["p1"]


def test_condition_onset_after_window_is_negative() -> None:
    resources = hand_patient()
    resources[6] = cond("p1", 2, [(ICD, "E11.9")], "2020-01-02T00:00:00Z")
    assert build_dataset(hand_task(), [("p1", resources)]).y.tolist() == [0]


def test_readmission_rows_per_discharge() -> None:
    task = load_task("readmission_30d")
    resources = [
        patient("r1", birth="1950-01-01"),
        enc("r1", 1, "IMP", "2020-01-01T00:00:00Z", "2020-01-05T00:00:00Z"),
        enc("r1", 2, "IMP", "2020-01-20T00:00:00Z", "2020-01-22T12:00:00Z"),  # 15 days later
        enc("r1", 3, "IMP", "2020-06-01T00:00:00Z", "2020-06-02T00:00:00Z"),  # 130 days later
        enc("r1", 4, "EMER", "2020-05-31T00:00:00Z", "2020-05-31T05:00:00Z"),
    ]
    data = build_dataset(task, [("r1", resources)])
    assert data.y.tolist() == [1, 0, 0]
    assert data.X["length_of_stay_days"].tolist() == [4.0, 2.5, 1.0]
    assert data.X["admissions_1y"].tolist() == [1.0, 2.0, 3.0]
    assert data.X["ed_visits_6m"].tolist() == [0.0, 0.0, 1.0]


def test_regression_label_is_next_value_and_rows_without_one_dropped() -> None:
    task = load_task("next_hba1c")
    resources = [
        patient("h1"),
        obs("h1", 1, "4548-4", 6.1, "2018-01-01T00:00:00Z"),
        obs("h1", 2, "4548-4", 6.4, "2019-01-01T00:00:00Z"),
        obs("h1", 3, "4548-4", 6.9, "2023-01-01T00:00:00Z"),
    ]
    data = build_dataset(task, [("h1", resources)])
    # the last index with a next value within 730 days is 2018-01-01 (2019 has none in time)
    assert data.index_times == ["2018-01-01T00:00:00Z"] and data.y.tolist() == [6.4]
    assert data.X.loc[0, "hba1c_latest"] == 6.1


def test_patient_features_refuses_naive_time_and_several_patients() -> None:
    with pytest.raises(BadRequest, match="timezone"):
        patient_features(hand_task(), hand_patient(), datetime(2019, 1, 1))
    with pytest.raises(BadRequest, match="exactly one patient"):
        patient_features(hand_task(), hand_patient("a") + hand_patient("b"), INDEX)


# --- leakage -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", task_names())
def test_future_resources_change_no_feature(name: str, population: Resources) -> None:
    """For every shipped task and synthetic patient: features at each of its index times are
    the same when a copy of the whole record, moved after that index time, is added."""
    task = load_task(name)
    data = build_dataset(task, population[:30])
    assert len(data.y) > 10
    by_id = dict(population)
    checked = 0
    for pid, when in zip(data.patient_ids, data.index_times, strict=True):
        index = datetime.fromisoformat(when.replace("Z", "+00:00"))
        resources = by_id[pid]
        if task.index.type == "encounter_end":
            # serving picks the latest discharge at or before the time; keep it the index one
            index_row = data.X.iloc[checked]
        else:
            index_row = None
        before, _ = patient_features(task, resources, index)
        after, _ = patient_features(task, resources + future_copies(resources, index), index)
        pd.testing.assert_frame_equal(before, after)
        if index_row is not None:
            assert before.iloc[0].to_dict() == pytest.approx(index_row.to_dict(), nan_ok=True)
        checked += 1
    assert checked == len(data.y)


def test_the_leakage_check_can_fail(population: Resources) -> None:
    """The same copies dated one hour *before* the index do change features."""
    task = load_task("t2d_onset_3y")
    _pid, resources = next((p, r) for p, r in population if len(r) > 40)
    before, _ = patient_features(task, resources, INDEX)
    earlier = future_copies(resources, INDEX - timedelta(hours=2))
    after, _ = patient_features(task, resources + earlier, INDEX)
    assert not before.equals(after)


def test_dataset_table_unchanged_by_future_records(population: Resources) -> None:
    task = load_task("t2d_onset_3y")
    plain = build_dataset(task, population[:40])
    assert task.index.date is not None
    grown = [(p, r + future_copies(r, task.index.date)) for p, r in population[:40]]
    pd.testing.assert_frame_equal(plain.X, build_dataset(task, grown).X)


# --- the store ---------------------------------------------------------------------------------


def test_dataset_from_store_equals_dataset_from_resources(store: Store) -> None:
    population = Population(3)
    load_into_store(population, 8, store)
    task = load_task("readmission_30d")
    direct = build_dataset(task, [(r[0]["id"], r) for _, r in population.patients(8)])
    stored = dataset_from_store(task, store)

    def table(d: Any) -> pd.DataFrame:
        frame = d.X.assign(pid=d.patient_ids, at=d.index_times, y=d.y)
        return frame.sort_values(["pid", "at"]).reset_index(drop=True)

    assert len(direct.y) > 0
    pd.testing.assert_frame_equal(table(direct), table(stored))


def test_condition_recorded_after_the_index_is_not_known_at_it() -> None:
    """Onset before the index but recorded after it: the record did not know it yet."""
    late = [patient("p6"), cond("p6", 1, [(ICD, "I10")], "2015-01-01", "2019-02-01T00:00:00Z")]
    X, used = patient_features(hand_task(), late, INDEX)
    assert X.loc[0, "htn"] == 0.0 and "Condition/c1" not in used
    X, _ = patient_features(hand_task(), late, datetime(2019, 3, 1, tzinfo=UTC))
    assert X.loc[0, "htn"] == 1.0
