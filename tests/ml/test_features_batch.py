"""The batch path (views flattened once, features by set-based SQL in DuckDB) gives the
per-patient path's feature tables row for row, and serving's features for each row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from ml_helpers import Resources, cond, enc, future_copies, obs, patient

from carebase.data.synthetic.population import Population, load_into_store
from carebase.errors import BadRequest
from carebase.ml.features import Dataset, build_dataset, patient_features
from carebase.ml.features_batch import (
    dataset_from_ndjson,
    dataset_from_store_batch,
    dataset_from_views,
    flatten_views,
    ndjson_by_type,
)
from carebase.ml.tasks import Task, load_task, parse_task, task_names
from carebase.store.base import Store

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
INDEX = datetime(2019, 1, 1, tzinfo=UTC)


def write_ndjson(directory: Path, resources: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[bytes]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(orjson.dumps(r))
    for type_, lines in by_type.items():
        (directory / f"{type_}.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    return directory


def table(d: Dataset) -> pd.DataFrame:
    """The data set as one frame in a canonical row order."""
    frame = d.X.assign(pid=d.patient_ids, at=d.index_times, y=d.y)
    keys = ["pid", "at"] + (["length_of_stay_days"] if "length_of_stay_days" in frame else [])
    return frame.sort_values(keys).reset_index(drop=True)


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for column in a.columns:
        x, y = a[column], b[column]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            # means may be summed in another order: equal to the last few bits
            np.testing.assert_allclose(x.astype(float), y.astype(float), rtol=1e-12, atol=0)
        else:
            assert x.astype(str).tolist() == y.astype(str).tolist(), column


@pytest.fixture(scope="module")
def folder(population: Resources, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session population as NDJSON, one file per type."""
    resources = [r for _, items in population for r in items]
    return write_ndjson(tmp_path_factory.mktemp("ndjson"), resources)


@pytest.fixture(scope="module")
def views(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return flatten_views(ndjson_by_type(folder), tmp_path_factory.mktemp("views"))


@pytest.mark.parametrize("name", task_names())
def test_batch_equals_per_patient_and_serving(
    name: str, population: Resources, views: dict[str, Path], folder: Path
) -> None:
    task = load_task(name)
    batch = dataset_from_views(task, views)
    per_patient = build_dataset(task, population)
    assert len(batch.y) > 20
    assert batch.y.dtype == per_patient.y.dtype
    assert_same(table(batch), table(per_patient))
    # views flattened for the task only (resources pre-selected by its codes' text): the same
    assert_same(table(dataset_from_ndjson(task, folder)), table(per_patient))
    # serving's one-patient features at each row's index time: the same row (a sample)
    by_id = dict(population)
    for i in range(0, len(batch.y), max(1, len(batch.y) // 25)):
        index = datetime.fromisoformat(batch.index_times[i].replace("Z", "+00:00"))
        served, _ = patient_features(task, by_id[batch.patient_ids[i]], index)
        assert_same(served, batch.X.iloc[[i]].reset_index(drop=True))


def test_no_feature_reads_after_the_index(population: Resources, tmp_path: Path) -> None:
    """Copies of every record dated after the fixed index change no feature (they may
    change labels: that is what a label is)."""
    task = load_task("t2d_onset_3y")
    plain = dataset_from_ndjson(
        task, write_ndjson(tmp_path / "a", [r for _, i in population[:25] for r in i])
    )
    grown_items = [r for _, i in population[:25] for r in i + future_copies(i, INDEX)]
    grown = dataset_from_ndjson(task, write_ndjson(tmp_path / "b", grown_items))
    assert len(plain.y) > 10
    assert_same(table(plain).drop(columns="y"), table(grown).drop(columns="y"))
    # and the check can fail: the same copies an hour *before* the index do change them
    early_items = [
        r for _, i in population[:25] for r in i + future_copies(i, INDEX - timedelta(hours=2))
    ]
    early = dataset_from_ndjson(task, write_ndjson(tmp_path / "c", early_items))
    assert not table(plain).drop(columns="y").equals(table(early).drop(columns="y"))


def edge_task() -> Task:
    return parse_task(
        {
            "name": "edges",
            "kind": "regression",
            "index": {"type": "observation", "codes": ["loinc:4548-4"], "select": "all"},
            "label": {"type": "observation_value", "codes": ["loinc:4548-4"], "within_days": 400},
            "exclusions": [{"type": "condition", "codes": ["icd10:E10*"]}],
            "features": {
                "observations": [{"name": "a1c", "codes": ["loinc:4548-4"], "lookback_days": 365}],
                "conditions": [{"name": "htn", "codes": ["icd10:I1*"]}],
                "encounters": [{"name": "ed", "classes": ["EMER"]}],
            },
        }
    )


def edge_patients() -> list[dict[str, Any]]:
    """Partial dates, zone offsets, ties in time, void statuses, missing birth dates."""
    tied = [obs("p1", 3, "4548-4", 6.5, "2018-03-01T01:00:00+01:00")]  # = 2018-03-01T00:00Z
    tied[0]["id"] = "o3b"
    voided = obs("p1", 9, "4548-4", 99.0, "2018-04-01")
    voided["status"] = "entered-in-error"
    refuted = cond("p1", 2, [(ICD, "E10.9")], "2010", status="refuted")
    no_birth = patient("p3")
    del no_birth["birthDate"]
    return [
        patient("p1", birth="1950"),
        obs("p1", 1, "4548-4", 5.0, "2017-06"),
        obs("p1", 2, "4548-4", 6.0, "2018-03-01T00:00:00Z"),
        *tied,
        voided,
        obs("p1", 4, "4548-4", 7.0, "2018-09-01T00:00:00"),  # no zone: UTC
        obs("p1", 5, "4548-4", 7.5, "2019-02-01T00:00:00-05:00"),
        cond("p1", 1, [(ICD, "I10")], "2016-01-01", "2018-06"),
        refuted,
        enc("p1", 1, "EMER", "2018-02-01T10:00:00Z", "2018-02-01T14:00:00Z"),
        patient("p2", birth="1970-05-05"),
        obs("p2", 6, "4548-4", 8.0, "2018-01-01"),
        obs("p2", 7, "4548-4", 8.5, "2018-06-01"),
        cond("p2", 3, [(ICD, "E10.9")], "2018-03-01"),  # excluded from March 2018 on
        no_birth,
        obs("p3", 8, "4548-4", 6.1, "2018-01-01"),
        obs("p3", 10, "4548-4", 6.2, "2018-02-01"),
    ]


def test_edges_agree_with_the_per_patient_path(tmp_path: Path) -> None:
    task = edge_task()
    resources = edge_patients()
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        pid = r["id"] if r["resourceType"] == "Patient" else r["subject"]["reference"][8:]
        by_patient.setdefault(pid, []).append(r)
    expected = build_dataset(task, list(by_patient.items()))
    got = dataset_from_ndjson(task, write_ndjson(tmp_path, resources))
    assert_same(table(got), table(expected))
    rows = table(got)
    # p1's index times: 2017-06, 2018-03-01 (two observations at the same instant), 2018-09
    # (2019-02-01 has no later value); the tie is broken by resource key: o3b is "latest"
    assert rows[rows.pid == "p1"]["at"].tolist() == [
        "2017-06-01T00:00:00Z",
        "2018-03-01T00:00:00Z",
        "2018-09-01T00:00:00Z",
    ]
    march = rows[(rows.pid == "p1") & (rows["at"] == "2018-03-01T00:00:00Z")].iloc[0]
    assert march.a1c_latest == 6.5 and march.a1c_count == 3 and march.htn == 0.0
    assert rows[rows.pid == "p1"].y.tolist() == [6.0, 7.0, 7.5]  # first after, tie by key
    assert rows[rows.pid == "p2"]["at"].tolist() == ["2018-01-01T00:00:00Z"]  # then excluded
    assert np.isnan(rows[rows.pid == "p3"].age).all()  # no birth date: age unknown


def test_missing_directory_and_patients_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="no such directory"):
        ndjson_by_type(tmp_path / "absent")
    write_ndjson(tmp_path, [obs("p1", 1, "4548-4", 5.0, "2018-01-01")])
    with pytest.raises(BadRequest, match=r"no Patient\.ndjson"):
        ndjson_by_type(tmp_path)


def test_dataset_from_store_batch_equals_per_patient(store: Store) -> None:
    population = Population(3)
    load_into_store(population, 8, store)
    task = load_task("readmission_30d")
    direct = build_dataset(task, [(r[0]["id"], r) for _, r in population.patients(8)])
    assert len(direct.y) > 0
    assert_same(table(dataset_from_store_batch(task, store)), table(direct))
