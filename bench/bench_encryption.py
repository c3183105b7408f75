"""What encryption at rest costs: reads by id and creates, with and without, on both databases.

Measured in-process through the Store API (no HTTP), so the ratio shows the whole cost of
AES-256-GCM on the storage path rather than a share diluted by HTTP handling. Each round
writes `--creates` Synthea-sized Patients one transaction each (every create commits), then
reads `--reads` of them by id in random order; plaintext and encrypted rounds alternate on the
same database, and each figure is the median of `--rounds` rounds. Also times sealing and
opening one body alone. Writes its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import http_bench
from http_bench import sample_patient
from report import machine, write_section
from server import fresh_postgres_database

from carebase.config import Settings
from carebase.fhir import json_io
from carebase.store.body_cipher import BodyCipher, new_key
from carebase.store.factory import open_store
from carebase.store.sql_store import SqlStore

MODES = ("plaintext", "encrypted")
if os.environ.get("CAREBASE_SHARED_DIR"):  # a worktree's sample lives in the shared folder
    http_bench.SYNTHEA_TAR = (
        Path(os.environ["CAREBASE_SHARED_DIR"]) / "data" / "synthea-r4-100.tar.gz"
    )


def one_round(
    store: SqlStore, cipher: BodyCipher | None, creates: int, reads: int
) -> tuple[float, float]:
    """(creates/s, reads/s) of one round with `cipher` (None: plaintext)."""
    store.cipher = cipher
    patient = sample_patient()
    ids = []
    start = time.perf_counter()
    for _ in range(creates):
        with store.transaction() as tx:
            ids.append(tx.create("Patient", dict(patient)).id)
    create_rate = creates / (time.perf_counter() - start)
    order = [random.choice(ids) for _ in range(reads)]
    start = time.perf_counter()
    for id_ in order:
        found = store.read("Patient", id_)
        assert found is not None and found.body is not None
    read_rate = reads / (time.perf_counter() - start)
    return create_rate, read_rate


def measure(url: str, rounds: int, creates: int, reads: int) -> dict[str, tuple[float, float]]:
    """mode -> (median creates/s, median reads/s) on the database at `url`."""
    store = open_store(url, Settings(pool_size=2))
    assert isinstance(store, SqlStore)
    cipher = BodyCipher([new_key()])
    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    try:
        store.migrate()
        one_round(store, None, max(10, creates // 10), reads // 10)  # warm-up
        for _ in range(rounds):
            for mode in MODES:
                results[mode].append(
                    one_round(store, cipher if mode == "encrypted" else None, creates, reads)
                )
    finally:
        store.cipher = None
        store.close()
    return {
        mode: (
            statistics.median(r[0] for r in runs),
            statistics.median(r[1] for r in runs),
        )
        for mode, runs in results.items()
    }


def cipher_alone(repeat: int = 20_000) -> tuple[int, float, float]:
    """(body bytes, µs to seal, µs to open) one Synthea Patient body."""
    cipher = BodyCipher([new_key()])
    body = json_io.dumps({**sample_patient(), "id": "x"})
    start = time.perf_counter()
    for _ in range(repeat):
        sealed = cipher.seal(body, "Patient", "x", 1)
    seal_us = (time.perf_counter() - start) / repeat * 1e6
    start = time.perf_counter()
    for _ in range(repeat):
        cipher.open(sealed, "Patient", "x", 1)
    open_us = (time.perf_counter() - start) / repeat * 1e6
    return len(body), seal_us, open_us


#: SQLite reads by id over HTTP in the HTTP section (bench/http_bench.py), for scale
HTTP_SQLITE_READS_PER_S = 9128


def render(
    rows: list[tuple[str, dict[str, tuple[float, float]]]],
    args: argparse.Namespace,
    cipher: tuple[int, float, float],
    load: float,
) -> str:
    """The docs/benchmarks.md section for these measurements."""
    size, seal_us, open_us = cipher
    table = [
        "| database | operation | plaintext /s | encrypted /s | encrypted / plaintext |",
        "|---|---|---|---|---|",
    ]
    for name, figures in rows:
        for index, operation in ((1, "read by id"), (0, "create (one commit each)")):
            plain, sealed = figures["plaintext"][index], figures["encrypted"][index]
            table.append(
                f"| {name} | {operation} | {plain:,.0f} | {sealed:,.0f} | {sealed / plain:.2f} |"
            )
    http_read_us = 1e6 / HTTP_SQLITE_READS_PER_S
    return "\n".join(
        [
            "## Encryption at rest: reads and creates with and without AES-256-GCM",
            "",
            f"Machine: {machine()}. Script: `bench/bench_encryption.py`: in-process through the "
            f"Store API (no HTTP), {args.rounds} rounds alternating plaintext and encrypted on "
            f"the same database, each round {args.creates} creates (one transaction and commit "
            f"each) then {args.reads} reads by id in random order of a Synthea Patient "
            f"({size:,} bytes of JSON); medians of the rounds. SQLite is a file in a temporary "
            "directory; PostgreSQL is the local server.",
            "",
            *table,
            "",
            f"The cipher alone: sealing one {size:,}-byte body takes {seal_us:.1f} µs and "
            f"opening it {open_us:.1f} µs (`cryptography`'s AESGCM). A read by id pays one "
            "open, a create one seal. Over HTTP a SQLite read takes about "
            f"{http_read_us:.0f} µs of server time (the HTTP section's "
            f"{HTTP_SQLITE_READS_PER_S:,} reads/s), so one open adds about "
            f"{open_us / http_read_us:.0%} to it; a create costs milliseconds (the commit), "
            f"next to which one seal is negligible. Load average when the run began: {load:.1f} "
            f"on {os.cpu_count()} cores: other jobs shared the machine, and on it repeated "
            "runs moved the read ratios by up to 0.3 either way; read the table as 'within "
            "noise to a few tens of percent in-process', and the cipher-alone times as the "
            "firm figures.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--creates", type=int, default=300)
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--no-write", action="store_true", help="print, do not edit the docs")
    args = parser.parse_args()
    random.seed(7)
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        urls = {
            "SQLite": f"sqlite:///{Path(tmp) / 'bench.db'}",
            "PostgreSQL": fresh_postgres_database("carebase_bench_encryption"),
        }
        for name, url in urls.items():
            figures = measure(url, args.rounds, args.creates, args.reads)
            print(name, figures, flush=True)
            rows.append((name, figures))
    markdown = render(rows, args, cipher_alone(), load)
    print(markdown)
    if not args.no_write:
        write_section("encryption", markdown)


if __name__ == "__main__":
    main()
