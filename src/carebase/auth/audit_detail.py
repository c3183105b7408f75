"""The compact form an audit entry is stored (and hashed) in, and its AuditEvent rendering.

The trail's writer runs for every request, so it stores what an entry says - the log's
columns plus a short JSON array of the rest (who, from where, the query) - rather than the
AuditEvent JSON, which is five to ten times larger and costs more to build than the rest
of the write together. The AuditEvent is rendered from those hashed bytes when someone reads
the log: a pure function of them, so the chain covers everything a reader sees.

Rows written before this form existed hold the AuditEvent JSON itself (it starts with `{`)
and are served as stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from carebase.auth.audit_chain import chain_hash, id_suffix
from carebase.auth.audit_entry import AuditEntry
from carebase.auth.audit_event import audit_event_bytes, outcome_code
from carebase.auth.principal import Principal, per_principal
from carebase.store.audit_records import AuditRecord, PackedBlock, entry_id, frame

#: First element of every compact detail array: its layout, for readers of later versions.
#: 2: the caller's part ends with whom a delegate acts for (`Principal.on_behalf_of`);
#: entries of layout 1 (without it) still read.
DETAIL_VERSION = 2
_READABLE_VERSIONS = (1, 2)
#: How many values `entry_values` gives.
ENTRY_FIELDS = 12


def _part(principal: Principal) -> tuple[Any, ...]:
    return (
        principal.subject,
        principal.kind,
        principal.role,
        principal.username,
        principal.fhir_user,
        principal.client_id,
        principal.break_glass,
        principal.on_behalf_of,
    )


#: one caller makes many requests: the part about them is built once
_principal_part = per_principal(_part)


def _said(entry: AuditEntry) -> tuple[Any, ...]:
    """What `entry` says beyond the log's columns: who in full, from where, the query..."""
    principal = entry.principal
    return (
        None if principal is None else _principal_part(principal),
        entry.query,
        entry.source_ip,
        entry.user_agent,
        entry.description,
        entry.break_glass,
    )


def _principal(part: list[Any] | None) -> Principal | None:
    if part is None:
        return None
    subject, kind, role, username, fhir_user, client_id, break_glass, *delegate = part
    return Principal(
        subject, kind, role, username, fhir_user, client_id=client_id, break_glass=break_glass,
        on_behalf_of=delegate[0] if delegate else None,
    )  # fmt: skip


def event_bytes(record: AuditRecord) -> bytes:
    """The AuditEvent JSON of a stored entry (rendered from its compact form)."""
    if record.event[:1] == b"{":
        return record.event  # written as a whole AuditEvent by an earlier version
    version, who, query, source_ip, user_agent, description, break_glass, observer, site = (
        orjson.loads(record.event)
    )
    if version not in _READABLE_VERSIONS:
        raise ValueError(f"audit entry {record.id} has detail version {version}, not known")
    entry = AuditEntry(
        record.interaction,
        record.action,  # type: ignore[arg-type]  # stored from an AuditAction
        record.outcome,  # type: ignore[arg-type]  # stored from an AuditOutcome
        principal=_principal(who),
        entities=record.entities,
        patients=record.patients,
        query=query,
        source_ip=source_ip,
        user_agent=user_agent,
        description=description,
        break_glass=break_glass,
        recorded_ms=record.recorded,
    )
    return audit_event_bytes(entry, record.id, observer, site)


def entry_values(entry: AuditEntry) -> tuple[Any, ...]:
    """What a log row is made of, as plain values: (interaction, action, outcome, recorded ms,
    patients, entities, who, query, source IP, user agent, description, break-glass reason).
    Another process gets them as JSON (`entry_message`); `record_of` makes the row."""
    return (entry.interaction, entry.action, entry.outcome, entry.recorded_ms,
            entry.patients, entry.entities, *_said(entry))  # fmt: skip


def entry_message(entry: AuditEntry) -> bytes:
    """`entry` as compact JSON, for handing it to another process (`audit_process`)."""
    return orjson.dumps(entry_values(entry))


def record_of(values: Sequence[Any], observer: str, site: str | None) -> AuditRecord:
    """The unchained log row (`audit_chain.link` places it in the chain) of `entry_values`,
    or of their JSON round trip: the writer process builds rows without making entries."""
    interaction, action, outcome, recorded, patients, entities, who = values[:7]
    break_glass = values[11]
    agent = agent_name = None
    if who is not None:
        subject, _kind, _role, username, fhir_user, client_id, principal_glass = who[:7]
        agent_name = username or client_id
        agent = fhir_user or agent_name or subject
        break_glass = break_glass or principal_glass
    if len(patients) == 1 and len(entities) == 1 and entities[0] == "Patient/" + patients[0]:
        # a read of a Patient (most entries): nothing to merge or deduplicate
        patients, entities = tuple(patients), tuple(entities)
    else:
        patients = tuple(dict.fromkeys(patients))
        entities = tuple(dict.fromkeys([*(f"Patient/{p}" for p in patients), *entities]))
    # positional: keyword arguments cost more, and this runs for every entry written
    return AuditRecord(
        0, "", recorded, interaction, action,  # id: `audit_chain.link` names it after its seq
        outcome_code(interaction, outcome), agent, agent_name, patients, entities,
        bool(break_glass), orjson.dumps((DETAIL_VERSION, *values[6:], observer, site)), "", "",
    )  # fmt: skip


def pack_entries(
    entries: Sequence[Sequence[Any]], seq: int, prev_hash: str, observer: str, site: str | None
) -> PackedBlock:
    """The block of `entries` (`entry_values`, or their JSON round trip) chained onto the
    entry (`seq`, `prev_hash`): the rows `record_of` makes, linked (`audit_chain.link`) and
    packed as `audit_records.append` packs them, with their search keys
    (`audit_records.entry_keys`), all in one pass without making `AuditRecord`s - the
    trail's writer runs this for every entry, and the objects cost more than the hashing.
    A test holds it to the same bytes as the long way."""
    dumps = orjson.dumps
    parts: list[bytes] = []
    keys: dict[str, None] = {}
    times: list[int] = []
    first_seq, first_hash = seq + 1, prev_hash
    for values in entries:
        interaction, action, outcome, recorded, patients, entities, who = values[:7]
        break_glass = values[11]
        agent = agent_name = None
        if who is not None:
            agent_name = who[3] or who[5]  # username, client id
            agent = who[4] or agent_name or who[0]  # fhirUser, then those, then subject
            break_glass = break_glass or who[6]
            if agent is not None:
                keys["a:" + agent] = None
            if agent_name is not None:
                keys["a:" + agent_name] = None
        if len(patients) == 1 and len(entities) == 1 and entities[0] == "Patient/" + patients[0]:
            keys["p:" + patients[0]] = None  # a read of a Patient: its own reference is found
        else:  # through the patient key (`audit_records.indexed_entities`)
            patients = list(dict.fromkeys(patients))
            entities = list(dict.fromkeys([*(f"Patient/{p}" for p in patients), *entities]))
            own = {f"Patient/{p}" for p in patients}
            for p in patients:
                keys["p:" + p] = None
            for e in entities:
                if e not in own:
                    keys["e:" + e] = None
        seq += 1
        canonical = (
            dumps([entry_id(seq, id_suffix()), recorded, interaction, action,
                   outcome_code(interaction, outcome), agent, agent_name, patients, entities,
                   bool(break_glass)])
            + b"\n"
            + dumps((DETAIL_VERSION, *values[6:], observer, site))
        )  # fmt: skip
        prev_hash = chain_hash(prev_hash, seq, canonical)
        parts += frame(prev_hash, canonical)
        times.append(recorded)
    return PackedBlock(first_seq, seq, min(times), max(times), b"".join(parts), list(keys),
                       first_hash, prev_hash)  # fmt: skip
