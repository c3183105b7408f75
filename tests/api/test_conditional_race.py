"""Concurrent conditional creates with the same criteria create exactly one resource."""

from __future__ import annotations

import threading
import time

from carebase.api import interactions
from carebase.api.access import Guard
from carebase.api.results import Context
from carebase.config import Settings
from carebase.store.base import Store


def patient(family: str, **extra: object) -> dict[str, object]:
    return {"resourceType": "Patient", "name": [{"family": family}], **extra}


def test_concurrent_conditional_creates_make_one_resource(store: Store) -> None:
    ctx = Context(store, Settings(), "http://testserver/fhir", Guard.unrestricted())
    barrier = threading.Barrier(6)
    statuses: list[int] = []

    def writer() -> None:
        barrier.wait()
        with store.transaction() as tx:
            resource = patient("Once", identifier=[{"system": "http://mrn", "value": "42"}])
            result = interactions.create(
                ctx, tx, "Patient", resource, if_none_exist="identifier=http://mrn|42"
            )
            time.sleep(0.05)  # widen the window in which a second create could slip in
        statuses.append(result.status)

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 5 + [201]
    assert store.search("Patient", [("identifier", "http://mrn|42")]).total == 1
