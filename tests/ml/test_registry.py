"""The model registry over a real store (SQLite and PostgreSQL) with a real trained model."""

from __future__ import annotations

import gc
import hashlib
from collections import OrderedDict
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import skops.io as sio

from carebase.errors import BadRequest, Conflict, NotFound, StorageError
from carebase.ml import registry
from carebase.ml.features import build_dataset
from carebase.ml.tasks import load_task
from carebase.store import ml_models
from carebase.store.base import Store
from carebase.store.sql_store import SqlStore
from ml_serving_data import TASK, patients, trained_model


def test_register_load_round_trip_predicts_the_same(store: Store) -> None:
    trained = trained_model()
    record = registry.register(store, trained)
    assert (record.id, record.version, record.status) == (f"{TASK}-v1", 1, "candidate")
    assert record.data_fingerprint == trained.data_fingerprint
    assert record.code_version.startswith("0.")
    assert record.metrics  # the evaluation made at training time, as JSON
    data = ml_models.artifact(store, record.id)  # type: ignore[arg-type]
    assert data is not None and hashlib.sha256(data).hexdigest() == record.sha256
    assert not data.startswith(b"\x80")  # a skops zip archive, not a pickle
    gc.unfreeze()
    registry._SETTLED.clear()
    loaded = registry.load(store, record.id)
    rows = _rows()
    np.testing.assert_allclose(loaded.predict(rows), trained.predict(rows))
    assert loaded.task.name == TASK and loaded.feature_names == trained.feature_names
    # a process that loaded a model has frozen its heap out of cyclic GC (serving latency)
    assert gc.get_freeze_count() > 0


def _rows() -> Any:
    """Feature rows of real patients (the first 40 of the training population)."""
    return build_dataset(load_task(TASK), list(patients(40))).X


def test_promote_keeps_one_active_model_per_task(store: Store) -> None:
    first = registry.register(store, trained_model())
    second = registry.register(store, trained_model())
    assert registry.active(store, TASK) is None
    with pytest.raises(NotFound):
        registry.serving(store, None, TASK)
    registry.promote(store, first.id)
    record, retired = registry.promote(store, second.id)
    assert (record.status, retired) == ("active", first.id)
    assert registry.get(store, first.id).status == "retired"
    assert registry.serving(store, None, TASK).id == second.id
    assert registry.serving(store, None).id == second.id  # the only active model
    with pytest.raises(Conflict, match="retired; only active models serve"):
        registry.serving(store, first.id)
    registry.retire(store, second.id)
    assert registry.active(store, TASK) is None
    with pytest.raises(NotFound) as unknown:
        registry.get(store, "nope-v9")
    assert unknown.value.issues[0].expression == ["model"]


def test_several_active_models_need_a_model_id(store: Store) -> None:
    first = registry.register(store, trained_model())
    assert isinstance(store, SqlStore)
    other = ml_models.insert(
        store, task="other_task", model_type="logistic", artifact=b"x",
        sha256=hashlib.sha256(b"x").hexdigest(), data_fingerprint="0", metrics={},
        code_version="0",
    )  # fmt: skip
    registry.promote(store, first.id)
    registry.promote(store, other.id)
    with pytest.raises(BadRequest, match="Several models are active"):
        registry.serving(store, None)


def test_a_tampered_artifact_is_refused(store: Store) -> None:
    record = registry.register(store, trained_model())
    assert isinstance(store, SqlStore)
    data = bytearray(ml_models.artifact(store, record.id) or b"")
    data[len(data) // 2] ^= 0xFF
    with store.writing() as cur:
        cur.execute(
            store.q("UPDATE ml_model SET artifact = ? WHERE id = ?"), (bytes(data), record.id)
        )
    with pytest.raises(StorageError, match="altered after registration"):
        registry.load(store, record.id)


def test_untrusted_types_are_refused_even_with_the_right_digest(store: Store) -> None:
    # a file whose digest is registered, but that holds types outside the trusted list
    data = sio.dumps({"format": 1, "task": TASK, "x": OrderedDict(a=Fraction(1, 3))})
    assert isinstance(store, SqlStore)
    record = ml_models.insert(
        store, task=TASK, model_type="logistic", artifact=data,
        sha256=hashlib.sha256(data).hexdigest(), data_fingerprint="0", metrics={},
        code_version="0",
    )  # fmt: skip
    with pytest.raises(StorageError, match=r"outside the trusted list: .*Fraction"):
        registry.load(store, record.id)
