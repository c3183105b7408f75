"""The ML model registry's SQL: insert a version, list, get, and move a model between
candidate, active and retired (migration 8, table `ml_model`).

Only this module reads or writes `ml_model`; `ml/registry.py` decides what goes in (the
skops bytes, their SHA-256, metrics) and checks what comes out. Promotion runs in one
transaction: the task's active model retires and the new one becomes active together, and
the partial unique index on (task) WHERE status = 'active' refuses a second active model
even if two promotions race.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from carebase.store.sql_store import SqlStore

ML_TABLES = ("ml_model",)
CANDIDATE, ACTIVE, RETIRED = "candidate", "active", "retired"
STATUSES = (CANDIDATE, ACTIVE, RETIRED)
_COLUMNS = (
    "id, task, version, model_type, status, sha256, data_fingerprint, metrics, code_version,"
    " created, updated"
)


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One registered model version, without its artifact bytes (`artifact()` reads them)."""

    id: str
    task: str
    version: int
    model_type: str
    status: str
    sha256: str
    data_fingerprint: str
    metrics: dict[str, Any]
    code_version: str
    created: int
    updated: int


def _row(row: Any) -> ModelRow:
    return ModelRow(
        id=row[0],
        task=row[1],
        version=int(row[2]),
        model_type=row[3],
        status=row[4],
        sha256=row[5],
        data_fingerprint=row[6],
        metrics=orjson.loads(row[7]),
        code_version=row[8],
        created=int(row[9]),
        updated=int(row[10]),
    )


def insert(
    store: SqlStore,
    task: str,
    model_type: str,
    artifact: bytes,
    sha256: str,
    data_fingerprint: str,
    metrics: dict[str, Any],
    code_version: str,
) -> ModelRow:
    """Add a candidate model as the task's next version (1, 2, ...); its id is
    `{task}-v{version}` (readable, stable, safe in URLs and CDS service ids)."""
    at = int(time.time() * 1000)
    metrics_text = orjson.dumps(metrics, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    with store.writing() as cur:
        if store.dialect == "postgresql":
            # serialise version numbering per task (the unique index would refuse a race,
            # but an advisory lock makes the second registration wait instead of failing)
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ml_model:{task}",))
        row = cur.execute(
            store.q("SELECT COALESCE(MAX(version), 0) FROM ml_model WHERE task = ?"), (task,)
        ).fetchone()
        version = int(row[0]) + 1
        id_ = f"{task}-v{version}"
        cur.execute(
            store.q(
                "INSERT INTO ml_model (id, task, version, model_type, status, artifact, sha256,"
                " data_fingerprint, metrics, code_version, created, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            (id_, task, version, model_type, CANDIDATE, artifact, sha256, data_fingerprint,
             metrics_text, code_version, at, at),
        )  # fmt: skip
    found = get(store, id_)
    assert found is not None
    return found


def get(store: SqlStore, id_: str) -> ModelRow | None:
    """The model `id_`, or None."""
    with store.reading() as cur:
        row = cur.execute(
            store.q(f"SELECT {_COLUMNS} FROM ml_model WHERE id = ?"), (id_,)
        ).fetchone()
    return _row(row) if row else None


def artifact(store: SqlStore, id_: str) -> bytes | None:
    """The stored artifact bytes of model `id_`, or None."""
    with store.reading() as cur:
        row = cur.execute(store.q("SELECT artifact FROM ml_model WHERE id = ?"), (id_,)).fetchone()
    return bytes(row[0]) if row else None


def list_models(
    store: SqlStore, task: str | None = None, status: str | None = None
) -> list[ModelRow]:
    """Registered models, by task then newest version first (optionally one task/status)."""
    where, args = [], []
    if task is not None:
        where.append("task = ?")
        args.append(task)
    if status is not None:
        where.append("status = ?")
        args.append(status)
    sql = f"SELECT {_COLUMNS} FROM ml_model"
    if where:
        sql += " WHERE " + " AND ".join(where)
    with store.reading() as cur:
        rows = cur.execute(store.q(sql + " ORDER BY task, version DESC"), args).fetchall()
    return [_row(r) for r in rows]


def promote(store: SqlStore, id_: str) -> str | None:
    """Make `id_` its task's active model, retiring the previous active one in the same
    transaction; returns the retired model's id (None when there was none)."""
    at = int(time.time() * 1000)
    with store.writing() as cur:
        row = cur.execute(store.q("SELECT task FROM ml_model WHERE id = ?"), (id_,)).fetchone()
        if row is None:
            return None
        task = row[0]
        previous = cur.execute(
            store.q("SELECT id FROM ml_model WHERE task = ? AND status = ? AND id <> ?"),
            (task, ACTIVE, id_),
        ).fetchone()
        cur.execute(
            store.q("UPDATE ml_model SET status = ?, updated = ? WHERE task = ? AND status = ?"),
            (RETIRED, at, task, ACTIVE),
        )
        cur.execute(
            store.q("UPDATE ml_model SET status = ?, updated = ? WHERE id = ?"), (ACTIVE, at, id_)
        )
    return previous[0] if previous else None


def set_status(store: SqlStore, id_: str, status: str) -> None:
    """Set model `id_`'s status (retire it) without touching other models."""
    with store.writing() as cur:
        cur.execute(
            store.q("UPDATE ml_model SET status = ?, updated = ? WHERE id = ?"),
            (status, int(time.time() * 1000), id_),
        )
