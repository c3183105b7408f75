"""The model registry's SQL (`store/ml_models.py`) on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import pytest

from carebase.store import ml_models
from carebase.store.base import Store
from carebase.store.sql_store import SqlStore


def _insert(
    store: Store, task: str = "t2d_onset_3y", data: bytes = b"artifact"
) -> ml_models.ModelRow:
    assert isinstance(store, SqlStore)
    return ml_models.insert(
        store,
        task=task,
        model_type="logistic",
        artifact=data,
        sha256=hashlib.sha256(data).hexdigest(),
        data_fingerprint="f" * 64,
        metrics={"auroc": {"value": 0.8, "ci": [0.7, 0.9]}},
        code_version="0.1.0",
    )


def test_versions_count_per_task_and_rows_round_trip(store: Store) -> None:
    assert isinstance(store, SqlStore)
    first, second = _insert(store), _insert(store, data=b"other")
    other = _insert(store, task="readmission_30d")
    assert (first.id, first.version, second.version, other.version) == (
        "t2d_onset_3y-v1", 1, 2, 1,
    )  # fmt: skip
    assert first.status == ml_models.CANDIDATE
    assert first.metrics == {"auroc": {"value": 0.8, "ci": [0.7, 0.9]}}
    assert ml_models.artifact(store, second.id) == b"other"
    assert ml_models.get(store, "nope") is None and ml_models.artifact(store, "nope") is None
    listed = [r.id for r in ml_models.list_models(store, task="t2d_onset_3y")]
    assert listed == ["t2d_onset_3y-v2", "t2d_onset_3y-v1"]


def test_promote_retires_the_previous_active_model(store: Store) -> None:
    assert isinstance(store, SqlStore)
    first, second = _insert(store), _insert(store)
    other = _insert(store, task="readmission_30d")
    assert ml_models.promote(store, first.id) is None
    ml_models.promote(store, other.id)
    assert ml_models.promote(store, second.id) == first.id
    status = {r.id: r.status for r in ml_models.list_models(store)}
    assert status == {first.id: "retired", second.id: "active", other.id: "active"}
    assert [r.id for r in ml_models.list_models(store, status="active", task="t2d_onset_3y")] == [
        second.id
    ]
    ml_models.set_status(store, second.id, ml_models.RETIRED)
    assert ml_models.list_models(store, status="active", task="t2d_onset_3y") == []


def test_the_database_refuses_two_active_models_of_a_task(store: Store) -> None:
    assert isinstance(store, SqlStore)
    first, second = _insert(store), _insert(store)
    ml_models.set_status(store, first.id, ml_models.ACTIVE)
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        ml_models.set_status(store, second.id, ml_models.ACTIVE)
