"""Access control for one FHIR request: the checks every interaction kind makes, in one place.

A `Guard` wraps the caller's `AccessPolicy` and is handed to every interaction through the
`Context`. Reads ask `read()` (403 without a scope, 404 when the resource is not the
caller's - the same answer as for a resource that does not exist); searches and history get
the store restrictions from `search()`/`history()`; writes call `before_change()` on the
stored version and `after_write()` on the new one inside the store transaction, so a
refused write rolls back with nothing written. The guard also collects what the request
touched (entities, patients) for its audit entry.
"""

from __future__ import annotations

from collections.abc import Iterable

from carebase.auth.compartment import patients_of
from carebase.auth.policy import AccessPolicy, policy_for
from carebase.auth.principal import DEVELOPMENT_PRINCIPAL, Principal
from carebase.errors import Forbidden, NotFound
from carebase.store.base import Store, StoredResource, Transaction
from carebase.store.search_include import is_include_parameter
from carebase.store.search_restriction import Restriction

#: Resources named in one audit entry, at most (a search page can hold a thousand).
MAX_ENTITIES = 100


class Guard:
    """The access checks and audit facts of one request made by `principal`."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.policy: AccessPolicy = policy_for(principal)
        #: the interaction code for the audit entry (set by bundles: transaction or batch)
        self.interaction: str | None = None
        self.entities: list[str] = []
        self.patients: dict[str, None] = {}
        self.query: str | None = None
        self.more_entities = 0

    @classmethod
    def unrestricted(cls) -> Guard:
        """A guard that allows everything (the development principal; tests and tools)."""
        return cls(DEVELOPMENT_PRINCIPAL)

    # --- audit facts --------------------------------------------------------------------------

    def saw(self, stored: StoredResource | None) -> None:
        """Note a resource the request read or wrote (for the audit entry)."""
        if stored is None:
            return
        if len(self.entities) < MAX_ENTITIES:
            self.entities.append(f"{stored.type}/{stored.id}")
        else:
            self.more_entities += 1
        for patient in patients_of(stored.type, stored.id, stored.body):
            self.patients[patient] = None

    def saw_all(self, resources: Iterable[StoredResource]) -> None:
        """Note every resource of a page."""
        for stored in resources:
            self.saw(stored)

    # --- reads --------------------------------------------------------------------------------

    def read(self, store: Store, type_: str, id_: str) -> None:
        """Before serving Type/id (read, vread, history-instance): 403 without a read scope
        for the type; 404 when the resource is not one the caller may see."""
        visibility = self.policy.require(type_, "r")
        if visibility.unrestricted:
            return
        if (
            type_ == "Patient"
            and id_ == visibility.patient
            and visibility.organization is None
            and not visibility.criteria
        ):
            return  # the patient's own record is in their compartment: no query needed
        restriction = self.policy.restriction("r")
        assert restriction is not None
        if not store.visible(type_, id_, restriction):
            raise NotFound(f"{type_}/{id_} is not known", location=f"{type_}/{id_}")

    def search(
        self, type_: str | None, params: list[tuple[str, str]]
    ) -> tuple[Restriction | None, Restriction | None]:
        """The (search, include) restrictions of a search; 403 for a searched, `_type`-listed
        or included type the token has no scope for."""
        if type_ is not None:
            self.policy.require(type_, "s")
        for name, value in params:
            if name == "_type":
                for listed in value.split(","):
                    if listed.strip():
                        self.policy.require(listed.strip(), "s")
            elif is_include_parameter(name):
                self._check_include(name, value)
        return self.policy.restriction("s"), self.policy.restriction("r")

    def _check_include(self, name: str, value: str) -> None:
        """`_revinclude=Source:...` needs a read scope on Source, `_include=...:Target` on
        Target; other included types are dropped unless readable (by the store)."""
        parts = value.split(":")
        if name.startswith("_revinclude") and parts[0]:
            self.policy.require(parts[0], "r")
        elif len(parts) == 3 and parts[2]:
            self.policy.require(parts[2], "r")

    def history(self, store: Store, type_: str | None, id_: str | None) -> Restriction | None:
        """The restriction of a history: one visible resource (instance), or the versions
        of the resources the caller may search (type, system)."""
        if id_ is not None:
            assert type_ is not None
            self.read(store, type_, id_)
            return None
        if type_ is not None:
            self.policy.require(type_, "s")
        return self.policy.restriction("s")

    # --- writes -------------------------------------------------------------------------------

    def conditional(self, type_: str) -> Restriction | None:
        """The restriction conditional criteria are evaluated under (403 without search)."""
        self.policy.require(type_, "s")
        return self.policy.restriction("s")

    def before_change(
        self, tx: Transaction, type_: str, id_: str, letter: str, *, missing_is_404: bool = False
    ) -> None:
        """Before updating, patching or deleting Type/id: 403 without the scope; a stored
        resource the caller may not see is refused (404 for patch, whose answer for a
        missing resource is 404 too; else 403)."""
        visibility = self.policy.require(type_, letter)
        if visibility.unrestricted:
            return
        current = tx.read(type_, id_)
        if current is None or current.deleted:
            return
        restriction = self.policy.restriction(letter)
        assert restriction is not None
        if tx.search_ids(type_, [("_id", id_)], limit=1, restriction=restriction):
            return
        if missing_is_404:
            raise NotFound(f"{type_}/{id_} does not exist")
        raise Forbidden(
            f"{type_}/{id_} is outside what this access token may {_VERB[letter]}",
            location=f"{type_}/{id_}",
        )

    def require_write(self, type_: str, letter: str) -> None:
        """403 unless a scope grants `letter` (c, u) on `type_`."""
        self.policy.require(type_, letter)

    def after_write(self, tx: Transaction, stored: StoredResource, letter: str) -> None:
        """After writing (inside the transaction): the new version must be one the caller may
        see and not in another patient's compartment, else 403 (the transaction rolls back)."""
        self.policy.check_written(tx, stored, letter)
        self.saw(stored)

    def validate(self, type_: str) -> None:
        """`$validate` reads nothing but its body: any scope for the type will do."""
        if not self.policy.may_touch(type_):
            raise Forbidden(
                f"The access token has no scope for {type_} resources; $validate needs one "
                f"(e.g. {self.policy.missing_scope(type_, 'r')})",
                location=type_,
            )


_VERB = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
