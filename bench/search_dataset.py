"""A search benchmark database of about 1,000,000 resources, built once and reused.

The 100 Synthea patient Bundles (their `urn:uuid` references mapped to Type/id, as a client's
transaction would) are stored again and again, each copy with fresh ids (references rewritten
consistently), a two-letter suffix on every family name and a `-<copy>` suffix on every
Patient identifier, so string and identifier searches stay as selective as in one copy.
Everything goes in through the Store API (`tx.update` in batches) into an SQLite file; the
dedicated PostgreSQL database gets the same rows copied from it (COPY, then the schema's
indexes built), since a Store API load into PostgreSQL ran at under 300 resources/s on this
shared 2-core machine (`--pg-via-store` loads it through the Store API all the same).
A finished load records a fingerprint (schema version and the dataset's parameters) in the
database; a later run with the same fingerprint reuses it.

    python bench/search_dataset.py [--backend sqlite|postgresql|both] [--data-dir DIR]
        [--resources 1000000] [--force] [--pg-via-store]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import sqlite3
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
from server import PG_ADMIN_URL, REPO

from carebase.fhir.bundle import rewrite_references
from carebase.store.factory import open_store
from carebase.store.schema import INDEX_TABLES, MIGRATIONS

SHARED = Path(os.environ.get("CAREBASE_SHARED_DIR", REPO.parent / "shared"))
DEFAULT_TAR = SHARED / "data" / "synthea-r4-100.tar.gz"
DEFAULT_DATA_DIR = Path("/work/bench-data")
PG_DATABASE = "bench_search_1m"
BATCH = 5000
#: bump when the way copies are made changes, so old databases are rebuilt; a newer schema
#: does not rebuild them: a reused database is migrated forward (`build`)
GENERATOR = 1
#: fingerprint suffix of a PostgreSQL database copied from the SQLite one
COPIED = "-copied"
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"

Json = dict[str, Any]


def template(tar_path: Path) -> tuple[bytes, set[bytes]]:
    """The patient Bundles' resources as one JSON array (references as Type/id) and their ids."""
    resources: list[Json] = []
    with tarfile.open(tar_path) as tar:
        for member in tar:
            name = Path(member.name).name
            # lower-case names are the practitioner and hospital Bundles; patients are Names
            if member.isfile() and name.endswith(".json") and not name[0].islower():
                extracted = tar.extractfile(member)
                assert extracted is not None
                bundle = orjson.loads(extracted.read())
                assigned = {
                    e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
                    for e in bundle["entry"]
                }
                for entry in bundle["entry"]:
                    rewrite_references(entry["resource"], assigned)
                    resources.append(entry["resource"])
    ids = {r["id"].encode() for r in resources}
    return orjson.dumps(resources), ids


def copy_suffix(copy: int) -> str:
    """The family-name suffix of copy `copy` ('aa', 'ab', ...)."""
    return _LETTERS[copy // 26 % 26] + _LETTERS[copy % 26]


def copy_id(copy: int, original: bytes) -> bytes:
    """The id a resource gets in copy `copy`: a UUID-shaped hash, stable between runs."""
    digest = hashlib.md5(b"%d:" % copy + original).hexdigest().encode()
    return b"-".join((digest[:8], digest[8:12], digest[12:16], digest[16:20], digest[20:32]))


def make_copy(text: bytes, ids: set[bytes], copy: int) -> list[Json]:
    """Copy `copy` of the template: fresh ids everywhere, varied names and identifiers."""
    fresh: dict[bytes, bytes] = {}

    def replace(match: re.Match[bytes]) -> bytes:
        old = match.group(0)
        if old not in ids:
            return old
        new = fresh.get(old)
        if new is None:
            new = fresh[old] = copy_id(copy, old)
        return new

    resources: list[Json] = orjson.loads(_UUID.sub(replace, text))
    suffix = copy_suffix(copy)
    for resource in resources:
        if resource["resourceType"] != "Patient":
            continue
        for name in resource.get("name", []):
            if "family" in name:
                name["family"] += suffix
        for identifier in resource.get("identifier", []):
            if "value" in identifier:
                identifier["value"] += f"-{copy}"
    return resources


@dataclass(frozen=True)
class Dataset:
    """Where the databases live and what they hold."""

    data_dir: Path
    resources: int
    tar: Path

    @property
    def sqlite_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'search-1m.sqlite'}"

    @property
    def postgres_url(self) -> str:
        return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{PG_DATABASE}"

    def url(self, backend: str) -> str:
        return self.sqlite_url if backend == "sqlite" else self.postgres_url

    def fingerprint(self, per_copy: int) -> str:
        stat = self.tar.stat()
        copies = math.ceil(self.resources / per_copy)
        text = f"schema=1;gen={GENERATOR};copies={copies};tar={stat.st_size}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def stored_fingerprint(url: str) -> str | None:
    """The fingerprint a finished load left in the database, or None."""
    try:
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            if not path.exists():
                return None
            with sqlite3.connect(path) as conn:
                row = conn.execute("SELECT fingerprint FROM bench_dataset").fetchone()
        else:
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT fingerprint FROM bench_dataset").fetchone()
    except (sqlite3.Error, psycopg.Error):
        return None
    return str(row[0]) if row else None


def _record_fingerprint(url: str, fingerprint: str, resources: int, seconds: float) -> None:
    ddl = "CREATE TABLE bench_dataset (fingerprint TEXT, resources BIGINT, seconds REAL)"
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(ddl)
            conn.execute(
                "INSERT INTO bench_dataset VALUES (?, ?, ?)", (fingerprint, resources, seconds)
            )
    else:
        with psycopg.connect(url) as conn:
            conn.execute(ddl)
            conn.execute(
                "INSERT INTO bench_dataset VALUES (%s, %s, %s)", (fingerprint, resources, seconds)
            )


def load_record(url: str) -> tuple[int, float] | None:
    """(resources, seconds) of the finished load of the database at `url`."""
    try:
        if url.startswith("sqlite:///"):
            with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
                row = conn.execute("SELECT resources, seconds FROM bench_dataset").fetchone()
        else:
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT resources, seconds FROM bench_dataset").fetchone()
    except (sqlite3.Error, psycopg.Error):
        return None
    return (int(row[0]), float(row[1])) if row else None


def _batches(text: bytes, ids: set[bytes], copies: int) -> Iterator[list[Json]]:
    for copy in range(copies):
        resources = make_copy(text, ids, copy)
        for start in range(0, len(resources), BATCH):
            yield resources[start : start + BATCH]


def _fresh(dataset: Dataset, backend: str) -> str:
    url = dataset.url(backend)
    if backend == "sqlite":
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {PG_DATABASE}")
    return url


def copy_sqlite_to_postgres(dataset: Dataset, fingerprint: str) -> tuple[int, float]:
    """Fill the PostgreSQL database with the SQLite dataset's rows (COPY), then index it.

    The rows are those the Store API wrote into SQLite (the same indexer makes the index
    rows for both databases); the indexes are dropped while copying and made again with the
    schema's own DDL, the sequences moved past the copied ids.
    """
    url = _fresh(dataset, "postgresql")
    store = open_store(url)
    store.migrate()
    store.close()
    latest: dict[str, str] = {}  # index name -> its last CREATE (migrations remake some)
    for m in MIGRATIONS:
        for stmt in m.postgresql:
            if re.match(r"CREATE (UNIQUE )?INDEX", stmt):
                latest[re.split(r"INDEX (\w+)", stmt)[1]] = stmt
    index_ddl = list(latest.values())
    source = sqlite3.connect(dataset.sqlite_url.removeprefix("sqlite:///"))
    start = time.perf_counter()
    rows = 0
    with psycopg.connect(url) as conn:
        for stmt in index_ddl:
            conn.execute("DROP INDEX " + re.split(r"INDEX (\w+)", stmt)[1])
        for table in ("resource", "resource_version", *INDEX_TABLES):
            columns = ", ".join(c[1] for c in source.execute(f"PRAGMA table_info({table})"))
            with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in source.execute(f"SELECT {columns} FROM {table}"):
                    copy.write_row(row)
                    rows += 1
            print(f"postgresql: copied {table} ({rows:,} rows so far)", flush=True)
        for table, column in (("resource", "rid"), ("resource_version", "seq")):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                f" (SELECT MAX({column}) FROM {table}))"
            )
        for stmt in index_ddl:
            conn.execute(stmt)
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    seconds = time.perf_counter() - start
    resources = int(source.execute("SELECT resources FROM bench_dataset").fetchone()[0])
    source.close()
    _record_fingerprint(url, fingerprint + COPIED, resources, seconds)
    print(f"postgresql: copied {rows:,} rows from SQLite in {seconds:.0f} s", flush=True)
    return resources, seconds


def build(
    dataset: Dataset, backend: str, *, force: bool = False, via_store: bool = False
) -> tuple[int, float]:
    """Load the dataset into `backend` unless a matching one exists; (resources, seconds).

    PostgreSQL is filled from the SQLite dataset (built first) unless `via_store`: on this
    2-core machine a Store API load into PostgreSQL ran at a few hundred resources/s.
    """
    text, ids = template(dataset.tar)
    per_copy = len(ids)
    fingerprint = dataset.fingerprint(per_copy)
    url = dataset.url(backend)
    stored = stored_fingerprint(url)
    if not force and stored in (fingerprint, fingerprint + COPIED):
        record = load_record(url)
        assert record is not None
        store = open_store(url)
        try:
            applied = store.migrate()  # e.g. new lookup indexes: built here, on the data
        finally:
            store.close()
        print(f"{backend}: reusing {url} ({record[0]:,} resources, migrated {applied})", flush=True)
        return record
    if backend == "postgresql" and not via_store:
        build(dataset, "sqlite")
        return copy_sqlite_to_postgres(dataset, fingerprint)
    copies = math.ceil(dataset.resources / per_copy)
    print(f"{backend}: loading {copies} copies of {per_copy:,} resources into {url}", flush=True)
    url = _fresh(dataset, backend)
    store = open_store(url)
    store.migrate()
    total, start, last_report = 0, time.perf_counter(), 0.0
    try:
        for batch in _batches(text, ids, copies):
            with store.transaction() as tx:
                for resource in batch:
                    tx.update(resource["resourceType"], resource["id"], resource)
            total += len(batch)
            elapsed = time.perf_counter() - start
            if elapsed - last_report >= 10:
                last_report = elapsed
                print(
                    f"{backend}: {total:,} resources in {elapsed:.0f} s = "
                    f"{total / elapsed:,.0f} resources/s",
                    flush=True,
                )
    finally:
        store.close()
    seconds = time.perf_counter() - start
    if backend == "postgresql":  # what autovacuum would do shortly after such a load
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    _record_fingerprint(url, fingerprint, total, seconds)
    print(
        f"{backend}: loaded {total:,} resources in {seconds:.0f} s = "
        f"{total / seconds:,.0f} resources/s",
        flush=True,
    )
    return total, seconds


def dataset_arguments(description: str | None) -> argparse.ArgumentParser:
    """A parser with the options that choose the databases and the dataset."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--tar", type=Path, default=DEFAULT_TAR)
    return parser


def main() -> None:
    parser = dataset_arguments(__doc__)
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument(
        "--pg-via-store",
        action="store_true",
        help="load PostgreSQL through the Store API too (slow) instead of copying SQLite's rows",
    )
    args = parser.parse_args()
    dataset = Dataset(args.data_dir, args.resources, args.tar)
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    for backend in backends:
        build(dataset, backend, force=args.force, via_store=args.pg_via_store)


if __name__ == "__main__":
    main()
