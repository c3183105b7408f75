"""Audit entries stored compactly render to exactly the AuditEvent built from the entry."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest

from carebase.auth import audit_chain, audit_detail
from carebase.auth.audit_chain import link, link_all
from carebase.auth.audit_detail import entry_values, event_bytes, pack_entries, record_of
from carebase.auth.audit_entry import AuditEntry
from carebase.auth.audit_event import audit_event_bytes
from carebase.auth.audit_log import to_record
from carebase.auth.principal import Principal
from carebase.fhir.validation import validate_resource
from carebase.store import audit_records
from carebase.store.audit_records import entry_keys
from carebase.store.clock import datetime_to_ms

CLINICIAN = Principal(
    subject="user-7", username="dr.grey", fhir_user="Practitioner/7", role="clinician",
    client_id="smart-app", scopes=frozenset({"user/*.rs"}), break_glass="unconscious patient",
)  # fmt: skip
SERVICE = Principal(subject="svc-1", kind="service", role="service", client_id="lab-feed")
#: a visit's interpreter, acting for the clinician who invited them (or for a bare subject)
INTERPRETER = Principal(
    subject="guest/g-1", role="interpreter", username="Ana Lima (interpreter)",
    on_behalf_of="Practitioner/7",
)  # fmt: skip
WHEN = datetime(2026, 11, 28, 10, 20, 30, 123000, tzinfo=UTC)

ENTRIES = [
    AuditEntry(
        "search-type", "R", principal=CLINICIAN, entities=("Observation/o1", "Patient/p1"),
        patients=("p1",), query="subject=Patient/p1&code=4548-4", source_ip="10.1.2.3",
        user_agent="curl/8", recorded_ms=datetime_to_ms(WHEN),
    ),
    AuditEntry("read", "R", principal=SERVICE, entities=("Patient/p2",), patients=("p2",)),
    AuditEntry("failed-auth", "E", source_ip="::1", description="token expired"),
    AuditEntry("break-glass", "E", "0", principal=CLINICIAN, break_glass="stroke call"),
    AuditEntry("delete", "D", "8", principal=SERVICE, entities=("Condition/c ë",)),
    AuditEntry("telehealth-chat", "E", principal=INTERPRETER, patients=("p1",)),
    AuditEntry("telehealth-join", "E", principal=replace(INTERPRETER, on_behalf_of="u-doc")),
]  # fmt: skip


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.interaction)
def test_rendered_event_is_the_event_of_the_entry(entry: AuditEntry) -> None:
    record = link(to_record(entry, observer="carebase", site="https://x/fhir"), 1, "0" * 64)
    direct = audit_event_bytes(entry, record.id, "carebase", "https://x/fhir")
    assert event_bytes(record) == direct
    assert validate_resource(orjson.loads(direct)) == []
    assert len(record.event) < len(direct) / 2  # what is stored (and hashed) is compact


def test_rows_holding_a_whole_audit_event_are_served_as_stored() -> None:
    record = to_record(ENTRIES[1], observer="carebase", site=None)
    whole = audit_event_bytes(ENTRIES[1], record.id, "carebase", None)
    assert event_bytes(replace(record, event=whole)) == whole


def test_a_delegate_is_named_with_whom_it_acts_for() -> None:
    record = link(to_record(ENTRIES[5], observer="carebase", site=None), 1, "0" * 64)
    (agent,) = orjson.loads(event_bytes(record))["agent"]
    assert agent["altId"] == "guest/g-1" and agent["who"]["display"] == "Ana Lima (interpreter)"
    assert agent["extension"] == [
        {
            "url": "http://hl7.org/fhir/StructureDefinition/auditevent-OnBehalfOf",
            "valueReference": {"reference": "Practitioner/7"},
        }
    ]
    bare = link(to_record(ENTRIES[6], observer="carebase", site=None), 1, "0" * 64)
    (agent,) = orjson.loads(event_bytes(bare))["agent"]
    reference = agent["extension"][0]["valueReference"]
    assert reference == {"identifier": {"system": "urn:carebase:subject", "value": "u-doc"}}


def test_entries_of_the_first_detail_layout_still_read() -> None:
    """Layout 1 (before `on_behalf_of`): the caller's part has seven values."""
    entry = ENTRIES[0]
    record = link(to_record(entry, observer="carebase", site="https://x/fhir"), 1, "0" * 64)
    detail = orjson.loads(record.event)
    assert detail[0] == audit_detail.DETAIL_VERSION == 2 and len(detail[1]) == 8
    first = orjson.dumps([1, detail[1][:7], *detail[2:]])
    assert event_bytes(replace(record, event=first)) == audit_event_bytes(
        entry, record.id, "carebase", "https://x/fhir"
    )


def test_an_unknown_detail_layout_is_refused_not_misread() -> None:
    record = to_record(ENTRIES[1], observer="carebase", site=None)
    with pytest.raises(ValueError, match="detail version 9"):
        event_bytes(replace(record, event=b"[9,null,null,null,null,null,null,null,null]"))


def test_the_writer_packs_a_block_exactly_as_linking_records_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the same random part both ways (ids differ by their seq)
    monkeypatch.setattr(audit_chain, "id_suffix", lambda: "0123456789abcdef")
    monkeypatch.setattr(audit_detail, "id_suffix", lambda: "0123456789abcdef")
    entries = [*ENTRIES, replace(ENTRIES[1], entities=("Patient/p2", "Patient/p2"))]
    values = [orjson.loads(orjson.dumps(entry_values(e))) for e in entries]  # as sent
    head = "ab" * 32
    packed = pack_entries(values, 41, head, "carebase", "https://x/fhir")
    records = link_all([record_of(v, "carebase", "https://x/fhir") for v in values], 41, head)
    assert (packed.first_seq, packed.last_seq) == (42, 41 + len(entries))
    assert (packed.prev_hash, packed.hash) == (head, records[-1].hash)
    assert packed.entries == audit_records._pack(records)
    assert sorted(packed.keys) == sorted({k for r in records for k in entry_keys(r)})
    times = [r.recorded for r in records]
    assert (packed.min_recorded, packed.max_recorded) == (min(times), max(times))
