"""Access checks and audit entries for telehealth, on the same policy as the FHIR API.

`Caller` applies `auth.policy` to the resources telehealth reads and writes: a scope for the
type and letter, and (for writes) the written version must be one the caller may see and not
in another patient's compartment, checked inside the store transaction so a refused write
rolls back. Every telehealth access is recorded through `record()` on the app's audit trail.
"""

from __future__ import annotations

from collections.abc import Iterable

from carebase.auth.audit_entry import AuditAction, AuditEntry, AuditOutcome, AuditTrail
from carebase.auth.compartment import patients_of
from carebase.auth.policy import AccessPolicy, policy_for
from carebase.auth.principal import Principal
from carebase.errors import NotFound
from carebase.store.base import Store, StoredResource, Transaction

#: Roles that run a visit (join as clinician, admit, decline, invite guests).
CLINICAL_ROLES = frozenset({"clinician", "nurse", "admin"})


class Caller:
    """One principal's checks, and what it touched (for the audit entry)."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.policy: AccessPolicy = policy_for(principal)
        self.entities: dict[str, None] = {}
        self.patients: dict[str, None] = {}

    @property
    def role(self) -> str | None:
        """The caller's role (`development` callers count as admin)."""
        return "admin" if self.principal.is_development else self.principal.role

    def saw(self, stored: StoredResource) -> None:
        """Note a resource read or written, for the audit entry."""
        self.entities[f"{stored.type}/{stored.id}"] = None
        for patient in patients_of(stored.type, stored.id, stored.body):
            self.patients[patient] = None

    def require(self, type_: str, letter: str) -> None:
        """403 unless a scope grants `letter` on `type_`."""
        self.policy.require(type_, letter)

    def read(self, store: Store | Transaction, type_: str, id_: str) -> StoredResource:
        """The current Type/id if the caller may read it; 404 (as for a missing one) else."""
        visibility = self.policy.require(type_, "r")
        stored = store.read(type_, id_)
        if stored is None or stored.deleted or stored.body is None:
            raise NotFound(f"{type_}/{id_} is not known", location=f"{type_}/{id_}")
        if not visibility.unrestricted:
            restriction = self.policy.restriction("r")
            assert restriction is not None
            if isinstance(store, Transaction):
                found = store.search_ids(type_, [("_id", id_)], limit=1, restriction=restriction)
                visible = bool(found)
            else:
                visible = store.visible(type_, id_, restriction)
            if not visible:
                raise NotFound(f"{type_}/{id_} is not known", location=f"{type_}/{id_}")
        self.saw(stored)
        return stored

    def written(self, tx: Transaction, stored: StoredResource, letter: str) -> None:
        """After writing (inside the transaction): 403 unless the new version is one the
        caller may see and outside other patients' records (the transaction rolls back)."""
        self.policy.check_written(tx, stored, letter)
        self.saw(stored)


def record(
    trail: AuditTrail,
    principal: Principal | None,
    interaction: str,
    action: AuditAction,
    *,
    outcome: AuditOutcome = "0",
    entities: Iterable[str] = (),
    patients: Iterable[str] = (),
    description: str,
    source_ip: str | None = None,
    query: str | None = None,
) -> None:
    """Record one telehealth access on `trail` (raises `Unavailable` when it cannot)."""
    trail.record(
        AuditEntry(
            interaction=interaction,
            action=action,
            outcome=outcome,
            principal=principal,
            entities=tuple(entities)[:100],
            patients=tuple(patients),
            query=query,
            source_ip=source_ip,
            description=description[:1000],
        )
    )
