"""The audit trail written by a process of its own, on SQLite and PostgreSQL: entries reach
the chained log, flush and close wait for the writer, and every way it can fail - the store,
the writer process, the server process - fails closed and shows in the chain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from test_audit_log import _rename, entry, stored, wait_for

from carebase.auth.audit_chain import SHUTDOWN, UNCLEAN_SHUTDOWN
from carebase.auth.audit_detail import entry_message, record_of
from carebase.auth.audit_log import to_record
from carebase.auth.audit_process import MAX_MESSAGE, ProcessAuditTrail
from carebase.auth.audit_writer import _entries
from carebase.errors import Unavailable
from carebase.store.sql_store import SqlStore


@pytest.fixture
def trail(store: SqlStore) -> Iterator[ProcessAuditTrail]:
    t = ProcessAuditTrail(store.url, flush_ms=2, site="http://testserver/fhir")
    t.start()
    yield t
    with suppress(Unavailable):  # a test that broke the store on purpose
        t.close()


@pytest.mark.parametrize("n", [7, 8])
def test_entries_cross_to_the_writer_intact(n: int) -> None:
    original = replace(entry(n), query="a=1", source_ip="10.0.0.1", break_glass="emergency")
    crossed = record_of(orjson.loads(entry_message(original)), "carebase", "http://x/fhir")
    here = to_record(original, observer="carebase", site="http://x/fhir")
    assert crossed.id == here.id == ""  # `link` names entries after their seq
    assert crossed == here


def test_entries_are_written_in_order_and_close_adds_the_marker(
    store: SqlStore, trail: ProcessAuditTrail
) -> None:
    for n in range(300):
        trail.record(entry(n, patient=f"p{n % 3}"))
    trail.flush()
    records = stored(store)
    assert [r.entities[-1] for r in records] == [f"Observation/o{n}" for n in range(300)]
    trail.close()
    child = trail._child
    assert child is not None and child.returncode == 0
    assert stored(store)[-1].interaction == SHUTDOWN
    with pytest.raises(Unavailable, match="shut down"):
        trail.record(entry(300))


def test_a_long_query_is_cut_to_fit_not_refused(store: SqlStore, trail: ProcessAuditTrail) -> None:
    trail.record(replace(entry(1), query="a=" + "x" * (2 * MAX_MESSAGE)))
    trail.flush()
    (record,) = stored(store)
    assert record.interaction == "read"
    assert b"cut to fit" in record.event


def test_a_failing_store_refuses_then_recovers_keeping_what_was_accepted(
    store: SqlStore, trail: ProcessAuditTrail
) -> None:
    trail.record(entry(1))
    trail.flush()
    _rename(store, "audit_block", "audit_block_away")
    try:
        trail.record(entry(2))  # accepted: nobody knows yet
        wait_for(lambda: not trail.healthy)
        with pytest.raises(Unavailable, match="audit store unavailable") as refused:
            trail.record(entry(3))
        assert refused.value.status == 503
    finally:
        _rename(store, "audit_block_away", "audit_block")
    wait_for(lambda: trail.healthy)
    trail.record(entry(4))
    trail.flush()
    assert [r.entities[-1] for r in stored(store)] == [
        "Observation/o1", "Observation/o2", "Observation/o4",
    ]  # fmt: skip


def test_the_writer_outlives_interrupts_meant_for_its_server(
    store: SqlStore, trail: ProcessAuditTrail
) -> None:
    child = trail._child
    assert child is not None
    trail.record(entry(1))
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, a service manager's stop
        os.kill(child.pid, sig)
    trail.record(entry(2))
    trail.flush()
    assert child.poll() is None and trail.healthy
    trail.close()
    assert [r.interaction for r in stored(store)] == ["read", "read", SHUTDOWN]


def test_a_killed_writer_refuses_then_a_new_one_notes_the_loss(
    store: SqlStore, trail: ProcessAuditTrail
) -> None:
    trail.record(entry(1))
    trail.flush()
    child = trail._child
    assert child is not None
    os.kill(child.pid, signal.SIGKILL)
    wait_for(lambda: not trail.healthy)
    with pytest.raises(Unavailable):
        trail.record(entry(2))
    wait_for(lambda: trail.healthy)  # a new writer process took over
    assert trail._child is not None and trail._child.pid != child.pid
    trail.record(entry(3))
    trail.flush()
    assert [r.interaction for r in stored(store)] == ["read", UNCLEAN_SHUTDOWN, "read"]


def test_entries_of_a_crashed_server_are_written_and_the_next_start_notes_it(
    store: SqlStore, tmp_path: Path
) -> None:
    script = textwrap.dedent(f"""
        import os
        from carebase.auth.audit_entry import AuditEntry
        from carebase.auth.audit_process import ProcessAuditTrail
        trail = ProcessAuditTrail({store.url!r})
        for n in range(200):
            trail.record(AuditEntry("read", "R", entities=(f"Observation/o{{n}}",)))
        os._exit(3)  # crash: no flush, no close
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", script], env=env, timeout=60)
    assert done.returncode == 3
    wait_for(lambda: len(list(stored(store))) == 200, timeout=30)  # the orphan writer wrote all
    again = ProcessAuditTrail(store.url)
    again.start()
    again.close()
    assert [r.interaction for r in stored(store)][-3:] == ["read", UNCLEAN_SHUTDOWN, SHUTDOWN]


def test_a_malformed_batch_is_dropped_not_left_to_fail_every_write() -> None:
    good = entry_message(entry(1))
    assert _entries(b"[" + good + b"]") == [orjson.loads(good)]
    assert _entries(b"[not json") == []
    assert _entries(b'[["read", "R"]]') == []  # too few values for an entry
