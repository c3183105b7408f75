"""The model registry: versioned, checksummed skops artifacts of trained models, and which
model of each task is active (the only one that serves).

A model is saved as a skops file (never pickle: loading a pickle runs whatever code it
names). The file holds the fitted scikit-learn pipeline and plain data (feature names,
reference values, model type, task name); the task itself is loaded again by name, so a
file can never smuggle in code through a custom class. Loading refuses a file whose
SHA-256 differs from the one recorded at registration (tampered or corrupted) and a file
holding any type outside scikit-learn's own trusted set plus `TRUSTED_TYPES`.
"""

from __future__ import annotations

import gc
import hashlib
import subprocess
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import skops.io as sio

from carebase import __version__
from carebase.errors import BadRequest, CarebaseError, Conflict, NotFound, StorageError
from carebase.ml.tasks import load_task
from carebase.ml.training import TrainedModel
from carebase.store import ml_models
from carebase.store.base import Store
from carebase.store.ml_models import ACTIVE, RETIRED, ModelRow
from carebase.store.sql_store import SqlStore

#: A registered model (its row, without the artifact bytes).
ModelRecord = ModelRow
#: Types skops does not trust by default that our pipelines contain; anything else in a file
#: is refused. numpy dtypes are data; TreePredictor holds a gradient-boosting tree's nodes.
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)
#: Version of the artifact's layout (the dict `artifact_bytes` writes).
ARTIFACT_FORMAT = 1

__all__ = [
    "TRUSTED_TYPES",
    "ModelRecord",
    "active",
    "artifact_bytes",
    "code_version",
    "get",
    "list_models",
    "load",
    "promote",
    "register",
    "retire",
    "serving",
]


def _sql(store: Store) -> SqlStore:
    if not isinstance(store, SqlStore):
        raise TypeError(f"the model registry needs a SQL store, not {type(store).__name__}")
    return store


def code_version() -> str:
    """carebase's version, plus the git commit of the source tree when it is a checkout."""
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}" if commit else __version__


def artifact_bytes(trained: TrainedModel) -> bytes:
    """The skops file of a trained model: the pipeline and plain data, no custom classes."""
    payload = {
        "format": ARTIFACT_FORMAT,
        "task": trained.task.name,
        "model_type": trained.model_type,
        "pipeline": trained.pipeline,
        "feature_names": list(trained.feature_names),
        "reference": {str(k): float(v) for k, v in trained.reference.items()},
        "trained_at": _iso(trained.trained_at),
        "data_fingerprint": trained.data_fingerprint,
    }
    data: bytes = sio.dumps(payload)
    return data


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def register(store: Store, trained: TrainedModel) -> ModelRecord:
    """Save `trained` as its task's next version, a candidate (promote it to serve)."""
    data = artifact_bytes(trained)
    return ml_models.insert(
        _sql(store),
        task=trained.task.name,
        model_type=trained.model_type,
        artifact=data,
        sha256=hashlib.sha256(data).hexdigest(),
        data_fingerprint=trained.data_fingerprint,
        metrics=trained.metrics,
        code_version=code_version(),
    )


def list_models(
    store: Store, task: str | None = None, status: str | None = None
) -> list[ModelRecord]:
    """Registered models, by task then newest version first (optionally one task/status)."""
    return ml_models.list_models(_sql(store), task=task, status=status)


def get(store: Store, model_id: str) -> ModelRecord:
    """The registered model `model_id`; 404 naming the `model` parameter when unknown."""
    record = ml_models.get(_sql(store), model_id)
    if record is None:
        raise NotFound(
            f"No model {model_id!r} is registered; `carebase ml models` lists them",
            location="model",
        )
    return record


def active(store: Store, task: str) -> ModelRecord | None:
    """The active model of `task`, or None."""
    found = ml_models.list_models(_sql(store), task=task, status=ACTIVE)
    return found[0] if found else None


def serving(store: Store, model_id: str | None, task: str | None = None) -> ModelRecord:
    """The model a prediction uses: `model_id` (which must be active: 409 otherwise), else
    the active model of `task`; 404 when there is none."""
    if model_id is not None:
        record = get(store, model_id)
        if record.status != ACTIVE:
            raise Conflict(
                f"Model {model_id} is {record.status}; only active models serve predictions "
                f"(`carebase ml promote {model_id}` activates it)",
                location="model",
            )
        return record
    if task is not None:
        record_or_none = active(store, task)
        if record_or_none is None:
            raise NotFound(f"Task {task} has no active model", location="model")
        return record_or_none
    serving_now = ml_models.list_models(_sql(store), status=ACTIVE)
    if len(serving_now) == 1:
        return serving_now[0]
    if not serving_now:
        raise NotFound(
            "No model is active; `carebase ml promote MODEL` activates one", location="model"
        )
    names = ", ".join(r.id for r in serving_now)
    raise BadRequest(f"Several models are active ({names}): say which with model=ID",
                     location="model")  # fmt: skip


def promote(store: Store, model_id: str) -> tuple[ModelRecord, str | None]:
    """Make `model_id` its task's active model; returns it and the id of the model it
    replaced (now retired), if any."""
    get(store, model_id)
    retired = ml_models.promote(_sql(store), model_id)
    return get(store, model_id), retired


def retire(store: Store, model_id: str) -> ModelRecord:
    """Take `model_id` out of service (it stays registered, and can be promoted again)."""
    get(store, model_id)
    ml_models.set_status(_sql(store), model_id, RETIRED)
    return get(store, model_id)


# Loaded models by (id, sha256): loading a skops file costs milliseconds to a second, and
# serving loads the same few models again and again. A model's bytes never change under an
# id (a tampered row has another digest and misses the cache, then fails verification).
_LOADED: dict[tuple[str, str], TrainedModel] = {}
_LOCK = threading.Lock()


def load(store: Store, model_id: str) -> TrainedModel:
    """The trained model `model_id`, verified: StorageError (500, the stored data is not
    what was registered) when its artifact's SHA-256 is not the registered one, or it holds
    a type outside the trusted list."""
    record = get(store, model_id)
    key = (record.id, record.sha256)
    with _LOCK:
        cached = _LOADED.get(key)
    if cached is not None:
        _settle_heap()
        return cached
    data = ml_models.artifact(_sql(store), model_id)
    assert data is not None
    trained = load_artifact(data, record)
    with _LOCK:
        _LOADED[key] = trained
    _settle_heap()
    return trained


_SETTLED = threading.Event()


def _settle_heap() -> None:
    """Once per process, after its first model load: what is alive is frozen out of cyclic
    garbage collection (`gc.freeze`), as ingest does (`data/loader.py`). A serving process
    holds a large long-lived heap (numpy, pandas, scikit-learn, the model, the R4
    definitions) while each prediction builds thousands of short-lived objects (the
    patient's resources and view rows); the collector then ran about ten times per CDS
    call, its full collections rescanning that heap, ~20 ms a call on the benchmark
    machine (bench/bench_ml.py). Reference counting still frees acyclic garbage at once."""
    if _SETTLED.is_set():
        return
    _SETTLED.set()
    gc.collect()
    gc.freeze()


def load_artifact(data: bytes, record: ModelRecord) -> TrainedModel:
    """Rebuild the trained model of `record` from its artifact bytes, verifying them."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != record.sha256:
        raise StorageError(
            f"The artifact of model {record.id} has SHA-256 {digest}, not the registered "
            f"{record.sha256}: it was altered after registration; refusing to load it "
            "(register the model again from training)",
            location=f"ml_model[{record.id}].artifact",
        )
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises assorted errors for a corrupt archive
        raise StorageError(
            f"The artifact of model {record.id} is not a readable skops file: {exc}",
            location=f"ml_model[{record.id}].artifact",
        ) from exc
    unknown = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unknown:
        raise StorageError(
            f"The artifact of model {record.id} holds types outside the trusted list: "
            f"{', '.join(unknown)}; refusing to load it",
            location=f"ml_model[{record.id}].artifact",
        )
    payload: dict[str, Any] = sio.loads(data, trusted=list(untrusted))
    if payload.get("format") != ARTIFACT_FORMAT or payload.get("task") != record.task:
        raise StorageError(
            f"The artifact of model {record.id} has layout {payload.get('format')!r} for task "
            f"{payload.get('task')!r}; expected layout {ARTIFACT_FORMAT} for {record.task}",
            location=f"ml_model[{record.id}].artifact",
        )
    try:
        task = load_task(record.task)
    except CarebaseError as exc:
        raise NotFound(
            f"Model {record.id} was trained for task {record.task}, which this version of "
            f"carebase does not ship: {exc.message}",
            location="model",
        ) from exc
    return TrainedModel(
        task=task,
        model_type=payload["model_type"],
        pipeline=payload["pipeline"],
        feature_names=list(payload["feature_names"]),
        reference=dict(payload["reference"]),
        metrics=record.metrics,
        trained_at=payload["trained_at"],
        data_fingerprint=payload["data_fingerprint"],
    )
