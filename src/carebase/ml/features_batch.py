"""Feature tables for a whole population at once: each feature view runs once over its NDJSON
with the DuckDB runner, its rows going into the task's fact tables (`dataset_from_ndjson`;
or to Parquet files first, `flatten_views`, which `dataset_from_views` reads), and a task's
index times, cohort, exclusions, labels and look-back-window features are then computed by
set-based SQL in DuckDB over those tables.

It computes what `features.build_dataset` computes patient by patient (the per-patient path
serving uses), row for row: the same facts are kept (`features._records`), times are read the
same way (`timeutil.parse_time`: partial dates mean their first instant, no zone means UTC),
ties in time are broken the same way (by resource key), and nothing after an index time is
read. The tests hold the two paths equal on generated patients."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from carebase.analytics.duckdb_runner import DuckDBRunner
from carebase.analytics.sql_dialect import quote
from carebase.errors import BadRequest
from carebase.ml.features import RXNORM, TYPES, VIEWS, VOID, Dataset, feature_view
from carebase.ml.tasks import Code, Task
from carebase.store.base import Store

#: the resource type each feature view reads
VIEW_TYPES = {
    "patient": "Patient",
    "observation": "Observation",
    "condition": "Condition",
    "medication": "MedicationRequest",
    "encounter": "Encounter",
}
_DAY_US = 86_400_000_000
_RXNORM = quote(RXNORM)
_VOID = "(" + ", ".join(quote(s) for s in sorted(VOID)) + ")"
#: FHIR date/dateTime/instant text -> microseconds since 1970 UTC, NULL when unreadable
#: (`timeutil.maybe_time`: YYYY and YYYY-MM are their first instant, no zone means UTC)
_TIME_MACRO = """
CREATE OR REPLACE MACRO fhir_us(s) AS CASE
  WHEN s IS NULL OR s = '' THEN NULL
  WHEN length(s) = 4 THEN epoch_us(TRY_CAST(s || '-01-01' AS TIMESTAMP))
  WHEN length(s) = 7 THEN epoch_us(TRY_CAST(s || '-01' AS TIMESTAMP))
  WHEN length(s) = 10 THEN epoch_us(TRY_CAST(s AS TIMESTAMP))
  ELSE epoch_us(TRY_CAST(s AS TIMESTAMPTZ)) END
"""


def ndjson_by_type(directory: Path) -> dict[str, list[Path]]:
    """The NDJSON files of `directory` the feature views read, by resource type
    (`<Type>.ndjson` or `.ndjson.gz`, as bulk export and `carebase generate` write them)."""
    if not directory.is_dir():
        raise BadRequest(f"{directory}: no such directory", location=str(directory))
    out: dict[str, list[Path]] = {}
    for type_ in VIEW_TYPES.values():
        files = [p for s in (".ndjson", ".ndjson.gz") if (p := directory / f"{type_}{s}").is_file()]
        out[type_] = files
    if not out["Patient"]:
        raise BadRequest(f"{directory}: no Patient.ndjson", location=str(directory))
    return out


def flatten_views(
    files_by_type: Mapping[str, Sequence[Path]],
    out_dir: Path,
    *,
    threads: int | None = None,
    task: Task | None = None,
) -> dict[str, Path]:
    """Runs each feature view over its type's NDJSON files with the DuckDB runner and writes
    its rows to `<out_dir>/<view>.parquet`; returns the file per view key. Without `task`,
    the files serve every task; with it, only the observations, conditions and medication
    requests whose text holds one of the task's codes are flattened (`_code_sets`; most of
    a population's observations are of other codes, and a view's columns cost far more
    than finding a code in the text), and the files serve that task only."""
    out_dir.mkdir(parents=True, exist_ok=True)
    runner = DuckDBRunner(threads)
    codes = _code_sets(task) if task is not None else {}
    out: dict[str, Path] = {}
    for key, name in VIEWS.items():
        target = out_dir / f"{name}.parquet"
        files, containing, within = _view_input(key, files_by_type, codes)
        runner.write_files(
            feature_view(name), files, "parquet", target, containing=containing, within=within
        )
        out[key] = target
    return out


def _view_input(
    key: str,
    files_by_type: Mapping[str, Sequence[Path]],
    codes: Mapping[str, tuple[Code, ...]],
) -> tuple[list[Path], list[str], tuple[str, ...]]:
    """(files, containing, within) of feature view `key`: its type's files, none when the
    task reads none of its facts, and the text pre-selection of the task's codes (`codes`,
    from `_code_sets`; empty for every task's views)."""
    files = list(files_by_type.get(VIEW_TYPES[key], []))
    wanted = codes.get(_FACT_TABLE.get(key, ""))
    if wanted is not None and not wanted:
        files = []  # the task reads none of these facts
    return files, _code_texts(wanted or ()), _CODED.get(key, ())


#: the fact table (`_code_sets`) of each view whose rows a task selects by code
_FACT_TABLE = {"observation": "obs", "condition": "cond", "medication": "med"}
#: the elements of those resources that hold the codes the views read
_CODED = {
    "observation": ("code", "component"),
    "condition": ("code",),
    "medication": ("medicationCodeableConcept",),
}


def _code_texts(codes: Iterable[Code]) -> list[str]:
    """How the codes appear in FHIR JSON text: `"<code>"`, or `"<prefix>` for a prefix."""
    return [f'"{c.code}' if c.prefix else f'"{c.code}"' for c in codes]


def _match(codes: tuple[Code, ...], system: str = "system", code: str = "code") -> str:
    """SQL: whether (system, code) is in the code set (`Code.matches`)."""
    parts = []
    for c in codes:
        test = f"starts_with({code}, {quote(c.code)})" if c.prefix else f"{code} = {quote(c.code)}"
        parts.append(f"({system} = {quote(c.system)} AND {test})")
    return "(" + " OR ".join(parts) + ")" if parts else "false"


def _in(values: Iterable[str]) -> str:
    items = [quote(v) for v in values]
    return "(" + ", ".join(items) + ")" if items else "(NULL)"


def _window(at: str, lookback_days: int | None) -> str:
    """SQL: `at` known by the row's index time `r.t`, within the look-back (`features._window`)."""
    sql = f"{at} <= r.t"
    if lookback_days is not None:
        sql += f" AND {at} >= r.t - {int(lookback_days) * _DAY_US}"
    return sql


def _code_sets(task: Task) -> dict[str, tuple[Code, ...]]:
    """Every code the task reads, per fact table: facts of other codes match nothing, so
    the tables keep only these (most of a population's observations are other codes)."""
    obs = [c for spec in task.observations for c in spec.codes]
    cond = [c for spec in task.conditions for c in spec.codes]
    cond += [c for exclusion in task.exclusions for c in exclusion.codes]
    if task.index.type == "observation":
        obs += task.index.codes
    if task.label.type == "observation_value":
        obs += task.label.codes
    elif task.label.type == "condition":
        cond += task.label.codes
    med = [c for spec in task.medications for c in spec.codes]
    return {"obs": tuple(obs), "cond": tuple(cond), "med": tuple(med)}


def _fact_tables(task: Task) -> dict[str, Callable[[str], str]]:
    """Per feature view, the statement making its table of facts from the view's rows (a
    relation), kept and timed as `features._records` keeps and times them (of the codes
    `task` reads); the patients' table first, the others keep facts of known patients."""
    codes = _code_sets(task)
    return {
        "patient": lambda rows: (
            f"""
        CREATE OR REPLACE TABLE pat AS
        SELECT CAST(id AS VARCHAR) AS pid, fhir_us(birth_date) AS birth,
               coalesce(nullif(gender, ''), 'unknown') AS sex, fhir_us(deceased_date) AS death
        FROM {rows} WHERE id IS NOT NULL"""
        ),
        "observation": lambda rows: (
            f"""
        CREATE OR REPLACE TABLE obs AS
        SELECT o.patient_id AS pid, 'Observation/' || o.id AS ref,
               coalesce(fhir_us(o.effective), fhir_us(o.issued)) AS ts,
               o.code_system AS system, o.code AS code, CAST(o.value AS DOUBLE) AS value
        FROM {rows} o SEMI JOIN pat ON pat.pid = o.patient_id
        WHERE o.value IS NOT NULL AND (o.status IS NULL OR o.status NOT IN {_VOID})
          AND coalesce(fhir_us(o.effective), fhir_us(o.issued)) IS NOT NULL
          AND {_match(codes["obs"], "o.code_system", "o.code")}"""
        ),
        "condition": lambda rows: (
            f"""
        CREATE OR REPLACE TABLE cond AS
        SELECT c.patient_id AS pid, 'Condition/' || c.id AS ref,
               coalesce(fhir_us(c.recorded_date), fhir_us(c.onset)) AS ts,
               coalesce(fhir_us(c.onset), fhir_us(c.recorded_date)) AS start,
               c.code_system AS system, c.code AS code
        FROM {rows} c SEMI JOIN pat ON pat.pid = c.patient_id
        WHERE coalesce(fhir_us(c.recorded_date), fhir_us(c.onset)) IS NOT NULL
          AND (c.verification_status IS NULL OR c.verification_status NOT IN {_VOID})
          AND {_match(codes["cond"], "c.code_system", "c.code")}"""
        ),
        "medication": lambda rows: (
            f"""
        CREATE OR REPLACE TABLE med AS
        SELECT m.patient_id AS pid, 'MedicationRequest/' || m.id AS ref,
               fhir_us(m.authored_on) AS ts,
               {_RXNORM} AS system, m.rxnorm_code AS code
        FROM {rows} m SEMI JOIN pat ON pat.pid = m.patient_id
        WHERE fhir_us(m.authored_on) IS NOT NULL AND coalesce(m.rxnorm_code, '') <> ''
          AND (m.status IS NULL OR m.status NOT IN {_VOID})
          AND {_match(codes["med"], _RXNORM, "m.rxnorm_code")}"""
        ),
        "encounter": lambda rows: (
            f"""
        CREATE OR REPLACE TABLE enc AS
        SELECT e.patient_id AS pid, 'Encounter/' || e.id AS ref,
               coalesce(fhir_us(e.period_end), fhir_us(e.period_start)) AS ts,
               fhir_us(e.period_start) AS start, e.class AS kind
        FROM {rows} e SEMI JOIN pat ON pat.pid = e.patient_id
        WHERE fhir_us(e.period_start) IS NOT NULL
          AND (e.status IS NULL OR e.status NOT IN {_VOID})"""
        ),
    }


def _age(t: str = "r.t") -> str:
    """SQL: `features._age` (whole days / 365.25; NULL without a birth date)."""
    return f"floor(({t} - p.birth) / {float(_DAY_US)}) / 365.25"


def _candidates(task: Task) -> str:
    """SQL: the candidate index times (`features.index_times`): pid, t, the index
    encounter's key, start and end (NULL unless encounter_end)."""
    spec = task.index
    if spec.type == "fixed":
        assert spec.date is not None
        t = int(spec.date.timestamp() * 1_000_000)
        sql = (
            f"SELECT pid, {t}::BIGINT AS t, NULL::VARCHAR AS eref, NULL::BIGINT AS estart FROM pat"
        )
    elif spec.type == "encounter_end":
        sql = (
            "SELECT pid, ts AS t, ref AS eref, start AS estart "
            f"FROM enc WHERE kind IN {_in(spec.classes)}"
        )
    else:
        sql = (
            "SELECT DISTINCT pid, ts AS t, NULL::VARCHAR AS eref, NULL::BIGINT AS estart "
            f"FROM obs WHERE {_match(spec.codes)}"
        )
    if spec.not_after is not None:
        sql = f"SELECT * FROM ({sql}) WHERE t <= {int(spec.not_after.timestamp() * 1_000_000)}"
    return sql


def _eligible(task: Task) -> list[str]:
    """SQL conditions on `r` (candidate) and `p` (patient): `features.eligible`."""
    out = []
    if task.min_age is not None:
        out.append(f"{_age()} >= {float(task.min_age)}")
    if task.max_age is not None:
        out.append(f"{_age()} <= {float(task.max_age)}")
    if task.require_encounter_days is not None:
        out.append(
            "EXISTS (SELECT 1 FROM enc e WHERE e.pid = r.pid AND "
            f"{_window('e.ts', task.require_encounter_days)})"
        )
    for exclusion in task.exclusions:
        if exclusion.type == "deceased":
            out.append("NOT coalesce(p.death <= r.t, false)")
        else:
            out.append(
                "NOT EXISTS (SELECT 1 FROM cond c WHERE c.pid = r.pid AND "
                f"{_match(exclusion.codes, 'c.system', 'c.code')} "
                "AND (c.start <= r.t OR c.ts <= r.t))"
            )
    return out


def _label(task: Task) -> str:
    """SQL: the outcome of candidate `r` (`features.label`)."""
    spec = task.label
    end = f"r.t + {int(spec.within_days) * _DAY_US}"
    if spec.type == "condition":
        return (
            "CAST(EXISTS (SELECT 1 FROM cond c WHERE c.pid = r.pid AND "
            f"{_match(spec.codes, 'c.system', 'c.code')} AND c.start > r.t AND c.start <= {end}) "
            "AS DOUBLE)"
        )
    if spec.type == "encounter":
        return (
            "CAST(EXISTS (SELECT 1 FROM enc e WHERE e.pid = r.pid AND "
            f"e.kind IN {_in(spec.classes)} AND e.start > r.t AND e.start <= {end} "
            "AND e.ref IS DISTINCT FROM r.eref) AS DOUBLE)"
        )
    return (
        "(SELECT first(o.value ORDER BY o.ts, o.ref, o.value) FROM obs o WHERE o.pid = r.pid "
        f"AND {_match(spec.codes, 'o.system', 'o.code')} AND o.ts > r.t AND o.ts <= {end})"
    )


def _rows_sql(task: Task) -> str:
    """SQL: the data set's rows (rid, pid, t, index encounter, label) after the cohort,
    exclusions, a known label and `index.select`."""
    where = " AND ".join(_eligible(task)) or "true"
    order = "r.t, r.eref" if task.index.select != "last" else "r.t DESC, r.eref DESC"
    return f"""
        WITH cand AS (
            SELECT r.pid, r.t, r.eref, r.estart, {_label(task)} AS y
            FROM ({_candidates(task)}) r JOIN pat p ON p.pid = r.pid
            WHERE {where}
        ), kept AS (
            SELECT *, row_number() OVER (PARTITION BY pid ORDER BY {order.replace("r.", "")}) AS n
            FROM cand WHERE y IS NOT NULL
        )
        SELECT row_number() OVER (ORDER BY pid, t, eref) AS rid, pid, t, eref, estart, y
        FROM kept {"" if task.index.select == "all" else "WHERE n = 1"}"""


def _feature_sql(task: Task) -> str:
    """SQL: the feature table over `rows` (`features.features`), one aggregate per spec."""
    picks = ["r.rid", "r.pid", "r.t", "r.y"]
    joins = []
    if "age" in task.demographics:
        picks.append(f"{_age()} AS age")
    if "sex" in task.demographics:
        picks.append("p.sex AS sex")
    for n, spec in enumerate(task.observations):
        alias = f"o{n}"
        stat_sql = {
            "count": "count(*)",
            "latest": "last(o.value ORDER BY o.ts, o.ref, o.value)",
            "mean": "sum(o.value) / count(*)",
            "min": "min(o.value)",
            "max": "max(o.value)",
        }
        cols = ", ".join(f"{stat_sql[s]} AS {s}" for s in spec.stats)
        joins.append(
            f"LEFT JOIN (SELECT r.rid, {cols} FROM ds_rows r JOIN obs o ON o.pid = r.pid "
            f"AND {_window('o.ts', spec.lookback_days)} "
            f"WHERE {_match(spec.codes, 'o.system', 'o.code')} GROUP BY r.rid) {alias} "
            f"ON {alias}.rid = r.rid"
        )
        for s in spec.stats:
            value = f"coalesce({alias}.count, 0)" if s == "count" else f"{alias}.{s}"
            picks.append(f'CAST({value} AS DOUBLE) AS "{spec.name}_{s}"')
    for table, group in (("cond", task.conditions), ("med", task.medications)):
        for flag in group:
            picks.append(
                f"CAST(EXISTS (SELECT 1 FROM {table} f WHERE f.pid = r.pid AND "
                f"{_match(flag.codes, 'f.system', 'f.code')} "
                f"AND {_window('f.ts', flag.lookback_days)}) "
                f'AS DOUBLE) AS "{flag.name}"'
            )
    for enc in task.encounters:
        picks.append(
            "CAST((SELECT count(*) FROM enc e WHERE e.pid = r.pid AND "
            f"e.kind IN {_in(enc.classes)} AND {_window('e.ts', enc.lookback_days)}) "
            f'AS DOUBLE) AS "{enc.name}"'
        )
    if "length_of_stay_days" in task.index_encounter:
        picks.append("(r.t - r.estart) / 1e6 / 86400 AS length_of_stay_days")
    return (
        f"SELECT {', '.join(picks)} FROM ds_rows r JOIN pat p ON p.pid = r.pid "
        f"{' '.join(joins)} ORDER BY r.rid"
    )


def dataset_from_views(
    task: Task, views: Mapping[str, Path], *, threads: int | None = None
) -> Dataset:
    """The task's feature table over flattened views (`flatten_views`), rows ordered by
    patient id, then index time."""
    con = duckdb.connect(":memory:")
    try:
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        _prepare(con)
        for key, table in _fact_tables(task).items():
            con.execute(table(f"read_parquet({quote(str(views[key]))})"))
        return _dataset(con, task)
    finally:
        con.close()


def dataset_from_ndjson(task: Task, directory: Path, *, threads: int | None = None) -> Dataset:
    """The task's feature table over the NDJSON files of `directory`, as
    `dataset_from_views` over `flatten_views(..., task=task)` gives it, in one pass: each
    view's rows go straight into the task's facts (no file between, and rows of codes the
    task does not read are never stored)."""
    files = ndjson_by_type(directory)
    # more threads than cores: a population's files outgrow the page cache, and a thread
    # waiting for the disk leaves its core to another (measured: 100,000 patients, 2 cores,
    # 90 s with 2 threads, 71-81 s with 4 to 6)
    runner = DuckDBRunner(threads if threads is not None else 2 * (os.cpu_count() or 1))
    codes = _code_sets(task)
    cursor = runner.cursor()
    try:
        _prepare(cursor)
        for key, table in _fact_tables(task).items():
            view_files, containing, within = _view_input(key, files, codes)
            runner.execute_over(
                cursor,
                feature_view(VIEWS[key]),
                view_files,
                table,
                containing=containing,
                within=within,
            )
        return _dataset(cursor, task)
    finally:
        cursor.close()
        runner.close()  # the fact tables of a population: memory worth giving back now


def _prepare(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("SET TimeZone = 'UTC'")
    # facts are tables of rows in no order (the queries over them order what they give):
    # tables made in parallel need not keep the order rows were read in
    con.execute("SET preserve_insertion_order = false")
    con.execute(_TIME_MACRO)


def _dataset(con: duckdb.DuckDBPyConnection, task: Task) -> Dataset:
    """The feature table from the facts' tables (`_fact_tables`) made on `con`."""
    con.execute(f"CREATE OR REPLACE TABLE ds_rows AS {_rows_sql(task)}")
    frame: pd.DataFrame = con.execute(_feature_sql(task)).df()
    names = task.feature_names()
    X = frame[names].copy() if len(frame) else pd.DataFrame(columns=names)
    for name in names:
        if name not in task.categorical_features():
            X[name] = X[name].astype(float)
        else:
            X[name] = X[name].astype(object)
    kind = int if task.kind == "classification" else float
    y = np.asarray(frame["y"].to_numpy(dtype=float), dtype=kind)
    times = pd.to_datetime(frame["t"], unit="us", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Dataset(X.reset_index(drop=True), y, [str(p) for p in frame["pid"]], list(times), names)


def export_feature_types(store: Store, directory: Path) -> dict[str, int]:
    """Writes the current Patients and resources of the feature types in `store` to
    `<directory>/<Type>.ndjson`; returns resources written per type."""
    directory.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for type_ in ("Patient", *TYPES):
        n = 0
        with (directory / f"{type_}.ndjson").open("wb") as out:
            for stored in store.iter_current(type_):
                if stored.body is not None:
                    out.write(bytes(stored.body) + b"\n")
                    n += 1
        counts[type_] = n
    return counts


def dataset_from_store_batch(task: Task, store: Store) -> Dataset:
    """The task's feature table over every patient in `store`: the feature types exported
    to NDJSON once, then flattened and computed set-based in DuckDB."""
    with tempfile.TemporaryDirectory(prefix="carebase-features-") as tmp:
        export_feature_types(store, Path(tmp))
        return dataset_from_ndjson(task, Path(tmp))
