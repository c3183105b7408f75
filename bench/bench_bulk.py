"""Bulk Data: `$export` rate and server memory as the data grows, and `$import` rate.

`$export`: a database of N resources (Synthea-sized Observations and Patients, ~0.8 kB each)
is built by writing `resource` rows directly (COPY on PostgreSQL, executemany on SQLite), as
bench/search_dataset.py copies its data: a system-level export by a `system/*.rs` token reads
the resource table only (no index rows). Then a `carebase serve` process is started, an
export is kicked off over HTTP and polled until its manifest is ready; the rate is resources
per second from kick-off to manifest, and the server's peak RSS (workers included) is
sampled throughout. Every file is then downloaded (streamed) and its lines counted. Sizes
grow (100k, then up to 1M as `--sizes` says) over the same database, so a flat RSS shows the
export streams.

`$import` (PostgreSQL): an NDJSON file of M new Patients and Observations is imported with a
`file://` input from an allowed directory, with each number of writer processes named by
`--import-workers`; rate from kick-off to manifest, and its ratio to a raw COPY of the same
JSON bodies into the same database right after. `--import-only` runs just these rows and
rewrites only their part of the section.

Usage: python bench/bench_bulk.py [--backend sqlite|postgresql|both] [--sizes 100000,1000000]
       [--import-resources 20000] [--import-workers 0,1,2,3] [--import-only] [--no-docs]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import psycopg
from proc_cpu import PostgresCpu, tree_cpu
from psycopg.conninfo import conninfo_to_dict
from report import machine, write_section
from server import Server

from carebase.store.factory import open_store

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
EPOCH_MS = 1_700_000_000_000


def observation(n: int) -> dict[str, Any]:
    """A Synthea-like vital-sign Observation (about 0.8 kB of JSON)."""
    return {
        "resourceType": "Observation",
        "id": f"o{n}",
        "meta": {"versionId": "1", "lastUpdated": "2023-11-14T22:13:20.000Z"},
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs", "display": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4",
                             "display": "Heart rate"}], "text": "Heart rate"},
        "subject": {"reference": f"Patient/p{n // 50}"},
        "encounter": {"reference": f"Encounter/e{n // 10}"},
        "effectiveDateTime": "2019-06-13T08:26:10-04:00",
        "issued": "2019-06-13T08:26:10.339-04:00",
        "valueQuantity": {"value": 60 + n % 40, "unit": "/min",
                          "system": "http://unitsofmeasure.org", "code": "/min"},
    }  # fmt: skip


def patient(n: int) -> dict[str, Any]:
    """A small Patient."""
    return {
        "resourceType": "Patient",
        "id": f"p{n}",
        "meta": {"versionId": "1", "lastUpdated": "2023-11-14T22:13:20.000Z"},
        "name": [{"family": f"Family{n}", "given": ["Given"]}],
        "gender": "female" if n % 2 else "male",
        "birthDate": "1970-01-01",
    }


def rows(start: int, stop: int) -> Iterator[tuple[str, str, int, int, int, bytes]]:
    """Resource rows n in [start, stop): every 50th a Patient, the rest Observations."""
    for n in range(start, stop):
        resource = patient(n // 50) if n % 50 == 0 else observation(n)
        yield (resource["resourceType"], resource["id"], 1, EPOCH_MS, 0, orjson.dumps(resource))


def grow(url: str, have: int, want: int) -> None:
    """Add rows until the database holds `want` resources."""
    columns = "type, id, version, last_updated, deleted, body"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.executemany(
                f"INSERT INTO resource ({columns}) VALUES (?, ?, ?, ?, ?, ?)", rows(have, want)
            )
        return
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY resource ({columns}) FROM STDIN") as copy:
            for row in rows(have, want):
                copy.write_row(row)
        cur.execute("ANALYZE resource")


@contextmanager
def database(kind: str) -> Iterator[str]:
    """A fresh, migrated database URL of `kind` (a throwaway PostgreSQL schema)."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bulk.db'}"
            open_store(url).migrate()
            yield url
        return
    server = os.environ.get("CAREBASE_TEST_POSTGRES_URL", PG_DEFAULT)
    schema = f"bench_bulk_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in server else "?"
    url = f"{server}{sep}options={quote(f'-csearch_path={schema}')}"
    try:
        store = open_store(url)
        store.migrate()
        store.close()
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def run_job(client: httpx.Client, response: httpx.Response) -> tuple[dict[str, Any], float]:
    """Poll a kicked-off job to its manifest; (manifest, seconds from kick-off)."""
    started = time.perf_counter()
    assert response.status_code == 202, response.text
    status = response.headers["content-location"]
    while (r := client.get(status)).status_code == 202:
        time.sleep(0.05)
    assert r.status_code == 200, r.text
    return r.json(), time.perf_counter() - started


def export_once(url: str, size: int) -> dict[str, float]:
    """Export `size` resources through a fresh server: rate, peak RSS, download check."""
    with (
        Server(url) as server,
        httpx.Client(base_url=server.base + "/fhir", headers=server.auth, timeout=600) as client,
    ):
        idle_rss = server._rss_kb()
        kicked = time.perf_counter()
        manifest, seconds = run_job(client, client.get("/$export", headers=ASYNC))
        assert time.perf_counter() - kicked >= seconds
        exported = sum(entry["count"] for entry in manifest["output"])
        assert exported == size, (exported, size)
        lines, fetched = 0, time.perf_counter()
        for entry in manifest["output"]:
            with client.stream("GET", entry["url"]) as r:
                for chunk in r.iter_bytes():
                    lines += chunk.count(b"\n")
        download = time.perf_counter() - fetched
        assert lines == size, (lines, size)
        return {
            "rate": size / seconds,
            "seconds": seconds,
            "rss_mb": server.peak_rss_kb / 1024,
            "idle_mb": idle_rss / 1024,
            "download_rate": size / download,
        }


def compartment_once(url: str, patients: int, per_patient: int) -> dict[str, float]:
    """Patient/$export of `patients` patients with `per_patient` Observations each, stored
    through the Store API (index rows and all): the search path, per compartment."""
    store = open_store(url)
    with store.transaction() as tx:
        for p in range(patients):
            tx.update("Patient", f"p{p}", {**patient(p), "meta": {}})
            for o in range(per_patient):
                n = p * 50 + 1 + o  # observation(n) refers to Patient/p{n // 50}
                tx.update("Observation", f"o{n}", {**observation(n), "meta": {}})
    store.close()
    size = patients * (1 + per_patient)
    with (
        Server(url) as server,
        httpx.Client(base_url=server.base + "/fhir", headers=server.auth, timeout=600) as client,
    ):
        manifest, seconds = run_job(client, client.get("/Patient/$export", headers=ASYNC))
        assert sum(entry["count"] for entry in manifest["output"]) == size
        return {"rate": size / seconds, "seconds": seconds, "rss_mb": server.peak_rss_kb / 1024}


def import_file(directory: Path, count: int, run: int) -> Path:
    """An NDJSON file of `count` new resources (ids unique to `run`): every 10th a Patient."""
    path = directory / f"input-{run}.ndjson"
    with path.open("wb") as out:
        for n in range(count):
            first = (run + 1) * 10**7 + n
            resource = patient(first) if n % 10 == 0 else observation(first * 10)
            resource.pop("meta")
            out.write(orjson.dumps(resource) + b"\n")
    return path


def import_once(url: str, count: int, run: int, workers: int) -> dict[str, float]:
    """Import `count` new resources from an allowed NDJSON file with `workers` writer
    processes; then COPY the same JSON bodies into a plain table of the same database (the
    raw rate, right after, so both see the same load on the machine)."""
    with tempfile.TemporaryDirectory() as incoming:
        path = import_file(Path(incoming), count, run)
        os.environ["CAREBASE_IMPORT_DIRS"] = incoming
        os.environ["CAREBASE_IMPORT_WORKERS"] = str(workers)
        try:
            with (
                Server(url) as server,
                httpx.Client(
                    base_url=server.base + "/fhir", headers=server.auth, timeout=600
                ) as client,
            ):
                body = {"resourceType": "Parameters", "parameter": [
                    {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
                    {"name": "input", "part": [{"name": "url", "valueUrl": path.as_uri()}]},
                ]}  # fmt: skip
                headers = {**ASYNC, "Content-Type": "application/fhir+json"}
                server_cpu = tree_cpu(server.proc.pid)
                with PostgresCpu(conninfo_to_dict(url)["dbname"]) as database_cpu:
                    response = client.post("/$import", content=orjson.dumps(body), headers=headers)
                    manifest, seconds = run_job(client, response)
                server_cpu = tree_cpu(server.proc.pid) - server_cpu
                counts = manifest["extension"]["counts"]
                assert counts["created"] == count, counts
        finally:
            os.environ.pop("CAREBASE_IMPORT_DIRS", None)
            os.environ.pop("CAREBASE_IMPORT_WORKERS", None)
        raw = raw_copy_rate(url, path)
    rate = count / seconds
    cpu = server_cpu + database_cpu.seconds
    return {
        "rate": rate, "seconds": seconds, "raw": raw, "ratio": rate / raw,
        "server_us": server_cpu * 1e6 / count, "database_us": database_cpu.seconds * 1e6 / count,
        "capacity": 2 * count / cpu,
    }  # fmt: skip


def raw_copy_rate(url: str, path: Path) -> float:
    """Rows/s of COPYing the file's JSON bodies (type, id, body) into a plain table."""
    lines = path.read_bytes().splitlines()
    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE raw_import (type text, id text, body jsonb)")
        with cur.copy("COPY raw_import (type, id, body) FROM STDIN") as copy:
            for line in lines:
                resource = orjson.loads(line)
                copy.write_row((resource["resourceType"], resource["id"], line.decode()))
        conn.commit()
    seconds = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE raw_import")
    return len(lines) / seconds


def import_rows(url: str, count: int, runs: int, workers: list[int]) -> list[str]:
    """Table rows of `$import` with each number of writers, runs interleaved side by side."""
    results: dict[int, list[dict[str, float]]] = {w: [] for w in workers}
    for run in range(runs):
        for w in workers:
            results[w].append(import_once(url, count, run * 100 + w, w))
            print(f"$import writers {w} run {run}: {results[w][-1]}", flush=True)
    out = []
    for w in workers:
        m = median_of(results[w])
        rates = [run["rate"] for run in results[w]]
        out.append(
            f"| postgresql | {w} | {count:,} | {m['rate']:,.0f} |"
            f" {min(rates):,.0f} to {max(rates):,.0f} | {m['seconds']:.1f} |"
            f" {m['raw']:,.0f} | {m['ratio']:.3f} | {m['server_us']:,.0f} |"
            f" {m['database_us']:,.0f} | {m['capacity']:,.0f} |"
        )
    return out


def import_markdown(rows: list[str], runs: int) -> str:
    """The `$import` part of the section (its own markers, so it can be rerun alone); the
    load average says how busy the shared machine was (other users' work included)."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return "\n".join(
        [
            "`$import` of new resources (one NDJSON file of Patients and Observations,",
            "`file://` input), kick-off to manifest, validation and index rows included;",
            "floor 4,000 resources/s. *writers*: `CAREBASE_IMPORT_WORKERS`, writer processes",
            "(each its own connection and transactions, records partitioned by type and id;",
            "0: the job's thread writes). *raw*: the same JSON bodies COPYed into a plain",
            "`(type, id, jsonb)` table of the same database right after each import; ratio:",
            f"import rate / raw rate. Medians of {runs} runs, writer counts interleaved.",
            "The machine is shared: wall-clock rates depend on what else runs (*range*: the",
            "slowest and fastest run), the CPU time an import costs much less so. *carebase",
            "µs*: CPU per resource of the server process and its writer processes (this",
            "client's status polls included); *PostgreSQL µs*: of the database's backends;",
            "*2-core bound*: 2 / CPU seconds per resource, the rate if both cores did only",
            "this and never idled (with 0 writers the job's thread and its backend take turns,",
            "so that row cannot get near it: about half of it at best).",
            f"Machine: {machine()}; load average when written: {load}.",
            "",
            "| backend | writers | resources | import/s | range | seconds | raw COPY rows/s |"
            " ratio | carebase µs | PostgreSQL µs | 2-core bound/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median of each figure over the runs (peak RSS: the highest)."""
    out = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    if "rss_mb" in out:
        out["rss_mb"] = max(run["rss_mb"] for run in runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--import-resources", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--patients", type=int, default=200, help="Patient/$export patients")
    parser.add_argument(
        "--import-workers", default="0,1,2,3", help="writer counts of the $import rows"
    )
    parser.add_argument(
        "--import-only", action="store_true", help="only the $import rows (PostgreSQL)"
    )
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    writers = [int(w) for w in args.import_workers.split(",")]
    if args.import_only:
        with database("postgresql") as url:
            part = import_markdown(
                import_rows(url, args.import_resources, args.runs, writers), args.runs
            )
        print(part)
        if not args.no_docs:
            write_section("bulk-import", part)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    export_rows: list[str] = []
    import_part: list[str] = []
    patient_rows: list[str] = []
    for backend in backends:
        with database(backend) as url:
            have = 0
            for size in sizes:
                built = time.perf_counter()
                grow(url, have, size)
                have = size
                print(f"{backend}: {size} resources built in {time.perf_counter() - built:.0f} s")
                m = median_of([export_once(url, size) for _ in range(args.runs)])
                print(f"{backend} export {size}: {m}", flush=True)
                export_rows.append(
                    f"| {backend} | {size:,} | {m['rate']:,.0f} | {m['seconds']:.1f} |"
                    f" {m['idle_mb']:.0f} | {m['rss_mb']:.0f} | {m['download_rate']:,.0f} |"
                )
            if backend == "postgresql":
                import_part = import_rows(url, args.import_resources, args.runs, writers)
        with database(backend) as url:
            m = median_of([compartment_once(url, args.patients, 49) for _ in range(args.runs)])
            print(f"{backend} Patient/$export: {m}", flush=True)
            patient_rows.append(
                f"| {backend} | {args.patients:,} | {args.patients * 50:,} | {m['rate']:,.0f} |"
                f" {m['seconds']:.1f} | {m['rss_mb']:.0f} |"
            )
    markdown = "\n".join(
        [
            "### Bulk Data `$export` and `$import` (bench/bench_bulk.py)",
            "",
            f"Machine: {machine()}. One `carebase serve` process; a system-level export by a",
            "`system/*.cruds` token (the fast path: stored bodies streamed in id order, no",
            "parsing); rate from kick-off to manifest; RSS of the server process (peak while",
            "exporting, and idle before), each run on a fresh server over the same growing",
            f"database; medians of {args.runs} runs (peak RSS: the highest). Download: all files",
            "streamed back over HTTP. Floor: 20,000 resources/s.",
            "",
            "| backend | resources | export/s | seconds | idle RSS MB | peak RSS MB | download/s |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *export_rows,
            "",
            "<!-- bench:bulk-import -->",
            import_markdown(import_part, args.runs),
            "<!-- /bench:bulk-import -->",
            "",
            "`Patient/$export` of every patient (the search path: one search per compartment",
            "parameter and batch of 100 patients, under the token's restriction), data stored",
            "through the Store API with its index rows:",
            "",
            "| backend | patients | resources | export/s | seconds | peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|",
            *patient_rows,
        ]
    )
    print(markdown)
    if not args.no_docs:
        write_section("bulk", markdown)


if __name__ == "__main__":
    main()
