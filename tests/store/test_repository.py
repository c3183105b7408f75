"""Store behaviour on both databases: versions, tombstones, history, atomicity, concurrency."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from carebase.errors import Conflict, PreconditionFailed
from carebase.store.base import Store
from carebase.store.factory import open_store


def patient(family: str = "Chalmers", **extra: object) -> dict[str, object]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Peter"]}], **extra}


def test_migrate_is_idempotent(store: Store) -> None:
    assert store.migrate() == []
    assert store.schema_version() >= 1


def test_create_read_stamps_meta_and_keeps_bytes(store: Store) -> None:
    with store.transaction() as tx:
        created = tx.create("Patient", patient(birthDate="1974-12-25"))
    assert created.version == 1 and not created.deleted
    got = store.read("Patient", created.id)
    assert got is not None and got.body == created.body
    body = orjson.loads(got.body)
    assert list(body)[:3] == ["resourceType", "id", "meta"]
    assert body["id"] == created.id
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert body["birthDate"] == "1974-12-25"


def test_update_delete_versions_and_vread(store: Store) -> None:
    with store.transaction() as tx:
        stored, created = tx.update("Patient", "p1", patient("One"))
    assert created and stored.version == 1
    with store.transaction() as tx:
        stored, created = tx.update("Patient", "p1", patient("Two"), if_match=1)
    assert not created and stored.version == 2
    with store.transaction() as tx:
        tomb = tx.delete("Patient", "p1")
    assert tomb is not None and tomb.version == 3 and tomb.deleted
    current = store.read("Patient", "p1")
    assert current is not None and current.deleted and current.body is None
    assert orjson.loads(store.vread("Patient", "p1", 1).body)["name"][0]["family"] == "One"  # type: ignore[union-attr]
    v3 = store.vread("Patient", "p1", 3)
    assert v3 is not None and v3.deleted
    assert store.vread("Patient", "p1", 4) is None
    with store.transaction() as tx:
        assert tx.delete("Patient", "p1") is None  # deleting twice is a no-op
        again, created = tx.update("Patient", "p1", patient("Three"))
    assert created and again.version == 4


def test_if_match_mismatch_and_duplicate_create(store: Store) -> None:
    with store.transaction() as tx:
        tx.create("Patient", patient(), id_="dup")
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.create("Patient", patient(), id_="dup")
    with pytest.raises(PreconditionFailed), store.transaction() as tx:
        tx.update("Patient", "dup", patient(), if_match=7)
    with pytest.raises(PreconditionFailed), store.transaction() as tx:
        tx.update("Patient", "missing", patient(), if_match=1)


def test_transaction_rolls_back_everything(store: Store) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.transaction() as tx:
        for i in range(1000):
            tx.create(
                "Observation",
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": "Patient/x"},
                },
                id_=f"o{i}",
            )
            if i == 899:
                raise Boom
    assert store.read("Observation", "o0") is None
    assert store.history("Observation").total == 0
    assert store.search("Observation", [("code", "8867-4")]).total == 0


def test_history_levels_since_at_and_paging(store: Store) -> None:
    with store.transaction() as tx:
        tx.update("Patient", "a", patient("A1"))
        tx.update("Patient", "b", patient("B1"))
    time.sleep(0.01)  # timestamps have millisecond precision: keep `middle` clear of both
    middle = datetime.now(UTC)
    time.sleep(0.01)
    with store.transaction() as tx:
        tx.update("Patient", "a", patient("A2"))
        tx.create("Organization", {"resourceType": "Organization", "name": "Acme"}, id_="o")
    page = store.history("Patient", "a")
    assert [e.version for e in page.entries] == [2, 1] and page.total == 2
    assert store.history("Patient").total == 3
    assert store.history().total == 4
    assert store.history(since=middle).total == 2
    at_middle = store.history("Patient", at=middle)
    assert sorted((e.id, e.version) for e in at_middle.entries) == [("a", 1), ("b", 1)]
    first = store.history(count=3)
    assert len(first.entries) == 3 and first.next_cursor is not None
    rest = store.history(count=3, cursor=first.next_cursor)
    assert len(rest.entries) == 1 and rest.next_cursor is None
    seen = [(e.type, e.id, e.version) for e in first.entries + rest.entries]
    assert len(set(seen)) == 4
    future = datetime.now(UTC) + timedelta(days=1)
    assert store.history(since=future).entries == []


def test_basic_search_and_paging(store: Store) -> None:
    with store.transaction() as tx:
        for i in range(7):
            tx.create("Patient", patient("Smith" if i % 2 else "Jones", gender="female"))
    assert store.search("Patient", [("family", "smi")]).total == 3
    assert store.search("Patient", [("family:exact", "Smith")]).total == 3
    assert store.search("Patient", [("family:exact", "smith")]).total == 0
    assert store.search("Patient", [("gender", "female"), ("family", "jones")]).total == 4
    page1 = store.search("Patient", [], count=5)
    page2 = store.search("Patient", [], count=5, cursor=page1.next_cursor)
    assert len(page1.entries) == 5 and len(page2.entries) == 2 and page2.next_cursor is None


def test_update_replaces_index_rows(store: Store) -> None:
    with store.transaction() as tx:
        tx.update("Patient", "x", patient("Before"))
    with store.transaction() as tx:
        tx.update("Patient", "x", patient("After"))
    assert store.search("Patient", [("family", "before")]).total == 0
    assert store.search("Patient", [("family", "after")]).total == 1
    with store.transaction() as tx:
        tx.delete("Patient", "x")
    assert store.search("Patient", [("family", "after")]).total == 0


def _second_store(store: Store) -> Store:
    return open_store(store.url)


def test_concurrent_if_match_exactly_one_wins(store: Store) -> None:
    with store.transaction() as tx:
        tx.update("Patient", "race", patient("Start"))
    results: list[str] = []
    barrier = threading.Barrier(8)

    def writer(n: int) -> None:
        barrier.wait()
        try:
            with store.transaction() as tx:
                tx.update("Patient", "race", patient(f"W{n}"), if_match=1)
            results.append("won")
        except PreconditionFailed:
            results.append("lost")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("won") == 1 and results.count("lost") == 7
    current = store.read("Patient", "race")
    assert current is not None and current.version == 2


def test_concurrent_updates_lose_no_version(store: Store) -> None:
    with store.transaction() as tx:
        tx.update("Patient", "counter", patient("0"))
    per_thread = 10

    def writer(n: int) -> None:
        done = 0
        while done < per_thread:
            current = store.read("Patient", "counter")
            assert current is not None
            try:
                with store.transaction() as tx:
                    tx.update(
                        "Patient", "counter", patient(f"{n}-{done}"), if_match=current.version
                    )
                done += 1
            except PreconditionFailed:
                continue

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = store.read("Patient", "counter")
    assert final is not None and final.version == 1 + 4 * per_thread
    versions = sorted(e.version for e in store.history("Patient", "counter", count=100).entries)
    assert versions == list(range(1, 2 + 4 * per_thread))


def test_killed_process_leaves_nothing(store: Store, tmp_path: object) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from carebase.store.factory import open_store
        store = open_store({store.url!r})
        with store.transaction() as tx:
            for i in range(1000):
                resource = {{"resourceType": "Patient", "name": [{{"family": "K"}}]}}
                tx.create("Patient", resource, id_=f"k{{i}}")
            tx.flush()
            print("ready", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(0.2)
    fresh = _second_store(store)
    try:
        assert fresh.read("Patient", "k0") is None
        assert fresh.history("Patient").total == 0
        with fresh.transaction() as tx:  # and the database is writable again
            tx.create("Patient", patient(), id_="after-kill")
        assert fresh.read("Patient", "after-kill") is not None
    finally:
        fresh.close()


def test_concurrent_units_succeed_or_fail_alone(store: Store) -> None:
    """Writers that share a group commit (SQLite) still succeed or fail one by one."""

    class Abort(Exception):
        pass

    barrier = threading.Barrier(16)
    outcomes: dict[int, str] = {}

    def writer(n: int) -> None:
        barrier.wait()
        try:
            with store.transaction() as tx:
                for k in range(3):
                    tx.create("Patient", patient(f"T{n}"), id_=f"t{n}-{k}")
                if n % 4 == 0:
                    raise Abort
            outcomes[n] = "committed"
        except Abort:
            outcomes[n] = "aborted"

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n, outcome in outcomes.items():
        present = [store.read("Patient", f"t{n}-{k}") is not None for k in range(3)]
        assert present == [outcome == "committed"] * 3, (n, outcome, present)
    assert sorted(outcomes.values()).count("committed") == 12
    assert store.history("Patient").total == 36


def test_read_async_concurrent_first_use_and_new_loops(store: Store) -> None:
    import asyncio

    with store.transaction() as tx:
        tx.update("Patient", "async", patient("Async"))

    async def many() -> list[int]:
        found = await asyncio.gather(*(store.read_async("Patient", "async") for _ in range(20)))
        missing = await store.read_async("Patient", "nope")
        assert missing is None
        await store.aclose()
        return [s.version for s in found if s is not None]

    # Twice, on two event loops: an async pool belongs to the loop that opened it.
    assert asyncio.run(many()) == [1] * 20
    assert asyncio.run(many()) == [1] * 20
