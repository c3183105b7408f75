"""The durable audit trail: entries/s written (group commit) and record() latency.

For SQLite (a temporary file) and PostgreSQL (CAREBASE_TEST_POSTGRES_URL, else a server on
127.0.0.1:5432, in a throwaway schema), three runs each of:
- saturation: N entries recorded at once; entries/s the writer thread stores them at (from
  the first record() to the final flush);
- paced: one thread records 2,000 entries/s for 3 s (a busy server); record() latency;
- one transaction per entry (what the trail avoids), for comparison.

Usage: python bench/bench_audit.py [--entries 20000] [--runs 3] [--no-docs]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from report import machine, postgres_schema, write_section

from carebase.auth.audit_chain import link_all, verify
from carebase.auth.audit_entry import AuditEntry
from carebase.auth.audit_log import DatabaseAuditTrail, to_record
from carebase.auth.principal import Principal
from carebase.store import audit_records
from carebase.store.factory import open_store
from carebase.store.sql_store import SqlStore

CLINICIAN = Principal(
    subject="u-7", username="dr.grey", role="clinician", fhir_user="Practitioner/7",
    client_id="ehr", scopes=frozenset({"user/*.rs"}),
)  # fmt: skip
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def entry(n: int) -> AuditEntry:
    """A typical access: a read of one Observation of one patient, with its query."""
    return AuditEntry(
        "read", "R", principal=CLINICIAN, entities=(f"Observation/o{n}",),
        patients=(f"p{n % 997}",), source_ip="10.0.0.8", user_agent="bench",
    )  # fmt: skip


@contextmanager
def database(kind: str) -> Iterator[str]:
    """A fresh, migrated database URL of `kind`, removed afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'audit.db'}"
            yield url
        return
    server = os.environ.get("CAREBASE_TEST_POSTGRES_URL", PG_DEFAULT)
    with postgres_schema(server, "bench_audit") as url:
        yield url


def opened(url: str) -> SqlStore:
    store = open_store(url)
    assert isinstance(store, SqlStore)
    store.migrate()
    return store


def saturation(url: str, total: int) -> tuple[float, float]:
    """(entries/s, entries per transaction) the writer thread stores when `total` entries
    arrive at once (the buffer sized to hold them all)."""
    store = opened(url)
    trail = DatabaseAuditTrail(store, max_buffer=total)
    trail.start()
    entries = [entry(n) for n in range(total)]
    started = time.perf_counter()
    for e in entries:
        trail.record(e)
    trail.flush(timeout=600)
    took = time.perf_counter() - started
    rate, per_tx = total / took, trail.stats.written / max(trail.stats.transactions, 1)
    trail.close()
    assert verify(audit_records.iter_records(store)).intact
    store.close()
    return rate, per_tx


def paced(url: str, rate: int = 2000, seconds: float = 3.0) -> tuple[float, float]:
    """(median, p99) record() latency in microseconds at `rate` entries/s."""
    store = opened(url)
    trail = DatabaseAuditTrail(store)
    trail.start()
    latencies: list[int] = []
    interval = 1 / rate
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        due = start + n * interval
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        e = entry(n)
        t0 = time.perf_counter_ns()
        trail.record(e)
        latencies.append(time.perf_counter_ns() - t0)
    trail.close()
    store.close()
    latencies.sort()
    return statistics.median(latencies) / 1000, latencies[int(len(latencies) * 0.99)] / 1000


def one_per_transaction(url: str, total: int = 500) -> float:
    """entries/s when every entry is its own transaction (no group commit)."""
    store = opened(url)
    started = time.perf_counter()
    for n in range(total):
        record = to_record(entry(n), observer="carebase", site=None)
        audit_records.append(store, lambda head, r=record: link_all([r], head.seq, head.hash))
    took = time.perf_counter() - started
    store.close()
    return total / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument(
        "--note", default="the machine was otherwise idle", help="conditions of the run"
    )
    args = parser.parse_args()
    rows = []
    for kind in ("sqlite", "postgresql"):
        rates, batches, medians, p99s, singles = [], [], [], [], []
        for _ in range(args.runs):
            with database(kind) as url:
                rate, per_tx = saturation(url, args.entries)
            with database(kind) as url:
                median, p99 = paced(url)
            with database(kind) as url:
                single = one_per_transaction(url)
            rates.append(rate)
            batches.append(per_tx)
            medians.append(median)
            p99s.append(p99)
            singles.append(single)
            print(f"{kind}: {rate:,.0f}/s ({per_tx:.0f}/tx), record() {median:.1f} us "
                  f"(p99 {p99:.1f}), one per tx {single:,.0f}/s", flush=True)  # fmt: skip
        name = "SQLite" if kind == "sqlite" else "PostgreSQL"
        rows.append(
            f"| {name} | {statistics.median(rates):,.0f} | "
            f"{', '.join(f'{r:,.0f}' for r in rates)} | {statistics.median(batches):,.0f} | "
            f"{statistics.median(medians):.1f} | {statistics.median(p99s):.1f} | "
            f"{statistics.median(singles):,.0f} |"
        )
    lines = [
        "## Audit trail: group-committed, hash-chained writes",
        "",
        f"Machine: {machine()}. Script: `bench/bench_audit.py` ({args.runs} runs per database, "
        "medians; a fresh database each; " + args.note + "). Saturation: "
        f"{args.entries:,} entries recorded at once, stored by the trail's writer thread "
        "(each entry's compact row built and SHA-256 chained, packed into one block row per "
        "transaction of up to 2,000 entries, search keys indexed once a second), timed "
        "from the first `record()` to "
        "the final flush. Paced: one thread records 2,000 entries/s for 3 s, "
        "as a busy server would; `record()` latency is what a request pays. Last column: "
        "the same entries each in its own transaction, which the trail avoids.",
        "",
        "| database | entries/s written (median) | runs | entries per transaction | "
        "record() median µs | record() p99 µs | one transaction per entry, entries/s |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_docs:
        write_section("audit", text)


if __name__ == "__main__":
    main()
