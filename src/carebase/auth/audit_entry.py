"""What the audit trail records about one access, and the trail's interface.

API handlers, the OAuth endpoints and the CLI describe each access as an `AuditEntry`;
an `AuditTrail` turns entries into hash-chained FHIR AuditEvents and stores them durably.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from carebase.auth.principal import Principal
from carebase.store.clock import ms_to_datetime, now_ms

#: AuditEvent.action: Create, Read (also vread, search results), Update, Delete, Execute.
AuditAction = Literal["C", "R", "U", "D", "E"]
#: AuditEvent.outcome: success, minor failure (e.g. denied), serious failure, major failure.
AuditOutcome = Literal["0", "4", "8", "12"]


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which made
# building one, on every request, cost several microseconds. Treat entries as read-only.
@dataclass(slots=True)
class AuditEntry:
    """One access to record.

    `interaction` is the FHIR restful-interaction code (read, vread, search-type, create,
    update, patch, delete, history-instance, transaction, batch, operation) or, for security
    events, login / logout / token / failed-auth / break-glass. `entities` are the resources
    touched ("Observation/1"); `patients` the Patient ids whose data was touched (for
    `AuditEvent?patient=`). `query` is the search or operation query string, if any.
    `recorded_ms` is when, in epoch milliseconds (`recorded` gives it as a UTC datetime).
    """

    interaction: str
    action: AuditAction
    outcome: AuditOutcome = "0"
    principal: Principal | None = None
    entities: tuple[str, ...] = ()
    patients: tuple[str, ...] = ()
    query: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    description: str | None = None
    break_glass: str | None = None
    recorded_ms: int = field(default_factory=now_ms)

    @property
    def recorded(self) -> datetime:
        """When the access was recorded (UTC)."""
        return ms_to_datetime(self.recorded_ms)


class AuditTrail(ABC):
    """Where audit entries go: durable, append-only, hash-chained (see `auth.audit_log`)."""

    @abstractmethod
    def record(self, entry: AuditEntry) -> None:
        """Accept `entry` for durable storage without waiting for the disk.

        Raises `errors.Unavailable` when the trail cannot store entries (then no patient
        data may be served: the caller answers 503 instead).
        """

    def flush(self) -> None:  # noqa: B027 - trails that buffer override it
        """Write every accepted entry durably before returning."""

    def close(self) -> None:  # noqa: B027 - trails that hold resources override it
        """Flush and release what the trail holds (clean shutdown loses nothing)."""


class MemoryAuditTrail(AuditTrail):
    """The test double: keeps entries in a list (tests assert on `entries`)."""

    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    def record(self, entry: AuditEntry) -> None:
        self.entries.append(entry)
