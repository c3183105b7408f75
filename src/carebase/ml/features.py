"""Feature tables from FHIR: SQL on FHIR views turn each patient's resources into rows, and a
task's cohort, index times, labels, exclusions and features are computed from those rows,
using only what was known at or before each index time."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import numpy as np
import orjson
import pandas as pd

from carebase.analytics import get_runner
from carebase.analytics.python_runner import CompiledView, compile_view
from carebase.analytics.views import load_view
from carebase.errors import BadRequest
from carebase.ml.tasks import Code, Task
from carebase.ml.timeutil import iso, maybe_time
from carebase.store.base import Store, every_match

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
# Statuses that mean "this never happened"; such resources feed neither features nor labels.
VOID = {"entered-in-error", "cancelled", "refuted", "not-done"}
#: the resource types a task reads (the store streams these per patient compartment)
TYPES = ("Observation", "Condition", "MedicationRequest", "Encounter")


@functools.cache
def feature_view(name: str) -> dict[str, Any]:
    """A library view, or one of ml's own (`ml/views/*.json`): where the library's drops what
    features need (every coding of a condition, blood pressure components), or reads much
    they do not (race, address, displays, reasons: flattening a population pays per column)."""
    own = resources.files("carebase.ml").joinpath("views", f"{name}.json")
    if own.is_file():
        view: dict[str, Any] = orjson.loads(own.read_bytes())
        return view
    return load_view(name)


VIEWS = {
    "patient": "patient_facts",
    "observation": "observation_values",
    "condition": "condition_codings",
    "medication": "medication_facts",
    "encounter": "encounter_facts",
}


@dataclass
class Fact:
    """One row of a view with its time parsed: `at` is when it became known."""

    ref: str  # "Type/id"
    at: datetime
    system: str | None = None
    code: str | None = None
    value: float | None = None
    start: datetime | None = None  # condition onset, encounter start
    kind: str | None = None  # encounter class


@dataclass
class Record:
    """One patient's facts, each list in time order."""

    patient_id: str
    birth: datetime | None = None
    sex: str | None = None
    death: datetime | None = None
    deceased: bool = False
    observations: list[Fact] = field(default_factory=list)
    conditions: list[Fact] = field(default_factory=list)
    medications: list[Fact] = field(default_factory=list)
    encounters: list[Fact] = field(default_factory=list)


@dataclass
class Dataset:
    """A feature table: one row per (patient, index time), with its label."""

    X: pd.DataFrame
    y: np.ndarray
    patient_ids: list[str]
    index_times: list[str]
    feature_names: list[str]


def _time_order(fact: Fact) -> tuple[datetime, str, float]:
    """Facts in time order; facts of the same instant by resource key, then value, so that
    "latest" and "first" do not depend on the order resources were read in (the batch path,
    `features_batch`, orders the same way)."""
    return fact.at, fact.ref, -math.inf if fact.value is None else fact.value


def _records(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Record]:
    out: dict[str, Record] = {}
    for row in rows["patient"]:
        pid = str(row["id"])
        out[pid] = Record(
            pid,
            birth=maybe_time(row.get("birth_date")),
            sex=row.get("gender") or None,
            death=maybe_time(row.get("deceased_date")),
            deceased=bool(row.get("deceased")),
        )

    def record(pid: object) -> Record | None:
        return out.get(str(pid)) if pid is not None else None

    for row in rows["observation"]:
        at = maybe_time(row.get("effective")) or maybe_time(row.get("issued"))
        rec = record(row.get("patient_id"))
        # an observation without a time cannot be placed before the index: it is left out
        if rec is None or at is None or row.get("value") is None or row.get("status") in VOID:
            continue
        rec.observations.append(
            Fact(
                f"Observation/{row['id']}",
                at,
                row.get("code_system"),
                row.get("code"),
                float(row["value"]),
            )
        )
    for row in rows["condition"]:
        onset = maybe_time(row.get("onset"))
        recorded = maybe_time(row.get("recorded_date"))
        known = recorded or onset
        rec = record(row.get("patient_id"))
        if rec is None or known is None or row.get("verification_status") in VOID:
            continue
        rec.conditions.append(
            Fact(
                f"Condition/{row['id']}",
                known,
                row.get("code_system"),
                row.get("code"),
                start=onset or known,
            )
        )
    for row in rows["medication"]:
        at = maybe_time(row.get("authored_on"))
        rec = record(row.get("patient_id"))
        if rec is None or at is None or row.get("status") in VOID or not row.get("rxnorm_code"):
            continue
        rec.medications.append(
            Fact(f"MedicationRequest/{row['id']}", at, RXNORM, row.get("rxnorm_code"))
        )
    for row in rows["encounter"]:
        start = maybe_time(row.get("period_start"))
        end = maybe_time(row.get("period_end")) or start
        rec = record(row.get("patient_id"))
        if rec is None or start is None or end is None or row.get("status") in VOID:
            continue
        rec.encounters.append(
            Fact(f"Encounter/{row['id']}", end, start=start, kind=row.get("class"))
        )
    for rec in out.values():
        for facts in (rec.observations, rec.conditions, rec.medications, rec.encounters):
            facts.sort(key=_time_order)
    return out


@functools.cache
def _compiled(name: str) -> CompiledView:
    """A feature view compiled once per process for the Python runner (parsing and
    compiling a view cost more than running it over one patient's resources)."""
    return compile_view(feature_view(name))


def records_from_resources(
    resources_: list[dict[str, Any]], engine: str = "python"
) -> dict[str, Record]:
    """Run the feature views over `resources_` (any number of patients) -> Record per patient."""
    if engine != "python":
        runner = get_runner(engine)
        views = VIEWS.items()
        rows = {key: list(runner.run(feature_view(name), resources_)) for key, name in views}
        return _records(rows)
    by_type: dict[object, list[dict[str, Any]]] = {}
    for resource in resources_:
        by_type.setdefault(resource.get("resourceType"), []).append(resource)
    rows = {}
    for key, name in VIEWS.items():
        compiled = _compiled(name)
        rows[key] = [
            row for r in by_type.get(compiled.view.resource, []) for row in compiled.rows(r)
        ]
    return _records(rows)


def _matches(codes: tuple[Code, ...], fact: Fact) -> bool:
    return any(c.matches(fact.system, fact.code) for c in codes)


def _window(at: datetime, index: datetime, lookback_days: int | None) -> bool:
    # strictly nothing after the index time
    if at > index:
        return False
    return lookback_days is None or at >= index - timedelta(days=lookback_days)


def index_times(task: Task, rec: Record) -> list[tuple[datetime, Fact | None]]:
    """Candidate index times of one patient (with the index encounter for discharges)."""
    spec = task.index
    if spec.type == "fixed":
        assert spec.date is not None
        out: list[tuple[datetime, Fact | None]] = [(spec.date, None)]
    elif spec.type == "encounter_end":
        out = [(e.at, e) for e in rec.encounters if e.kind in spec.classes]
    else:
        seen = sorted({o.at for o in rec.observations if _matches(spec.codes, o)})
        out = [(t, None) for t in seen]
    if spec.not_after is not None:
        out = [(t, e) for t, e in out if t <= spec.not_after]
    return out


def label(task: Task, rec: Record, index: datetime, index_encounter: Fact | None) -> float | None:
    """The outcome after `index` (1.0/0.0, or the value), None when a regression label is not
    observed in the window."""
    spec = task.label
    end = index + timedelta(days=spec.within_days)
    if spec.type == "condition":
        hit = any(
            index < c.start <= end for c in rec.conditions if c.start and _matches(spec.codes, c)
        )
        return float(hit)
    if spec.type == "encounter":
        hit = any(
            index < e.start <= end
            for e in rec.encounters
            if e.start and e.kind in spec.classes and e is not index_encounter
        )
        return float(hit)
    for o in rec.observations:
        if index < o.at <= end and _matches(spec.codes, o):
            return o.value
    return None


def _age(rec: Record, index: datetime) -> float:
    return (index - rec.birth).days / 365.25 if rec.birth else math.nan


def eligible(task: Task, rec: Record, index: datetime) -> bool:
    """Whether this (patient, index time) is in the cohort and not excluded."""
    age = _age(rec, index)
    if task.min_age is not None and not age >= task.min_age:
        return False
    if task.max_age is not None and not age <= task.max_age:
        return False
    if task.require_encounter_days is not None and not any(
        _window(e.at, index, task.require_encounter_days) for e in rec.encounters
    ):
        return False
    for exclusion in task.exclusions:
        if exclusion.type == "deceased":
            if rec.death is not None and rec.death <= index:
                return False
        elif any(
            (c.start is not None and c.start <= index) or c.at <= index
            for c in rec.conditions
            if _matches(exclusion.codes, c)
        ):
            return False
    return True


def _observation_stats(values: list[tuple[datetime, float]], stat: str) -> float:
    if stat == "count":
        return float(len(values))
    if not values:
        return math.nan
    numbers = [v for _, v in values]
    if stat == "latest":
        return values[-1][1]
    if stat == "mean":
        return float(sum(numbers) / len(numbers))
    return float(min(numbers) if stat == "min" else max(numbers))


def features(
    task: Task,
    rec: Record,
    index: datetime,
    index_encounter: Fact | None = None,
    used: set[str] | None = None,
) -> dict[str, object]:
    """The task's features of one patient at `index`; `used` collects the resources read."""
    row: dict[str, object] = {}
    note = used.add if used is not None else (lambda _ref: None)
    if "age" in task.demographics:
        row["age"] = _age(rec, index)
    if "sex" in task.demographics:
        row["sex"] = rec.sex or "unknown"
    if used is not None and (rec.birth or rec.sex):
        note(f"Patient/{rec.patient_id}")
    for spec in task.observations:
        hits = [
            o
            for o in rec.observations
            if _window(o.at, index, spec.lookback_days) and _matches(spec.codes, o)
        ]
        for o in hits:
            note(o.ref)
        values = [(o.at, float(o.value)) for o in hits if o.value is not None]
        for stat in spec.stats:
            row[f"{spec.name}_{stat}"] = _observation_stats(values, stat)
    for group, facts in ((task.conditions, rec.conditions), (task.medications, rec.medications)):
        for flag in group:
            hits = [
                f
                for f in facts
                if _window(f.at, index, flag.lookback_days) and _matches(flag.codes, f)
            ]
            for f in hits:
                note(f.ref)
            row[flag.name] = float(bool(hits))
    for spec_e in task.encounters:
        hits = [
            e
            for e in rec.encounters
            if e.kind in spec_e.classes and _window(e.at, index, spec_e.lookback_days)
        ]
        for e in hits:
            note(e.ref)
        row[spec_e.name] = float(len(hits))
    if "length_of_stay_days" in task.index_encounter:
        stay = math.nan
        if index_encounter is not None and index_encounter.start is not None:
            stay = (index_encounter.at - index_encounter.start).total_seconds() / 86400
            note(index_encounter.ref)
        row["length_of_stay_days"] = stay
    return row


def _rows_of_patient(
    task: Task, rec: Record
) -> Iterator[tuple[datetime, dict[str, object], float]]:
    candidates = []
    for index, encounter in index_times(task, rec):
        if not eligible(task, rec, index):
            continue
        outcome = label(task, rec, index, encounter)
        if outcome is None:
            continue
        candidates.append((index, encounter, outcome))
    if task.index.select == "first":
        candidates = candidates[:1]
    elif task.index.select == "last":
        candidates = candidates[-1:]
    for index, encounter, outcome in candidates:
        yield index, features(task, rec, index, encounter), outcome


def _batches(
    resources_by_patient: Iterable[tuple[str, list[dict[str, Any]]]], size: int
) -> Iterator[tuple[list[str], list[dict[str, Any]]]]:
    ids: list[str] = []
    batch: list[dict[str, Any]] = []
    for pid, items in resources_by_patient:
        ids.append(pid)
        batch.extend(items)
        if len(ids) >= size:
            yield ids, batch
            ids, batch = [], []
    if ids:
        yield ids, batch


def build_dataset(
    task: Task,
    resources_by_patient: Iterable[tuple[str, list[dict[str, Any]]]],
    *,
    engine: str = "python",
    batch_size: int = 100,
) -> Dataset:
    """The task's feature table over patients given as (patient id, their resources); the
    views run over batches of `batch_size` patients so memory stays bounded."""
    rows: list[dict[str, object]] = []
    y: list[float] = []
    pids: list[str] = []
    times: list[str] = []
    for ids, batch in _batches(resources_by_patient, batch_size):
        records = records_from_resources(batch, engine)
        for pid in ids:
            rec = records.get(pid)
            if rec is None:
                continue  # no Patient resource among its resources: no age, sex, or death
            for index, row, outcome in _rows_of_patient(task, rec):
                rows.append(row)
                y.append(outcome)
                pids.append(pid)
                times.append(iso(index))
    names = task.feature_names()
    X = pd.DataFrame(rows, columns=names)
    for name in names:
        if name not in task.categorical_features():
            X[name] = X[name].astype(float)
    target = np.asarray(y, dtype=int if task.kind == "classification" else float)
    return Dataset(X, target, pids, times, names)


def patient_features(
    task: Task, resources_: list[dict[str, Any]], index_time: datetime
) -> tuple[pd.DataFrame, list[str]]:
    """One patient's features at `index_time` (aware) for serving, and the "Type/id" of every
    resource that fed a feature. No cohort or exclusion check: the caller asked for this one."""
    if index_time.tzinfo is None:
        raise BadRequest("index_time must be timezone-aware", location="index_time")
    records = records_from_resources(resources_)
    if len(records) != 1:
        raise BadRequest(
            f"expected the resources of exactly one patient (one Patient), got {len(records)}",
            location="resources",
        )
    rec = next(iter(records.values()))
    encounter = None
    if task.index.type == "encounter_end":
        ended = [e for e in rec.encounters if e.kind in task.index.classes and e.at <= index_time]
        encounter = ended[-1] if ended else None
    used: set[str] = set()
    row = features(task, rec, index_time, encounter, used)
    X = pd.DataFrame([row], columns=task.feature_names())
    return X, sorted(used)


def _compartment(store: Store, patient_id: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(e.body)
        for type_ in TYPES
        for e in every_match(store, type_, [], 1000, compartment=("Patient", patient_id))
        if e.body is not None
    ]


def iter_store_patients(store: Store) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(patient id, Patient + its compartment's resources of TYPES) for every patient."""
    patients = [(p.id, p.body) for p in store.iter_current("Patient") if p.body is not None]
    for pid, body in patients:
        yield pid, [orjson.loads(body), *_compartment(store, pid)]


def dataset_from_store(task: Task, store: Store, *, engine: str = "python") -> Dataset:
    """`build_dataset` over every patient in `store`, one compartment at a time."""
    return build_dataset(task, iter_store_patients(store), engine=engine)
