"""Restrictions: which resources one caller may see, as SQL criteria added to every search.

The access policy (`auth.policy`) decides, per resource type, whether a caller may touch it
and how narrowly: only inside one Patient's compartment, only inside the compartments of the
Patients an Organization manages, only resources matching granular scope criteria (any of
several parameter sets), or all of them. This module turns that decision into `Criterion`s
that `build_search` ANDs into the query of every restricted search, chain, `_has` and
conditional match, so paging and totals count only what the caller may see.

Resource types outside the Patient compartment (Practitioner, Organization, Medication...)
are not narrowed by the compartment parts of a `Visibility`, only by its criteria.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from carebase.errors import Forbidden
from carebase.fhir.definitions.loader import get_definitions
from carebase.store.schema import param_key
from carebase.store.search_values import Condition

if TYPE_CHECKING:
    from carebase.store.search_sql import Criterion, SearchContext

#: One parameter set of a granular scope (`category=...`), as (name, value) pairs.
Params = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Visibility:
    """How far a caller sees into one resource type.

    `patient`: only resources in that Patient's compartment (the Patient itself by id).
    `organization`: only resources in the compartment of a Patient whose
    `managingOrganization` is that Organization (and those Patients).
    `criteria`: only resources matching one of these parameter sets (empty: no narrowing).
    `exclusive`: besides, the resource must not be in the compartment of any Patient outside
    the allowed ones (used for writes, so nobody files data into another patient's record).
    """

    patient: str | None = None
    organization: str | None = None
    criteria: tuple[Params, ...] = ()
    exclusive: bool = False

    @property
    def unrestricted(self) -> bool:
        """Whether this sees every resource of the type."""
        return self.patient is None and self.organization is None and not self.criteria


@dataclass(frozen=True, slots=True)
class Restriction:
    """The types a caller may touch for one permission, and how far (see `Visibility`).

    Types missing from `types` are not permitted at all.
    """

    types: Mapping[str, Visibility] = field(default_factory=dict)
    #: what the caller lacks, for the 403 of a chain or `_has` into a forbidden type
    describe: str = "scope for {type} resources"
    #: SQL the store built for this restriction, kept for its next request (a policy, and
    #: so its restrictions, lives as long as the token: reads then skip query building)
    memo: dict[object, object] = field(default_factory=dict, compare=False, repr=False)

    def of(self, type_: str) -> Visibility | None:
        """The visibility of `type_`, or None when the type is not permitted."""
        return self.types.get(type_)

    def require(self, type_: str, where: str) -> Visibility:
        """The visibility of `type_`; 403 naming `where` when the type is not permitted."""
        visibility = self.types.get(type_)
        if visibility is None:
            raise Forbidden(
                f"{where} reaches {type_} resources, and the access token has no "
                f"{self.describe.format(type=type_)}",
                location=where,
            )
        return visibility

    def exclusive(self) -> Restriction:
        """The same restriction, also refusing resources of other patients (for writes)."""
        types = {t: _exclusive(v) for t, v in self.types.items()}
        return Restriction(types, self.describe)


def _exclusive(visibility: Visibility) -> Visibility:
    return Visibility(
        visibility.patient, visibility.organization, visibility.criteria, exclusive=True
    )


def _patients_of(organization: str) -> Condition:
    """`SELECT id` of current Patients managed by `organization`."""
    sql = (
        "SELECT id FROM resource WHERE type = 'Patient' AND deleted = 0 AND rid IN ("
        "SELECT rid FROM idx_reference WHERE pkey = ? AND target_type = 'Organization'"
        " AND target_id = ?)"
    )
    return sql, [param_key("Patient", "organization"), organization]


def _allowed_patients(visibility: Visibility) -> Condition:
    """`target_id` condition naming the Patients whose compartments are visible."""
    if visibility.patient is not None:
        return "target_id = ?", [visibility.patient]
    assert visibility.organization is not None
    sql, args = _patients_of(visibility.organization)
    return f"target_id IN ({sql})", args


def compartment_criteria(ctx: SearchContext, type_: str, visibility: Visibility) -> list[Criterion]:
    """The compartment part of `visibility` for resources of `type_` (none outside the
    Patient compartment or when the visibility has no compartment)."""
    from carebase.store.search_sql import (
        RANK_EQUAL,
        RANK_NEGATED,
        Criterion,
        index_criterion,
        keyed,
    )

    if visibility.patient is None and visibility.organization is None:
        return []
    if type_ == "Patient":
        if visibility.patient is not None:
            return [Criterion(RANK_EQUAL, ("id = ?", [visibility.patient]))]
        managed = keyed(
            [param_key("Patient", "organization")],
            ("target_type = 'Organization' AND target_id = ?", [visibility.organization]),
        )
        return [index_criterion(ctx.dialect, RANK_EQUAL, "idx_reference", managed)]
    codes = get_definitions().patient_compartment.get(type_)
    if not codes:
        return []
    pkeys = [param_key(type_, code) for code in codes]
    allowed, args = _allowed_patients(visibility)
    inside = keyed(pkeys, (f"target_type = 'Patient' AND {allowed}", args))
    criteria = [index_criterion(ctx.dialect, RANK_EQUAL, "idx_reference", inside)]
    if visibility.exclusive:
        other = keyed(pkeys, (f"target_type = 'Patient' AND NOT ({allowed})", list(args)))
        sql, other_args = other
        criteria.append(
            Criterion(
                RANK_NEGATED,
                (
                    "NOT EXISTS (SELECT 1 FROM idx_reference x WHERE x.rid = resource.rid"
                    f" AND x.{sql})",
                    other_args,
                ),
                rid_only=True,
            )
        )
    return criteria


def restriction_criteria(ctx: SearchContext, type_: str, visibility: Visibility) -> list[Criterion]:
    """Every criterion `visibility` adds to a search of `type_` (ANDed by the caller)."""
    from carebase.store.search_sql import (
        RANK_WEAK,
        Criterion,
        conjunction,
        criterion,
        or_conditions,
    )

    criteria = compartment_criteria(ctx, type_, visibility)
    if not visibility.criteria:
        return criteria
    alternatives = [
        [criterion(ctx, type_, name, raw) for name, raw in params] for params in visibility.criteria
    ]
    if len(alternatives) == 1:
        return criteria + alternatives[0]
    either = or_conditions([(f"({s})", a) for s, a in map(conjunction, alternatives)])
    return [*criteria, Criterion(RANK_WEAK, either)]
