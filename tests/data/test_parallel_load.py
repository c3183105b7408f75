"""ParallelWriters: writer processes that add up like one loader (PostgreSQL only)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from carebase.config import Settings
from carebase.data.loader import LoadSummary, Origin, Rejected, ResourceLoader
from carebase.data.parallel_load import ParallelWriters
from carebase.errors import StorageError
from carebase.store.base import Store
from carebase.store.repository import COLUMNS
from carebase.store.schema import INDEX_TABLES, TEXT_TABLE
from carebase.store.sql_store import SqlStore


class Stop(Exception):
    """Raised by a test's on_batch, as a cancelled job's does."""


def _postgres(store: Store) -> SqlStore:
    if not isinstance(store, SqlStore) or store.dialect != "postgresql":
        pytest.skip("writer processes are for PostgreSQL (SQLite has one writer)")
    return store


def _patient(id_: str, family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": id_, "name": [{"family": family}]}


def _load(
    store: SqlStore, records: list[dict[str, Any]], *, workers: int = 2, batch: int = 3
) -> tuple[LoadSummary, list[Rejected]]:
    rejected: list[Rejected] = []
    with ParallelWriters(
        store.url, Settings(), workers, batch_size=batch, on_rejected=rejected.append
    ) as writers:
        for n, resource in enumerate(records, start=1):
            writers.add(resource, orjson.dumps(resource), Origin("in.ndjson", f"line {n}"))
    return writers.summary, rejected


def _records() -> list[dict[str, Any]]:
    """Twenty patients, a repeat of one of them in a later batch, and two invalid ones."""
    records = [_patient(f"p{n}", f"Family{n}") for n in range(20)]
    records.insert(7, {"resourceType": "Patient", "id": "bad", "birthDate": "not-a-date"})
    records.append(_patient("p3", "Changed"))  # a later record of p3: the first one wins
    records.append({"resourceType": "Patient", "name": [{"family": "NoId"}]})
    return records


def test_counts_add_up_and_match_one_loader(store: Store) -> None:
    pg = _postgres(store)
    summary, rejected = _load(pg, _records())
    assert (summary.read, summary.created, summary.unchanged, summary.rejected) == (23, 20, 1, 2)
    assert summary.repeated == 1 and summary.by_type == {"Patient": 21}
    assert sorted(r.origin.location for r in rejected) == ["line 23", "line 8"]
    assert all(r.origin.source == "in.ndjson" for r in rejected)
    stored = pg.read("Patient", "p3")
    assert stored is not None and stored.version == 1 and b"Family3" in (stored.body or b"")
    # One loader in this process counts the same again (everything unchanged now).
    one = ResourceLoader(pg, batch_size=3).add_all(
        [(r, Origin("in.ndjson", "")) for r in _records()]
    )
    again, _ = _load(pg, _records())
    for counts in (one, again):
        assert (counts.read, counts.created, counts.updated) == (23, 0, 0)
        assert (counts.unchanged, counts.repeated, counts.rejected) == (21, 1, 2)


def test_first_record_wins_across_batches_whatever_the_writer_count(store: Store) -> None:
    pg = _postgres(store)
    records = [_patient(f"k{n % 5}", f"Version{n // 5}") for n in range(25)]
    summary, _ = _load(pg, records, workers=3, batch=2)
    assert (summary.created, summary.unchanged, summary.repeated) == (5, 20, 20)
    for n in range(5):
        stored = pg.read("Patient", f"k{n}")
        assert stored is not None and stored.version == 1 and b"Version0" in (stored.body or b"")


def test_changed_content_is_updated_once(store: Store) -> None:
    pg = _postgres(store)
    _load(pg, [_patient("a", "Ng"), _patient("b", "Li")])
    summary, _ = _load(pg, [_patient("a", "Ngu"), _patient("b", "Li"), _patient("a", "Nguyen")])
    assert (summary.created, summary.updated, summary.unchanged, summary.repeated) == (0, 1, 2, 1)
    stored = pg.read("Patient", "a")
    assert stored is not None and stored.version == 2 and b"Ngu" in (stored.body or b"")


def test_a_stop_from_on_batch_ends_the_writers_and_a_rerun_completes(store: Store) -> None:
    pg = _postgres(store)
    records = [_patient(f"s{n}", "Stop") for n in range(60)]

    def stop(_counts: LoadSummary) -> None:
        raise Stop

    writers = ParallelWriters(pg.url, Settings(), 2, batch_size=5, on_batch=stop)
    with pytest.raises(Stop), writers:
        for n, resource in enumerate(records, start=1):
            writers.add(resource, orjson.dumps(resource), Origin("x", f"line {n}"))
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("carebase-")]
    assert 0 < _count(pg) < 60  # stopped after a committed batch, before the end
    summary, _ = _load(pg, records)
    assert summary.created + summary.unchanged == 60 and _count(pg) == 60


def test_a_writer_that_cannot_connect_fails_the_load_naming_why(store: Store) -> None:
    pg = _postgres(store)
    url = pg.url.rsplit("/", 1)[0] + "/no_such_database_here"
    resource = _patient("z", "Z")
    writers = ParallelWriters(url, Settings(), 1, batch_size=1)
    with pytest.raises(StorageError, match="no_such_database_here"), writers:
        writers.add(resource, orjson.dumps(resource), Origin("x", "line 1"))
    assert pg.read("Patient", "z") is None


def _count(store: SqlStore) -> int:
    with store.transaction() as tx:
        return len(tx.read_many([("Patient", f"s{n}") for n in range(60)]))


def test_writers_exit_when_their_parent_is_killed(store: Store, tmp_path: Path) -> None:
    pg = _postgres(store)
    script = tmp_path / "parent.py"
    script.write_text(
        "import time\n"
        "from carebase.config import Settings\n"
        "from carebase.data.parallel_load import ParallelWriters\n"
        "if __name__ == '__main__':\n"
        f"    writers = ParallelWriters({pg.url!r}, Settings(), 2)\n"
        "    print(*writers.pids, flush=True)\n"
        "    time.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
    assert parent.stdout is not None
    pids = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(pids) == 2
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_running(pid) for pid in pids):
        time.sleep(0.2)
    assert not any(_running(pid) for pid in pids)


def _running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


XHTML = "http://www.w3.org/1999/xhtml"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def _index_rows(store: SqlStore, type_: str, id_: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every search index and full-text row of one resource, without its row id."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with store.reading() as cur:
        for table in (*INDEX_TABLES, TEXT_TABLE):
            columns = ", ".join(f"i.{c}::text" for c in COLUMNS[table][1:])
            rows = cur.execute(
                f"SELECT {columns} FROM {table} i JOIN resource r ON r.rid = i.rid"
                " WHERE r.type = %s AND r.id = %s",
                (type_, id_),
            ).fetchall()
            out[table] = sorted(rows, key=repr)
    return out


def test_writers_index_resources_as_a_rest_create_does(store: Store) -> None:
    pg = _postgres(store)
    category = "http://terminology.hl7.org/CodeSystem/observation-category"
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "text": {"status": "generated", "div": f'<div xmlns="{XHTML}">Pulse</div>'},
        "category": [{"coding": [{"system": category, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": "Patient/w1"},
        "effectiveDateTime": "2019-06-13T08:26:10-04:00",
        "valueQuantity": {"value": 61.5, "unit": "/min", "system": UCUM, "code": "/min"},
    }
    patient = {**_patient("w1", "Écrivain"), "birthDate": "1970-02", "gender": "female"}
    records = [patient, {**observation, "id": "w2"}]
    summary, rejected = _load(pg, records, batch=1)
    assert summary.created == 2 and not rejected
    with pg.transaction() as tx:  # what POST /Patient and POST /Observation write
        tx.create("Patient", {**patient, "id": "rest1"}, "rest1")
        tx.create("Observation", {**observation, "id": "rest2"}, "rest2")
    for type_, imported, created in (("Patient", "w1", "rest1"), ("Observation", "w2", "rest2")):
        rows = _index_rows(pg, type_, imported)
        assert rows == _index_rows(pg, type_, created)
        assert sum(map(len, rows.values())) > 3  # indexed at all
    found = pg.search(
        "Observation", [("code", "http://loinc.org|8867-4"), ("value-quantity", "61.5")]
    )
    assert sorted(e.id for e in found.entries) == ["rest2", "w2"]


def test_a_killed_writer_with_batches_queued_fails_the_load_at_once(store: Store) -> None:
    # Batches are queued for it, more than a pipe holds, which nobody will read.
    pg = _postgres(store)
    resource = {**_patient("big", "Big"), "text": {"status": "generated", "div": "x" * 4000}}
    line = orjson.dumps(resource)
    started = time.monotonic()
    writers = ParallelWriters(pg.url, Settings(), 1, batch_size=100)
    with pytest.raises(StorageError, match="ended"), writers:
        for n in range(1, 301):  # three batches of ~400 kB handed out
            writers.add(resource, line, Origin("x", f"line {n}"))
        os.kill(writers.pids[0], signal.SIGKILL)
    assert time.monotonic() - started < 60
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("carebase-")]
