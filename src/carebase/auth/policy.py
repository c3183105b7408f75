"""The access policy: what one caller may do to which resources, deny by default.

Pure: a `Principal` in, decisions out (`Visibility`/`Restriction` values the store turns into
SQL). The API asks `require(type, letter)` before an interaction and passes
`restriction(letter)` to the store, so every search, chain, include and conditional match
sees only what the caller may see.

Permission letters per interaction (SMART v2): read, vread, history-instance: r; search,
history-type, history-system: s; create: c; update, patch: u; delete: d. Conditional
interactions also need s. Transaction and batch entries are checked one by one.

Contexts (the broadest granting scope decides):
- `system/`: every resource of the type.
- `user/`: admins and users without an organization see everything; other users with an
  organization (clinicians, nurses, front desk) see only Patients that organization manages
  and resources in those patients' compartments, unless a clinician or nurse breaks the
  glass for this request (`Principal.break_glass`).
- `patient/`: only the launch-context patient's compartment (the Patient itself by id);
  types outside the Patient compartment (Practitioner, Organization...) are not narrowed.
Granular scopes (`?category=...`) narrow further: a resource must match one of them.
Scopes are first cut to the role's ceiling (`roles.permitted_scopes`): a token never grants
more than its user's role allows.
"""

from __future__ import annotations

from carebase.auth.compartment import in_compartment
from carebase.auth.principal import Principal, per_principal
from carebase.auth.roles import permitted_scopes
from carebase.auth.scopes import CONTEXT_BREADTH, ScopeError, ScopeGrant, ScopeSet
from carebase.errors import Forbidden
from carebase.fhir.definitions.loader import get_definitions
from carebase.store.base import StoredResource, Transaction
from carebase.store.search_restriction import Restriction, Visibility

#: The permission letter each FHIR interaction needs.
INTERACTION_PERMISSION: dict[str, str] = {
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "search-type": "s",
    "search-system": "s",
    "search-compartment": "s",
    "history-type": "s",
    "history-system": "s",
    "create": "c",
    "update": "u",
    "patch": "u",
    "delete": "d",
}
#: Roles that may break the glass (open a record outside their organisation, with a reason).
BREAK_GLASS_ROLES = frozenset({"clinician", "nurse"})
#: Roles whose `user/` scopes are never narrowed to an organisation.
UNRESTRICTED_ROLES = frozenset({"admin"})
#: Why a write was refused although the scope allows the type.
WRITE_RESTRICTION = (
    "a patient-context token writes only inside its patient's compartment, and a user "
    "restricted to an organization only for that organization's patients"
)
_VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


def permissions_for(interaction: str, *, conditional: bool = False) -> str:
    """The letters an interaction needs (`conditional` ones need search too)."""
    letter = INTERACTION_PERMISSION[interaction]
    return letter + "s" if conditional and letter != "s" else letter


class AccessPolicy:
    """The decisions for one principal (build with `policy_for`, which caches them)."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.all_powerful = principal.is_development
        try:
            granted = permitted_scopes(principal.role, principal.scopes)
        except ScopeError:  # a malformed scope in a token we signed: grant nothing
            granted = []
        self.scopes = ScopeSet(granted)
        self._restrictions: dict[str, Restriction | None] = {}
        self._visibilities: dict[tuple[str, str], Visibility | None] = {}

    # --- per type ---------------------------------------------------------------------------

    def visibility(self, type_: str, letter: str) -> Visibility | None:
        """How far the caller sees into `type_` for `letter`; None when no scope grants it.

        Raises Forbidden for a `patient/` grant without a patient in the launch context.
        """
        key = (type_, letter)
        if key in self._visibilities:  # the read hot path asks this once per request
            return self._visibilities[key]
        if self.all_powerful:
            visibility: Visibility | None = Visibility()
        else:
            grant = self.scopes.grant(type_, letter)
            visibility = None if grant is None else self._visibility(type_, grant)
        self._visibilities[key] = visibility
        return visibility

    def _visibility(self, type_: str, grant: ScopeGrant) -> Visibility:
        principal = self.principal
        criteria = grant.filters
        if grant.context == "system" or not in_compartment(type_):
            if grant.context == "patient" and principal.patient is None:
                raise _no_patient()
            return Visibility(criteria=criteria)
        if grant.context == "patient":
            if principal.patient is None:
                raise _no_patient()
            return Visibility(patient=principal.patient, criteria=criteria)
        if principal.organization is None or principal.role in UNRESTRICTED_ROLES:
            return Visibility(criteria=criteria)
        if principal.break_glass and principal.role in BREAK_GLASS_ROLES:
            return Visibility(criteria=criteria)
        return Visibility(organization=principal.organization, criteria=criteria)

    def require(self, type_: str, letter: str) -> Visibility:
        """The visibility for `letter` on `type_`; 403 naming the missing scope."""
        visibility = self.visibility(type_, letter)
        if visibility is None:
            raise Forbidden(
                f"The access token has no scope to {_VERBS[letter]} {type_} resources; it "
                f"needs {self.missing_scope(type_, letter)} (or a broader scope)",
                location=type_,
            )
        return visibility

    def check_written(self, tx: Transaction, stored: StoredResource, letter: str) -> None:
        """After writing `stored` (inside its transaction): 403 unless the new version is
        one the caller may see and in no other patient's compartment (the transaction then
        rolls back, so nothing is written)."""
        visibility = self.require(stored.type, letter)
        if visibility.unrestricted:
            return
        restriction = self.restriction(letter)
        assert restriction is not None
        params = [("_id", stored.id)]
        if not tx.search_ids(stored.type, params, limit=1, restriction=restriction.exclusive()):
            raise Forbidden(
                f"{stored.type}/{stored.id} would be outside what this access token may "
                f"{_VERBS[letter]}: {WRITE_RESTRICTION}",
                location=stored.type,
            )

    def may_touch(self, type_: str) -> bool:
        """Whether any scope grants anything on `type_` (for `$validate`)."""
        return self.all_powerful or any(s.type in ("*", type_) for s in self.scopes.resource_scopes)

    def missing_scope(self, type_: str, letter: str) -> str:
        """The scope that would grant `letter` on `type_`, in the token's own context."""
        contexts = self.scopes.contexts() or {"user"}
        context = min(contexts, key=lambda c: CONTEXT_BREADTH[c])
        return f"{context}/{type_}.{letter}"

    # --- all types --------------------------------------------------------------------------

    def restriction(self, letter: str) -> Restriction | None:
        """What the caller may touch with `letter`, over all types; None when it may touch
        every resource of every type (no narrowing at all: the fast path)."""
        if letter not in self._restrictions:
            self._restrictions[letter] = self._build(letter)
        return self._restrictions[letter]

    def _build(self, letter: str) -> Restriction | None:
        if self.all_powerful:
            return None
        types: dict[str, Visibility] = {}
        for type_ in get_definitions().resource_types:
            try:
                visibility = self.visibility(type_, letter)
            except Forbidden:
                visibility = None
            if visibility is not None:
                types[type_] = visibility
        complete = len(types) == len(get_definitions().resource_types)
        if complete and all(v.unrestricted for v in types.values()):
            return None
        verb = _VERBS[letter]
        return Restriction(types, f"scope to {verb} {{type}} resources")


def _no_patient() -> Forbidden:
    return Forbidden(
        "The access token has patient/ scopes but no patient in its launch context; "
        "authorize again with launch/patient (or an EHR launch) to pick the patient"
    )


def _policy(principal: Principal) -> AccessPolicy:
    """The (cached) policy of a principal: its scope decisions are computed once per token."""
    return AccessPolicy(principal)


policy_for = per_principal(_policy)
