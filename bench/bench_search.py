"""Search at a million resources on SQLite and PostgreSQL: latencies, throughput, plans, sizes.

Uses the databases `search_dataset.py` builds (about 1,000,000 replicated Synthea resources;
built on first use, then reused). Per database:
- latency, in-process through `store.search(...)` (median and p95 over >= 200 distinct
  queries per class drawn from the data; each timed call is one page, total included as the
  API does by default);
- page 50 against page 1 of searches with >= 100,000 results (cursors followed, in-process);
- throughput over HTTP (`carebase serve` pinned to CPU 0, wrk on CPU 1): searches against
  read-by-id, in one run;
- the plans of one query per class (docs/search-plans.md) and the size of every table and
  index per resource;
- experiments: candidate indexes made with ad-hoc DDL on the bench database, the latency
  classes measured again, then the DDL undone.
A query class the server answers with 400/501 is skipped with a note. Results go to
<data-dir>/search-results-<backend>.json; the report (docs/benchmarks.md section `search`,
docs/search-plans.md) is written from the results files present.

    python bench/bench_search.py [--backend sqlite|postgresql|both] [--data-dir DIR]
        [--queries 200] [--http-seconds 10] [--no-experiments] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from http_wrk import LoadSpec, run_wrk
from report import machine
from search_dataset import (
    COPIED,
    Dataset,
    build,
    dataset_arguments,
    stored_fingerprint,
)
from search_plans import capture_sql, database_bytes, explain, full_scans, index_sizes
from search_report import best_experiment, write_reports
from search_shapes import run_shapes, shape_plans, shapes
from server import Server

from carebase.errors import CarebaseError
from carebase.store.base import Store, TotalMode
from carebase.store.factory import open_store
from carebase.store.index_values import date_range
from carebase.store.schema import param_key

LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
SERVER_CPU, CLIENT_CPU = "0", "1"
Params = list[tuple[str, str]]


@dataclass
class QueryClass:
    """One kind of search: the walks to time (each a search followed for `pages` pages)."""

    key: str
    label: str
    type: str
    walks: list[Params]
    pages: int = 1
    target_ms: float | None = None
    note: str = ""
    #: tried when the first walk is refused (e.g. without _sort), with the note to show
    fallback: tuple[list[Params], str] | None = None


@dataclass
class ClassResult:
    """Latencies (ms) of one class, or why it was skipped."""

    key: str
    label: str
    target_ms: float | None
    samples: list[float] = field(default_factory=list)
    note: str = ""
    skipped: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def p95(self) -> float:
        if len(self.samples) < 2:
            return self.median
        return statistics.quantiles(self.samples, n=20, method="inclusive")[18]


# --- drawing queries from the data --------------------------------------------------------------


def _rows(url: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return conn.execute(sql, args).fetchall()
    with psycopg.connect(url) as conn:
        return conn.execute(sql.replace("?", "%s"), args).fetchall()


@dataclass
class Samples:
    """Values found in the database that the queries are made of."""

    patient_ids: list[str]
    families: list[str]
    codes: list[str]
    resources: int

    @classmethod
    def draw(cls, url: str, count: int, rng: random.Random) -> Samples:
        patients = sorted(
            r[0] for r in _rows(url, "SELECT id FROM resource WHERE type = 'Patient'")
        )
        families = sorted(
            {
                r[0]
                for r in _rows(
                    url,
                    "SELECT exact FROM idx_string WHERE pkey = ?",
                    (param_key("Patient", "family"),),
                )
            }
        )
        codes = [
            r[0]
            for r in _rows(
                url,
                "SELECT code FROM idx_token WHERE pkey = ? AND system = ? GROUP BY code"
                " ORDER BY COUNT(*) DESC LIMIT 12",
                (param_key("Observation", "code"), LOINC),
            )
        ]
        if "4548-4" not in codes:
            codes[-1] = "4548-4"
        resources = int(_rows(url, "SELECT COUNT(*) FROM resource WHERE deleted = 0")[0][0])
        return cls(
            rng.sample(patients, min(count, len(patients))),
            rng.sample(families, min(count, len(families))),
            codes,
            resources,
        )


def query_classes(samples: Samples, count: int, rng: random.Random) -> list[QueryClass]:
    """The classes of the issue, each with >= `count` distinct queries (or pages)."""
    pages = max(1, -(-count // len(samples.codes)))
    scoped = [[("subject", f"Patient/{p}"), ("date", "ge2015")] for p in samples.patient_ids]
    prefixes = [f[: max(3, len(f) - rng.randint(0, 4))] for f in samples.families]
    return [
        QueryClass(
            "token",
            f"token `Observation?code={LOINC}|<code>` ({len(samples.codes)} common codes incl. "
            f"4548-4, pages 1-{pages} of each, _count=20)",
            "Observation",
            [[("code", f"{LOINC}|{c}")] for c in samples.codes],
            pages=pages,
            target_ms=20,
        ),
        QueryClass(
            "patient",
            "patient-scoped `Observation?subject=Patient/<id>&date=ge2015&_sort=-date`",
            "Observation",
            [[*q, ("_sort", "-date")] for q in scoped],
            target_ms=20,
            fallback=(scoped, "`_sort=-date` not supported by this build: measured without it"),
        ),
        QueryClass(
            "string",
            "string prefix `Patient?name=<prefix>` (a family name cut by 0-4 letters)",
            "Patient",
            [[("name", p)] for p in prefixes],
            target_ms=30,
        ),
        QueryClass(
            "chained",
            "chained `Observation?subject.family=<family>`",
            "Observation",
            [[("subject.family", f)] for f in samples.families],
            target_ms=100,
        ),
        QueryClass(
            "revinclude",
            "`Patient?_id=<id>&_revinclude=Observation:subject`",
            "Patient",
            [[("_id", p), ("_revinclude", "Observation:subject")] for p in samples.patient_ids],
            target_ms=100,
        ),
    ]


# --- in-process latency ------------------------------------------------------------------------


def _timed_walk(
    store: Store, type_: str, params: Params, pages: int, *, total: TotalMode = "accurate"
) -> list[float]:
    times, cursor = [], None
    for _ in range(pages):
        start = time.perf_counter()
        page = store.search(type_, params, count=20, cursor=cursor, total=total)
        times.append((time.perf_counter() - start) * 1000)
        cursor = page.next_cursor
        if cursor is None:
            break
    return times


def _refusal(store: Store, qc_type: str, params: Params) -> str | None:
    """Why the store refuses this search (400/501), or None when it runs."""
    try:
        store.search(qc_type, params, count=20, total="none")
    except CarebaseError as exc:
        if exc.status in (400, 501):
            return f"not supported by this build ({exc.status}: {exc})"
        raise
    return None


def run_class(store: Store, qc: QueryClass, budget_s: float) -> ClassResult:
    """Time every walk of `qc` (after a warm-up of three); skipped when refused.

    Stops after `budget_s` seconds: a class that slow misses its target by far anyway, and
    the note says how many queries were timed.
    """
    result = ClassResult(qc.key, qc.label, qc.target_ms, note=qc.note)
    walks = qc.walks
    refused = _refusal(store, qc.type, walks[0])
    if refused and qc.fallback:
        walks, result.note = qc.fallback
        refused = _refusal(store, qc.type, walks[0])
    if refused:
        result.skipped = refused
        return result
    for params in walks[:3]:
        _timed_walk(store, qc.type, params, 1)
    deadline = time.monotonic() + budget_s
    for params in walks:
        result.samples += _timed_walk(store, qc.type, params, qc.pages)
        if time.monotonic() > deadline and len(result.samples) < len(walks) * qc.pages:
            result.note = (result.note + "; " if result.note else "") + (
                f"stopped after {budget_s:.0f} s: {len(result.samples)} of "
                f"{len(walks) * qc.pages} queries timed"
            )
            break
    return result


@dataclass
class PagingResult:
    """Page 1 against page 50 of big searches (ms per page fetch)."""

    searches: list[str] = field(default_factory=list)
    page1: list[float] = field(default_factory=list)
    page50: list[float] = field(default_factory=list)
    note: str = ""


def big_searches(store: Store) -> list[tuple[str, Params, int]]:
    """Searches with >= 100,000 results in this database: (type, params, total)."""
    candidates: list[tuple[str, Params]] = [
        ("Observation", [("category", f"{CATEGORY}|laboratory")]),
        ("Observation", [("category", f"{CATEGORY}|vital-signs")]),
        ("Observation", [("status", "final")]),
        ("Observation", [("date", "ge2000")]),
    ]
    found = []
    for type_, params in candidates:
        total = store.search(type_, params, count=1, total="accurate").total or 0
        if total >= 100_000:
            found.append((type_, params, total))
            if len(found) == 3:
                break
    return found


def run_paging(store: Store, budget_s: float, runs: int = 2) -> PagingResult:
    """Page 1 and page 50 (_count=20, next cursors followed, no total) of each big search.

    Without the total, so the figures show what reaching deep pages costs (a count of
    100,000 rows would weigh the same on every page and hide it). After `budget_s` seconds
    no further walk starts (the first one always completes).
    """
    result = PagingResult()
    searches = big_searches(store)
    if not searches:
        result.note = "no search with >= 100,000 results in this database"
        return result
    for type_, params, total in searches:
        query = "&".join(f"{k}={v}" for k, v in params)
        result.searches.append(f"`{type_}?{query}` ({total:,} results)")
    deadline = time.monotonic() + budget_s
    walks = [search for _ in range(runs) for search in searches]
    for done, (type_, params, _total) in enumerate(walks):
        if done and time.monotonic() > deadline:
            result.note = f"stopped after {budget_s:.0f} s: {done} of {len(walks)} walks"
            break
        times = _timed_walk(store, type_, params, 50, total="none")
        if len(times) == 50:
            result.page1.append(times[0])
            result.page50.append(times[49])
    return result


# --- HTTP throughput -----------------------------------------------------------------------------


@dataclass
class Throughput:
    """req/s, p50 and p99 (ms) per scenario, or why a scenario was skipped."""

    rows: list[dict[str, Any]] = field(default_factory=list)


def run_http(url: str, samples: Samples, prefixes: list[str], seconds: float) -> Throughput:
    """Read-by-id and searches against one server, one after the other, same run."""
    result = Throughput()
    ids = samples.patient_ids
    scenarios = [
        ("read Patient by id", LoadSpec("GET", "/fhir/Patient/", ids)),
        ("search string prefix (Patient?name=)", LoadSpec("GET", "/fhir/Patient?name=", prefixes)),
        (
            "search patient-scoped (subject, date=ge2015, _sort=-date)",
            LoadSpec("GET", "/fhir/Observation?date=ge2015&_sort=-date&subject=Patient/", ids),
        ),
        (
            "search patient-scoped (subject, date=ge2015)",
            LoadSpec("GET", "/fhir/Observation?date=ge2015&subject=Patient/", ids),
        ),
        (  # last: its slow requests may keep the server busy after wrk stops
            "search token (Observation?code=loinc|code, _count=20)",
            LoadSpec("GET", f"/fhir/Observation?_count=20&code={LOINC}%7C", samples.codes),
        ),
    ]
    with Server(url, cpus=SERVER_CPU) as server:
        for name, spec in scenarios:
            try:
                measured = run_wrk(name, server.base, spec, seconds, 2, 8, CLIENT_CPU, server.token)
            except (RuntimeError, httpx.HTTPError) as exc:  # refused, or the check timed out
                result.rows.append({"name": name, "skipped": str(exc)[:200]})
                print(f"{name}: skipped: {str(exc)[:200]}", flush=True)
                continue
            print(measured.line(), flush=True)
            result.rows.append(asdict(measured))
    return result


# --- plans, sizes, experiments --------------------------------------------------------------------


def plans_for(store: Store, url: str, classes: list[QueryClass]) -> list[dict[str, Any]]:
    """The plan of every statement one representative query of each class runs."""
    out: list[dict[str, Any]] = []
    for qc in classes:
        params = qc.walks[len(qc.walks) // 2]
        if qc.fallback and _refusal(store, qc.type, params):
            params = qc.fallback[0][len(qc.walks) // 2]
        refused = _refusal(store, qc.type, params)
        query = f"{qc.type}?" + "&".join(f"{k}={v}" for k, v in params)
        if refused:
            out.append({"key": qc.key, "query": query, "skipped": refused})
            continue
        with capture_sql(store) as captured:
            store.search(qc.type, params, count=20, total="accurate")
        statements = []
        for sql, args in captured:
            plan = explain(url, sql, args)
            statements.append(
                {
                    "sql": sql,
                    "args": [str(a) for a in args],
                    "plan": plan,
                    "scans": full_scans(plan),
                }
            )
        out.append({"key": qc.key, "query": query, "statements": statements})
    return out


@dataclass
class Experiment:
    """Candidate DDL tried on the bench database, and the DDL that undoes it."""

    name: str
    apply: list[str]
    undo: list[str]


def experiments(dialect: str) -> list[Experiment]:
    """Candidate index changes for `dialect` (none of them is in the schema)."""
    covering = [
        "CREATE INDEX bx_token_cover ON idx_token (pkey, code, system, rid)",
        "CREATE INDEX bx_reference_cover ON idx_reference (pkey, target_id, target_type, rid)",
        "CREATE INDEX bx_date_cover ON idx_date (pkey, lo, hi, rid)",
    ]
    uncover = [f"DROP INDEX bx_{t}_cover" for t in ("token", "reference", "date")]
    if dialect == "sqlite":
        # LIKE 'x%' can use an index only through the NOCASE collation (SQLite's LIKE is
        # case-insensitive); `norm` is lower-cased already, so the results are the same.
        nocase = "CREATE INDEX bx_string_nocase ON idx_string (pkey, norm COLLATE NOCASE, rid)"
        unstats = ["DROP TABLE IF EXISTS sqlite_stat1", "DROP TABLE IF EXISTS sqlite_stat4"]
        return [
            Experiment("ANALYZE (sqlite_stat1 statistics)", ["ANALYZE"], unstats),
            Experiment(
                "ANALYZE + NOCASE string index + lookups covering rid",
                [nocase, *covering, "ANALYZE"],
                ["DROP INDEX bx_string_nocase", *uncover, *unstats],
            ),
        ]
    pattern = "CREATE INDEX bx_string_pattern ON idx_string (pkey, norm text_pattern_ops, rid)"
    # pkey, code and system are strongly correlated: without these statistics the planner
    # multiplies their selectivities and expects ~1,500 rows where 200,000 match
    stats = (
        "CREATE STATISTICS bx_token_stats (dependencies, mcv) ON pkey, code, system FROM idx_token"
    )
    return [
        Experiment(
            "extended statistics on idx_token (pkey, code, system)",
            [stats, "ANALYZE idx_token"],
            ["DROP STATISTICS bx_token_stats", "ANALYZE idx_token"],
        ),
        Experiment(
            "extended statistics + text_pattern_ops string index + lookups covering rid",
            [stats, pattern, *covering, "VACUUM ANALYZE"],
            ["DROP STATISTICS bx_token_stats", "DROP INDEX bx_string_pattern", *uncover, "ANALYZE"],
        ),
    ]


def _run_ddl(url: str, statements: list[str]) -> float:
    start = time.perf_counter()
    if url.startswith("sqlite:///"):
        lite = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            for statement in statements:
                lite.execute(statement)
        finally:
            lite.close()
    else:
        with psycopg.connect(url, autocommit=True) as pg:
            for statement in statements:
                pg.execute(statement)
    return time.perf_counter() - start


def run_experiment(
    url: str, exp: Experiment, measure: Callable[[Store], dict[str, Any]]
) -> dict[str, Any]:
    """Apply `exp`, measure with a fresh store, undo it."""
    print(f"experiment: {exp.name}", flush=True)
    before = database_bytes(url)
    seconds = _run_ddl(url, exp.apply)
    grown = database_bytes(url) - before
    store = open_store(url)
    try:
        measured = measure(store)
    finally:
        store.close()
        _run_ddl(url, exp.undo)
    return {"name": exp.name, "ddl": exp.apply, "ddl_seconds": seconds, "bytes": grown, **measured}


# --- one backend ---------------------------------------------------------------------------------


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """Everything measured on one database, as a JSON-able dict."""
    dataset = Dataset(args.data_dir, args.resources, args.tar)
    loaded, load_seconds = build(dataset, backend)
    url = dataset.url(backend)
    rng = random.Random(2026)
    samples = Samples.draw(url, args.queries, rng)
    classes = query_classes(samples, args.queries, rng)
    store = open_store(url)

    def measure(s: Store) -> dict[str, Any]:
        latencies = []
        for qc in classes:
            measured = run_class(s, qc, args.budget)
            print(
                f"{backend} {qc.key}: "
                + (measured.skipped or f"median {measured.median:.1f} ms, p95 {measured.p95:.1f} ms"
                   f" over {len(measured.samples)}")
                + (f" ({measured.note})" if measured.note else ""),
                flush=True,
            )  # fmt: skip
            latencies.append(asdict(measured))
        paging = run_paging(s, args.budget * 2)
        if paging.page1:
            print(
                f"{backend} paging: page 1 {statistics.median(paging.page1):.1f} ms, page 50 "
                f"{statistics.median(paging.page50):.1f} ms",
                flush=True,
            )
        year = date_range("2015")
        assert year is not None
        alternatives = shapes(samples.codes, samples.patient_ids, samples.families, year)
        shaped = run_shapes(url, alternatives, args.budget / 2)
        for item in shaped:
            median = statistics.median(item["samples"]) if item["samples"] else float("nan")
            print(f"{backend} shape {item['key']}: median {median:.1f} ms", flush=True)
        return {
            "latencies": latencies,
            "paging": asdict(paging),
            "plans": plans_for(s, url, classes) + shape_plans(url, alternatives),
            "shapes": shaped,
        }

    try:
        baseline = measure(store)
    finally:
        store.close()
    sizes = index_sizes(url)
    result: dict[str, Any] = {
        "backend": backend,
        "machine": machine(),
        "url": url,
        "resources": samples.resources,
        "writes": loaded,
        "load_seconds": load_seconds,
        "copied": (stored_fingerprint(url) or "").endswith(COPIED),
        "queries": args.queries,
        "baseline": baseline,
        "database_bytes": database_bytes(url),
        "sizes": sizes,
    }
    prefixes = [q[0][1] for q in classes[2].walks]
    result["http"] = (
        asdict(run_http(url, samples, prefixes, args.http_seconds))
        if shutil.which("wrk")
        else {"rows": [], "note": "wrk not installed"}
    )
    result["experiments"] = (
        [run_experiment(url, exp, measure) for exp in experiments(store.dialect)]
        if args.experiments
        else []
    )
    best = best_experiment(result)
    if best and shutil.which("wrk"):  # throughput again, with the best candidate DDL
        print(f"HTTP with: {best['name']}", flush=True)
        _run_ddl(url, best["ddl"])
        try:
            best["http"] = asdict(run_http(url, samples, prefixes, args.http_seconds))
        finally:
            undo = next(e.undo for e in experiments(store.dialect) if e.name == best["name"])
            _run_ddl(url, undo)
    return result


def results_file(data_dir: Path, backend: str) -> Path:
    return data_dir / f"search-results-{backend}.json"


def main() -> None:
    parser = dataset_arguments(__doc__)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--http-seconds", type=float, default=8)
    parser.add_argument(
        "--budget", type=float, default=30, help="seconds at most per query class and run"
    )
    parser.add_argument("--no-experiments", dest="experiments", action="store_false")
    parser.add_argument("--report-only", action="store_true", help="re-render saved results")
    args = parser.parse_args()
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    if not args.report_only:
        for backend in backends:
            result = run_backend(backend, args)
            results_file(args.data_dir, backend).write_text(json.dumps(result, indent=1))
    saved = [
        json.loads(results_file(args.data_dir, b).read_text())
        for b in ("sqlite", "postgresql")
        if results_file(args.data_dir, b).exists()
    ]
    write_reports(saved)


if __name__ == "__main__":
    main()
