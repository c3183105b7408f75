"""`carebase import` of 100 Synthea patients (38,970 records) on SQLite and PostgreSQL.

Each measurement runs `carebase import` on the archive in a subprocess of its own (so its
peak RSS is the import's alone): a first import into a fresh database, then a re-run of the
same archive into it (everything unchanged: idempotence costs a read and a comparison per
record). The figures include streaming the tar, JSON parsing, validation, reference
resolution, index rows, serialisation and commit. For scale, the same JSON bodies are
written raw into a plain (type, id, body) table of the same database in the same run:
`executemany` on SQLite, `COPY` on PostgreSQL. Usage:
    python bench/bench_import.py [--runs 3] [--tar ../shared/data/synthea-r4-100.tar.gz]
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import orjson
import psycopg
from report import machine, write_section
from server import REPO

from carebase.data.bundle_import import Load
from carebase.data.loader import Origin, ResourceLoader
from carebase.data.parallel_plan import plan_chunk
from carebase.data.sources import chunks_of, iter_documents
from carebase.fhir import json_io
from carebase.store.factory import open_store

SHARED = Path(os.environ.get("CAREBASE_SHARED_DIR", REPO.parent / "shared"))
DEFAULT_TAR = SHARED / "data" / "synthea-r4-100.tar.gz"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
_TIMING = re.compile(r"Read ([\d,]+) records from [\d,]+ documents in ([\d.]+) s")


def run_import(url: str, tar: Path, workers: int, report: Path) -> tuple[int, float, float]:
    """(records, seconds, peak RSS MiB of the main process and its largest worker)."""
    code = (
        "import resource, sys, runpy;"
        "sys.argv = ['carebase'] + sys.argv[1:];"
        "exit_code = 0\n"
        "try:\n runpy.run_module('carebase', run_name='__main__')\n"
        "except SystemExit as e:\n exit_code = e.code or 0\n"
        # VmHWM, not ru_maxrss: the latter keeps the high-water mark of the forked bench
        # process (holding every body in memory) across exec.
        "me = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]);"
        "kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
        "print('RSS', me, kids); sys.exit(exit_code)"
    )
    args = ["import", str(tar), "--database", url, "--report", str(report)]
    args += ["--workers", str(workers), "--restart"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"import failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    match = _TIMING.search(proc.stdout)
    rss = re.search(r"RSS (\d+) (\d+)", proc.stdout)
    assert match and rss, proc.stdout
    peak = max(int(rss.group(1)), int(rss.group(2))) / 1024
    return int(match.group(1).replace(",", "")), float(match.group(2)), peak


def bodies(tar: Path) -> list[tuple[str, str, bytes]]:
    """(type, id, JSON body) of every entry's resource in the archive."""
    out = []
    with tarfile.open(tar) as archive:
        for member in archive:
            data = archive.extractfile(member) if member.isfile() else None
            if data is None:
                continue
            for entry in orjson.loads(data.read()).get("entry", []):
                resource = entry["resource"]
                rid = entry.get("fullUrl", "").removeprefix("urn:uuid:") or resource.get("id")
                out.append((resource["resourceType"], rid, orjson.dumps(resource)))
    return out


def planned_bodies(tar: Path) -> list[bytes]:
    """The archive's resources as the importer plans them (final ids, references rewritten),
    serialised: what an `$import` request hands `ResourceLoader` once parsed."""
    out = []
    for document in iter_documents(tar):
        for chunk in chunks_of(document):
            for value in plan_chunk(chunk):
                for item, _issues, _prepared in value.planned or []:
                    if isinstance(item, Load):
                        out.append(json_io.dumps(item.resource))
    return out


def loader_rate(url: str, planned: list[bytes], workers: int) -> float:
    """Records/s of `ResourceLoader(workers=...)` fed parsed resources (the `$import`
    path: parsing, validation, index rows, writes and commits)."""
    store = open_store(url)
    try:
        store.migrate()
        started = time.perf_counter()
        with ResourceLoader(store, workers=workers) as loader:
            for body in planned:
                loader.add(json_io.loads(body), Origin("bench", ""))
        seconds = time.perf_counter() - started
    finally:
        store.close()
    assert loader.summary.rejected == 0
    return len(planned) / seconds


def raw_rate(url: str, rows: list[tuple[str, str, bytes]]) -> float:
    """Rows/s of inserting `rows` into a plain table (no constraint but a primary key
    dropped: duplicates allowed), committed once."""
    ddl = "CREATE TABLE raw_bodies (type TEXT NOT NULL, id TEXT NOT NULL, body {} NOT NULL)"
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.execute("DROP TABLE IF EXISTS raw_bodies")
        conn.execute(ddl.format("BLOB"))
        started = time.perf_counter()
        conn.executemany("INSERT INTO raw_bodies VALUES (?, ?, ?)", rows)
        conn.commit()
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE raw_bodies")
        conn.close()
        return len(rows) / seconds
    with psycopg.connect(url) as pg:
        pg.execute("DROP TABLE IF EXISTS raw_bodies")
        pg.execute(ddl.format("BYTEA"))
        pg.commit()
        started = time.perf_counter()
        with pg.cursor() as cur, cur.copy("COPY raw_bodies (type, id, body) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        pg.commit()
        seconds = time.perf_counter() - started
        pg.execute("DROP TABLE raw_bodies")
        pg.commit()
    return len(rows) / seconds


def fresh(kind: str, tmp: Path, n: int) -> str:
    """An empty database: a new SQLite file, or a new schema of $CAREBASE_TEST_POSTGRES_URL
    (dropped first if a previous run left it)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp / f'import-{n}.db'}"
    server = os.environ.get("CAREBASE_TEST_POSTGRES_URL", PG_DEFAULT)
    schema = "bench_import"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in server else "?"
    return f"{server}{sep}options={quote(f'-csearch_path={schema}')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tar", type=Path, default=DEFAULT_TAR)
    parser.add_argument("--kinds", default="sqlite,postgresql")
    options = parser.parse_args()
    rows = bodies(options.tar)
    planned = planned_bodies(options.tar)
    lines: list[str] = []
    loader_lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for kind in options.kinds.split(","):
            figures: dict[str, list[float]] = {}
            for n in range(options.runs):
                for workers in (1, 0):
                    url = fresh(kind, tmp, n * 2 + workers)
                    read, seconds, rss = run_import(url, options.tar, workers, tmp / "r.json")
                    figures.setdefault(f"first{workers}", []).append(read / seconds)
                    figures.setdefault(f"rss{workers}", []).append(rss)
                    if workers == 1:
                        read, seconds, _ = run_import(url, options.tar, 1, tmp / "r.json")
                        figures.setdefault("rerun", []).append(read / seconds)
                        figures.setdefault("raw", []).append(raw_rate(url, rows))
                for workers in (0, 2):
                    url = fresh(kind, tmp, 100 + n * 3 + workers)
                    figures.setdefault(f"loader{workers}", []).append(
                        loader_rate(url, planned, workers)
                    )
                print(kind, {k: round(v[-1]) for k, v in figures.items()}, flush=True)
            med = {k: statistics.median(v) for k, v in figures.items()}
            lines.append(
                f"| {kind} | {med['first1']:,.0f} | {med['first0']:,.0f} | {med['rerun']:,.0f}"
                f" | {med['rss1']:,.0f} / {med['rss0']:,.0f} | {med['raw']:,.0f}"
                f" | {med['first1'] / med['raw']:.3f} |"
            )
            loader_lines.append(f"| {kind} | {med['loader0']:,.0f} | {med['loader2']:,.0f} |")
    text = (
        "## `carebase import` (bench/bench_import.py)\n\n"
        f"Machine: {machine()}. `carebase import` of the Synthea 100-patient archive "
        f"({len(rows):,} records, streamed from the .tar.gz), medians of {options.runs} runs,"
        " each in a fresh database; records/s over the whole command (validation, reference"
        " resolution, index rows and commits included). *workers 1*: one worker process"
        " parses, validates and indexes ahead of the writer (the default on 2+ cores);"
        " *workers 0*: all in one process. *re-run*: the same archive again (all unchanged)."
        " Peak RSS: the largest process (main or worker). *raw*: the same JSON bodies"
        " inserted into a plain 3-column table of the same database (`executemany` on"
        " SQLite, `COPY` on PostgreSQL), the floor any importer pays.\n\n"
        "| database | records/s, workers 1 | workers 0 | re-run | peak RSS MiB (1 / 0) |"
        " raw rows/s | ratio to raw |\n|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n"
        "\nThe loader alone, as `$import` uses it: the same records, planned beforehand and"
        " serialised, parsed and added one by one to `ResourceLoader(workers=N)` (validation,"
        " index rows, writes and commits), records/s:\n\n"
        "| database | workers 0 | workers 2 |\n|---|---|---|\n" + "\n".join(loader_lines) + "\n"
    )
    write_section("import", text)
    print(text)


if __name__ == "__main__":
    main()
