"""Validates a parsed FHIR R4 JSON resource (dicts/lists from orjson) against the definitions.

Checked: resourceType; unknown elements (including wrong choice suffixes); the JSON type of
every value (arrays exactly where the element repeats); cardinality; choice types; primitive
formats; primitive extensions (`_birthDate`) and null alignment; empty values; required
bindings on code/Coding/CodeableConcept (Codings only when their system is the bound one);
Reference.reference format, local `#id` targets and allowed target types; contained resources;
extensions (url plus a value or nested extensions, not both); narrative XHTML.

Not checked: invariants beyond those above, profiles, terminology outside the core package.
Locations are FHIRPath-like with indexes (`Patient.name[0].given[1]`).
"""

from __future__ import annotations

import functools
import re

from carebase.errors import InvalidResource, Issue
from carebase.fhir.definitions.loader import get_definitions
from carebase.fhir.primitives import check_oid, check_uuid
from carebase.fhir.validation_schema import (
    COMPLEX,
    PRIMITIVE,
    SPECIAL_CODED,
    SPECIAL_EXTENSION,
    SPECIAL_REFERENCE,
    FieldSpec,
    Schema,
    TypeTable,
)

_RELATIVE_REF = re.compile(
    r"([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?"
)
_NO_IDS: frozenset[str] = frozenset()


@functools.cache
def _schema() -> Schema:
    return Schema(get_definitions())


def validate_resource(resource: object, *, expected_type: str | None = None) -> list[Issue]:
    """Every problem found in `resource` (empty when valid), each with its location."""
    walker = _Walker(_schema())
    if type(resource) is not dict:
        walker.error("structure", "", "a resource must be a JSON object")
        return walker.issues
    try:
        walker.resource(resource, None, expected_type=expected_type)
    except RecursionError:
        # Only absurdly deep nesting (extensions within extensions...) gets here.
        walker.error("too-costly", "", "the resource is nested too deeply to validate")
    return walker.issues


def check_resource(resource: object, *, expected_type: str | None = None) -> None:
    """Raise InvalidResource listing every issue if `resource` has any error."""
    issues = validate_resource(resource, expected_type=expected_type)
    if any(issue.severity in ("error", "fatal") for issue in issues):
        raise InvalidResource(issues=issues)


def _show(value: object) -> str:
    text = repr(value) if isinstance(value, str | int | float | bool) else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


class _Walker:
    """One validation run: walks the JSON tree and collects issues."""

    __slots__ = ("contained_ids", "issues", "schema", "types")

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.types = schema.definitions.resource_types
        self.issues: list[Issue] = []
        self.contained_ids: frozenset[str] = _NO_IDS

    def error(self, code: str, location: str, message: str) -> None:
        text = f"{location}: {message}" if location else message
        self.issues.append(Issue("error", code, text, [location] if location else []))

    # ------------------------------------------------------------------ resources

    def resource(
        self,
        res: dict[str, object],
        location: str | None,
        *,
        expected_type: str | None = None,
        contained: bool = False,
    ) -> None:
        rtype = res.get("resourceType")
        where = location or ""
        if rtype is None:
            self.error("required", where, "resourceType is missing")
            return
        if type(rtype) is not str or rtype not in self.types:
            self.error("invalid", where, f"unknown resourceType {_show(rtype)}")
            return
        if expected_type is not None and rtype != expected_type:
            self.error("invalid", where, f"resourceType is {rtype!r}, expected {expected_type!r}")
            return
        table = self.schema.table(rtype)
        assert table is not None
        saved = self.contained_ids
        if not contained:
            # `#id` references resolve against this resource's own contained list.
            items = res.get("contained")
            self.contained_ids = (
                frozenset(c["id"] for c in items if type(c) is dict and type(c.get("id")) is str)
                if type(items) is list
                else _NO_IDS
            )
        self.walk_object(res, table, location or rtype)
        if contained:
            self.contained_rules(res, location or rtype)
        self.contained_ids = saved

    def contained_rules(self, res: dict[str, object], location: str) -> None:
        if "contained" in res:
            self.error("invariant", location, "a contained resource must not contain resources")
        meta = res.get("meta")
        if type(meta) is dict:
            for key in ("versionId", "lastUpdated"):
                if key in meta:
                    self.error(
                        "invariant",
                        f"{location}.meta.{key}",
                        f"a contained resource must not have meta.{key}",
                    )

    # ------------------------------------------------------------------ objects

    def walk_object(self, obj: dict[str, object], table: TypeTable, location: str) -> None:
        # The hot loop of validation: valid values take the shortest path, anything unusual
        # (errors, nulls, primitive extensions) goes to `item`/`array` which say what is wrong.
        fields = table.fields
        groups: dict[str, str] | None = None
        for key, value in obj.items():
            spec = fields.get(key)
            if spec is None:
                groups = self.unknown_key(key, value, obj, table, location, groups)
                continue
            if spec.group is not None:
                groups = self.choice(spec, key, groups, location)
            if spec.array:
                self.array(value, spec, obj, location, key)
            elif spec.kind == PRIMITIVE:
                if spec.check(value) is not None or (
                    spec.binding is not None and value not in spec.binding
                ):
                    self.item(value, spec, location, key, -1)
            elif spec.kind == COMPLEX and type(value) is dict and value:
                where = f"{location}.{key}"
                self.walk_object(value, spec.table, where)  # type: ignore[arg-type]
                if spec.special:
                    self.special(value, spec, where)
            else:
                self.item(value, spec, location, key, -1)
        for spec in table.required:
            if spec.key not in obj and (spec.kind != PRIMITIVE or "_" + spec.key not in obj):
                self.error("required", f"{location}.{spec.key}", "is required but missing")
        for group in table.required_groups:
            if groups is None or group not in groups:
                expected = ", ".join(table.choice_groups[group])
                self.error("required", f"{location}.{group}[x]", f"is required (one of {expected})")

    def choice(
        self, spec: FieldSpec, key: str, groups: dict[str, str] | None, location: str
    ) -> dict[str, str]:
        """Record which variant of a choice element is used; two variants is an error."""
        group = spec.group
        assert group is not None
        if groups is None:
            return {group: key}
        seen = groups.setdefault(group, key)
        if seen != key:
            self.error(
                "structure", f"{location}.{key}", f"only one of {group}[x] is allowed, found {seen}"
            )
        return groups

    def array(
        self, value: object, spec: FieldSpec, obj: dict[str, object], location: str, key: str
    ) -> None:
        if type(value) is not list:
            self.error("structure", f"{location}.{key}", "must be a JSON array")
            return
        if not value:
            self.error("structure", f"{location}.{key}", "empty arrays are not allowed")
            return
        if spec.max_n is not None and len(value) > spec.max_n:
            self.error("structure", f"{location}.{key}", f"at most {spec.max_n} items allowed")
        if spec.kind == PRIMITIVE:
            check = spec.check
            binding = spec.binding
            for index, item in enumerate(value):
                if check(item) is None and (binding is None or item in binding):
                    continue
                if item is None:
                    extras = obj.get("_" + key)
                    if type(extras) is list and index < len(extras) and extras[index]:
                        continue  # value-less primitive carried only by `_key[index]`
                self.item(item, spec, location, key, index)
            return
        table = spec.table
        for index, item in enumerate(value):
            if spec.kind == COMPLEX and type(item) is dict and item:
                where = f"{location}.{key}[{index}]"
                self.walk_object(item, table, where)  # type: ignore[arg-type]
                if spec.special:
                    self.special(item, spec, where)
            else:
                self.item(item, spec, location, key, index)

    def item(self, value: object, spec: FieldSpec, location: str, key: str, index: int) -> None:
        """One value of an element, on the slow path: reports whatever is wrong with it."""
        where = f"{location}.{key}" if index < 0 else f"{location}.{key}[{index}]"
        if value is None:
            self.error("structure", where, "null is not allowed here")
            return
        if type(value) is list and index < 0:
            self.error("structure", where, "must be a single value, not an array")
            return
        kind = spec.kind
        if kind == PRIMITIVE:
            problem = spec.check(value)
            if problem is not None:
                self.error("value", where, f"{_show(value)} {problem}")
            elif spec.binding is not None and value not in spec.binding:
                self.error("code-invalid", where, f"{_show(value)} {self.not_in_set(spec)}")
            return
        if type(value) is not dict:
            expected = "a JSON object" if kind == COMPLEX else "a resource (JSON object)"
            self.error("structure", where, f"{_show(value)} is not {expected} ({spec.type})")
            return
        if not value:
            self.error("structure", where, "empty objects are not allowed")
            return
        if kind != COMPLEX:
            self.resource(value, where, contained=key == "contained")
            return
        self.walk_object(value, spec.table, where)  # type: ignore[arg-type]
        if spec.special:
            self.special(value, spec, where)

    def special(self, value: dict[str, object], spec: FieldSpec, where: str) -> None:
        """Rules of particular data types beyond their structure."""
        special = spec.special
        if special == SPECIAL_REFERENCE:
            self.reference(value, spec, where)
        elif special == SPECIAL_EXTENSION:
            self.extension(value, where)
        elif special == SPECIAL_CODED:
            self.coded(value, spec, where)

    def unknown_key(
        self,
        key: str,
        value: object,
        obj: dict[str, object],
        table: TypeTable,
        location: str,
        groups: dict[str, str] | None,
    ) -> dict[str, str] | None:
        """Handle a key without a field: `resourceType`, `_primitive`, or an error."""
        if key == "resourceType" and table.is_resource:
            return groups
        spec = table.fields.get(key[1:]) if key.startswith("_") else None
        if spec is not None and spec.kind == PRIMITIVE:
            if spec.group is not None:
                groups = groups or {}
                if groups.setdefault(spec.group, key[1:]) != key[1:]:
                    self.error("structure", f"{location}.{key}", f"only one of {spec.group}[x]")
            self.primitive_extension(value, obj.get(key[1:]), spec, location)
            return groups
        hint = "is not a known element"
        for group, keys in table.choice_groups.items():
            if key.startswith(group) and key[len(group) : len(group) + 1].isupper():
                hint = f"is not an allowed type for {group}[x] (expected one of {', '.join(keys)})"
                break
        self.error("structure", f"{location}.{key}", f"{hint} of {table.name}")
        return groups

    def primitive_extension(
        self, extra: object, value: object, spec: FieldSpec, location: str
    ) -> None:
        """`_key`: the id/extension of a primitive; an array aligned with the value array."""
        element = self.schema.table("Element")
        assert element is not None
        where = f"{location}._{spec.key}"
        if not spec.array:
            if type(extra) is not dict or not extra:
                self.error("structure", where, "must be a non-empty JSON object (id/extension)")
            else:
                self.walk_object(extra, element, f"{location}.{spec.key}")
            return
        if type(extra) is not list or not extra:
            self.error("structure", where, "must be a non-empty JSON array aligned with the values")
            return
        if type(value) is list and len(value) != len(extra):
            self.error(
                "structure", where, f"has {len(extra)} items but {spec.key} has {len(value)}"
            )
        for index, item in enumerate(extra):
            if item is None:
                if type(value) is not list or index >= len(value) or value[index] is None:
                    self.error("structure", f"{where}[{index}]", "null without a value")
            elif type(item) is not dict or not item:
                self.error("structure", f"{where}[{index}]", "must be a non-empty object or null")
            else:
                self.walk_object(item, element, f"{location}.{spec.key}[{index}]")

    # ------------------------------------------------------------------ data type rules

    def reference(self, value: dict[str, object], spec: FieldSpec, where: str) -> None:
        ref = value.get("reference")
        if type(ref) is not str or not ref:
            return  # type/emptiness already reported by the primitive check
        if ref[0] == "#":
            if len(ref) > 1 and ref[1:] not in self.contained_ids:
                self.error(
                    "invalid", f"{where}.reference", f"{ref!r}: no contained resource has this id"
                )
            return
        if ":" in ref:
            problem = None
            if ref.startswith("urn:uuid:"):
                problem = check_uuid(ref)
            elif ref.startswith("urn:oid:"):
                problem = check_oid(ref)
            elif any(ch.isspace() for ch in ref):
                problem = "is not a valid URL (whitespace is not allowed)"
            if problem:
                self.error("value", f"{where}.reference", f"{ref!r} {problem}")
            return
        match = _RELATIVE_REF.fullmatch(ref)
        if match is not None:
            target = match.group(1)
        elif "?" in ref:  # conditional reference, resolved by the server in transactions
            target = ref.partition("?")[0]
        else:
            self.error(
                "value",
                f"{where}.reference",
                f"{ref!r} is not a valid reference (expected Type/id, Type/id/_history/version, "
                "an absolute URL, urn:uuid:..., or #id for a contained resource)",
            )
            return
        if target not in self.types:
            self.error("value", f"{where}.reference", f"{ref!r}: {target} is not a resource type")
        elif spec.targets and target not in spec.targets:
            allowed = ", ".join(sorted(spec.targets))
            self.error(
                "invalid",
                f"{where}.reference",
                f"{ref!r}: a reference to {target} is not allowed here (expected {allowed})",
            )

    def extension(self, value: dict[str, object], where: str) -> None:
        has_value = False
        for key in value:
            if key.startswith("value") or key.startswith("_value"):
                has_value = True
                break
        if has_value == ("extension" in value):
            self.error(
                "invariant",
                where,
                "an extension must have either a value[x] or nested extensions, not both"
                if has_value
                else "an extension must have a value[x] or nested extensions",
            )

    def coded(self, value: dict[str, object], spec: FieldSpec, where: str) -> None:
        """Required binding on Coding/CodeableConcept: only codings of the bound system."""
        if spec.type == "Coding":
            codings: list[tuple[str, object]] = [(where, value)]
        else:
            items = value.get("coding")
            if type(items) is not list:
                return
            codings = [(f"{where}.coding[{i}]", c) for i, c in enumerate(items)]
        assert spec.binding is not None
        for coding_where, coding in codings:
            if type(coding) is not dict or coding.get("system") not in spec.binding_systems:
                continue
            code = coding.get("code")
            if type(code) is str and code not in spec.binding:
                self.error(
                    "code-invalid", f"{coding_where}.code", f"{code!r} {self.not_in_set(spec)}"
                )

    @staticmethod
    def not_in_set(spec: FieldSpec) -> str:
        codes = sorted(spec.binding or ())
        listed = ", ".join(codes[:12]) + (", ..." if len(codes) > 12 else "")
        return f"is not in the required value set (expected one of: {listed})"
