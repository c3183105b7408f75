"""Compiles FHIRPath trees into SQL over JSON items, for any Dialect (DuckDB, Spark).

Every expression becomes a SQL list of items (a FHIRPath collection); boolean-valued nodes
also compile straight to a three-valued SQL BOOLEAN (NULL = empty) so `where` and logic do
not round-trip through lists. Semantics follow the Python runner (fhirpath_compile and
friends); comments mark where SQL gives a narrower answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import count

from carebase.analytics import fhirpath_values as fv
from carebase.analytics.fhirpath_ast import (
    Binary,
    Expr,
    FunctionCall,
    Index,
    Literal,
    Member,
    This,
    TypeSpecifier,
    TypeTest,
    Unary,
    Variable,
)
from carebase.analytics.sql_dialect import Dialect, substitute
from carebase.analytics.sql_scalar import (
    FROM_RESOURCE,
    Step,
    context_of,
    member_keys,
    member_steps,
    root_path,
    single_element,
)
from carebase.analytics.view_errors import ViewDefinitionError
from carebase.analytics.view_model import Constant
from carebase.fhir.element_nav import Context

#: value[x] type suffixes of R4 (a bare `value` reads whichever of these keys is present)
CHOICE_TYPES = tuple(
    [
        "Boolean",
        "Integer",
        "Decimal",
        "String",
        "Code",
        "Date",
        "DateTime",
        "Instant",
        "Time",
        "Uri",
        "Url",
        "Canonical",
        "Id",
        "Oid",
        "Uuid",
        "Markdown",
        "Base64Binary",
        "PositiveInt",
        "UnsignedInt",
        "Quantity",
        "CodeableConcept",
        "Coding",
        "Range",
        "Period",
        "Ratio",
        "Reference",
        "Attachment",
        "Identifier",
        "HumanName",
        "Address",
        "ContactPoint",
        "Timing",
        "Signature",
        "Annotation",
        "SampledData",
        "Age",
        "Count",
        "Distance",
        "Duration",
        "Money",
        "Meta",
        "Dosage",
        "ContactDetail",
        "Contributor",
        "DataRequirement",
        "Expression",
        "ParameterDefinition",
        "RelatedArtifact",
        "TriggerDefinition",
        "UsageContext",
    ]
)
_BOOLEAN_FUNCTIONS = frozenset({"exists", "empty", "not", "is", "hasValue"})
_BOOLEAN_OPERATORS = frozenset(
    {"=", "!=", "~", "!~", "<", "<=", ">", ">=", "and", "or", "xor", "implies", "in", "contains"}
)
_REFERENCE_PATTERN = r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$"


def is_boolean(expr: Expr) -> bool:
    """Whether `expr` always gives an empty or one-boolean collection."""
    if isinstance(expr, Binary):
        return expr.op in _BOOLEAN_OPERATORS
    if isinstance(expr, FunctionCall):
        return expr.name in _BOOLEAN_FUNCTIONS
    if isinstance(expr, TypeTest):
        return expr.op == "is"
    return isinstance(expr, Literal) and expr.type == "boolean"


class ElementGroup:
    """The elements a forEach iterates over, each read as a record of the member chains its
    columns read from it (`Step`s from the element), pre-extracted with the resource's
    fields: a column then reads a record member instead of parsing the element's JSON."""

    def __init__(self, steps: tuple[Step, ...], column: str) -> None:
        self.steps = steps  # from the resource to the elements
        self.column = column  # the list of records, a column of the source relation
        self.members: dict[tuple[Step, ...], str] = {}


class ElementScope:
    """The forEach element `$this` is: record `var` of `group`."""

    def __init__(self, group: ElementGroup, var: str) -> None:
        self.group, self.var = group, var

    def member(self, d: Dialect, steps: tuple[Step, ...]) -> str:
        """SQL list: the items of member chain `steps` from the element."""
        name = self.group.members.setdefault(steps, f"m{len(self.group.members)}")
        return d.struct_get(self.var, name)


@dataclass(frozen=True, slots=True)
class _Registered:
    """The fields, lists and element groups a compiler has registered (`SqlCompiler.state`)."""

    fields: dict[tuple[str, ...], str]
    lists: dict[tuple[Step, ...], str]
    groups: dict[tuple[Step, ...], ElementGroup]
    members: dict[tuple[Step, ...], dict[tuple[Step, ...], str]]


class Scope:
    """What `$this`, `%rowIndex` and `%resource` are where an expression is compiled, and
    the definitions context of `$this` items when known; `element` when `$this` is a forEach
    element read as a record of pre-extracted members (its JSON is then not at hand)."""

    def __init__(
        self,
        focus: str,
        row_index: str,
        resource: str,
        context: Context | None = None,
        element: ElementScope | None = None,
    ) -> None:
        self.focus = focus  # SQL list of items
        self.row_index = row_index  # SQL integer
        self.resource = resource  # SQL item
        self.context = context
        self.element = element

    def with_focus(self, focus: str, context: Context | None = None) -> Scope:
        return Scope(focus, self.row_index, self.resource, context)


class SqlCompiler:
    """FHIRPath -> SQL for one view: `constants` by name, fresh lambda variables per use."""

    def __init__(
        self, dialect: Dialect, constants: tuple[Constant, ...], resource_type: str = ""
    ) -> None:
        self.d = dialect
        self.constants: Mapping[str, Constant] = {c.name: c for c in constants}
        self.resource_type = resource_type
        #: JSON key paths read once per resource, by the column name the query gives them
        self.fields: dict[tuple[str, ...], str] = {}
        #: member chains through repeating elements read once per resource as lists
        self.lists: dict[tuple[Step, ...], str] = {}
        #: forEach elements read once per resource as lists of records
        self.groups: dict[tuple[Step, ...], ElementGroup] = {}
        self._names = count()
        self.location = ""

    def field(self, keys: tuple[str, ...]) -> str:
        """The column holding the value at `keys` in the resource (NULL when missing)."""
        return self.fields.setdefault(keys, f"_f{len(self.fields)}")

    def list_field(self, steps: tuple[Step, ...]) -> str:
        """The column holding the items of a member chain from the resource (a list)."""
        return self.lists.setdefault(steps, f"_l{len(self.lists)}")

    def group(self, steps: tuple[Step, ...]) -> ElementGroup:
        """The records of the elements at `steps` (registered on first use)."""
        found = self.groups.get(steps)
        if found is None:
            found = self.groups[steps] = ElementGroup(steps, f"_g{len(self.groups)}")
        return found

    def state(self) -> _Registered:
        """What compiling registers, to be put back with `restore` when a try is dropped."""
        members = {steps: dict(g.members) for steps, g in self.groups.items()}
        return _Registered(dict(self.fields), dict(self.lists), dict(self.groups), members)

    def restore(self, state: _Registered) -> None:
        self.fields, self.lists, self.groups = state.fields, state.lists, state.groups
        for steps, group in self.groups.items():
            group.members = dict(state.members[steps])

    def chain(self, lst: str, steps: tuple[Step, ...]) -> str:
        """The items of member chain `steps` from the items of `lst`, the generic way
        (exact for any JSON: arrays flattened, JSON null dropped)."""
        for step in steps:
            x = self.var()
            lst = self.each(lst, self.member_list(x, step.key, (step.key,)), x)
        return lst

    def var(self) -> str:
        """A fresh lambda variable name."""
        return f"v{next(self._names)}"

    def fail(self, problem: str) -> str:
        return self.d.error(f"{self.location}: {problem}")

    # --- conversions
    def bool_list(self, tri: str) -> str:
        v = self.var()
        d = self.d
        return d.let(
            tri, v, f"CASE WHEN {v} IS NULL THEN {d.empty} ELSE {d.list_of(d.from_bool(v))} END"
        )

    def truth(self, lst: str) -> str:
        """fv.truth: empty -> NULL, one boolean -> it, one other item -> true, more -> error."""
        v, d = self.var(), self.d
        first = d.at(v, "0")
        return d.let(
            lst,
            v,
            f"CASE WHEN {d.length(v)} = 0 THEN NULL "
            f"WHEN {d.length(v)} > 1 THEN {self.fail('expected one boolean, got several values')} "
            f"WHEN {d.kind(first)} = 'boolean' THEN {d.as_bool(first)} ELSE true END",
        )

    def member_list(self, item: str, name: str, keys: tuple[str, ...] | None = None) -> str:
        """Children `name` of one item as a list (arrays flattened, JSON null dropped);
        `keys`, when the item's type is known, are the only JSON keys `name` can be."""
        d = self.d
        if keys is not None:
            value = d.member(item, keys[0])
            if len(keys) > 1:
                value = "coalesce(" + ", ".join(d.member(item, k) for k in keys) + ")"
        elif name in fv.choice_names():
            value = (
                "coalesce("
                + ", ".join(
                    [d.member(item, name)] + [d.member(item, name + t) for t in CHOICE_TYPES]
                )
                + ")"
            )
        else:
            value = d.member(item, name)
        v = self.var()
        return d.let(
            value,
            v,
            f"CASE WHEN {v} IS NULL THEN {d.empty} WHEN {d.kind(v)} = 'array' THEN {d.as_array(v)} "
            f"WHEN {d.kind(v)} = 'null' THEN {d.empty} ELSE {d.list_of(v)} END",
        )

    def each(self, lst: str, body_of_item: str, var: str) -> str:
        """flatten(transform(lst, var -> body)) where body is a list; over a one-item list
        of a name (the resource, a forEach item) the body is used as it is."""
        name = self.d.single_name(lst)
        if name is not None:
            return substitute(body_of_item, var, name)
        return self.d.flatten(self.d.transform(lst, var, body_of_item))

    def item_eq(self, a: str, b: str) -> str:
        d = self.d
        numeric = "('integer', 'decimal')"
        return (
            f"CASE WHEN {d.kind(a)} IN {numeric} AND {d.kind(b)} IN {numeric} "
            f"THEN {d.as_double(a)} = {d.as_double(b)} ELSE {d.text(a)} = {d.text(b)} END"
        )

    def is_type(self, item: str, spec: TypeSpecifier) -> str:
        """SQL twin of fv.is_type for a type known when compiling."""
        name, d = spec.name, self.d
        probes = {
            "boolean": True,
            "integer": 1,
            "decimal": 1.5,
            "string": "s",
        }
        accepted = [k for k, sample in probes.items() if fv.is_type(sample, name, spec.namespace)]
        kinds = ", ".join(d.lit(k) for k in accepted)
        tests = [f"{d.kind(item)} IN ({kinds})"] if accepted else []
        rt = d.as_string(d.member(item, "resourceType"))
        if name in ("Resource", "DomainResource"):
            tests.append(f"{rt} IS NOT NULL")
        elif fv.is_type({}, name, spec.namespace):
            tests.append(f"({d.kind(item)} = 'object' AND ({rt} IS NULL OR {rt} = {d.lit(name)}))")
        else:
            tests.append(f"{rt} = {d.lit(name)}")
        return "(" + " OR ".join(f"coalesce({t}, false)" for t in tests) + ")"

    # --- compile
    def compile_bool(self, expr: Expr, scope: Scope) -> str:
        """`expr` as a three-valued SQL BOOLEAN (truth of its collection)."""
        if isinstance(expr, Binary) and expr.op in _BOOLEAN_OPERATORS:
            from carebase.analytics.sql_operators import binary_bool

            return binary_bool(self, expr, scope)
        if isinstance(expr, FunctionCall) and expr.name in _BOOLEAN_FUNCTIONS:
            from carebase.analytics.sql_functions import function_bool

            return function_bool(self, expr, scope)
        if isinstance(expr, TypeTest) and expr.op == "is":
            return self._is(self.compile(expr.operand, scope), expr.type)
        if isinstance(expr, Literal) and expr.type == "boolean":
            return "true" if expr.value else "false"
        return self.truth(self.compile(expr, scope))

    def _is(self, lst: str, spec: TypeSpecifier) -> str:
        v, d = self.var(), self.d
        return d.let(
            lst,
            v,
            f"CASE WHEN {d.length(v)} = 0 THEN NULL WHEN {d.length(v)} > 1 "
            f"THEN {self.fail('is needs a single item')} "
            f"ELSE {self.is_type(d.at(v, '0'), spec)} END",
        )

    def compile(self, expr: Expr, scope: Scope) -> str:
        """`expr` as a SQL list of items."""
        d = self.d
        if is_boolean(expr):
            return self.bool_list(self.compile_bool(expr, scope))
        if isinstance(expr, This):
            return scope.focus
        if isinstance(expr, Literal):
            return self.literal(expr.value, expr.type)
        if isinstance(expr, Variable):
            return self.variable(expr.name, scope)
        if isinstance(expr, Member):
            return self._member(expr, scope)
        if isinstance(expr, Index):
            lst = self.compile(expr.base, scope)
            position = self.integer(expr.index, scope)
            v = self.var()
            return d.let(
                d.at(lst, f"CASE WHEN ({position}) < 0 THEN 1000000000 ELSE {position} END"),
                v,
                f"CASE WHEN {v} IS NULL THEN {d.empty} ELSE {d.list_of(v)} END",
            )
        if isinstance(expr, FunctionCall):
            from carebase.analytics.sql_functions import function_list

            return function_list(self, expr, scope)
        if isinstance(expr, Binary):
            from carebase.analytics.sql_operators import binary_list

            return binary_list(self, expr, scope)
        if isinstance(expr, Unary):
            operand = self.compile(expr.operand, scope)
            if expr.op == "+":
                return operand
            x = self.var()
            return d.transform(
                operand,
                x,
                f"CASE WHEN {d.kind(x)} = 'integer' THEN {d.from_bigint('-' + d.as_double(x))} "
                f"WHEN {d.kind(x)} = 'decimal' THEN {d.from_double('-' + d.as_double(x))} "
                f"ELSE {self.fail('cannot negate a non-number')} END",
            )
        if isinstance(expr, TypeTest):  # `as`
            x = self.var()
            return d.filter(self.compile(expr.operand, scope), x, self.is_type(x, expr.type))
        raise ViewDefinitionError(self.location, f"type name {expr.name} used as a value")

    def literal(self, value: object, type_name: str) -> str:
        d = self.d
        if type_name == "empty":
            return d.empty
        if type_name == "boolean":
            return d.list_of(d.item_json("true" if value else "false"))
        if type_name in ("integer", "decimal"):
            return d.list_of(d.item_json(str(value)))
        return d.list_of(d.item_json(_json_string(str(value))))

    def variable(self, name: str, scope: Scope) -> str:
        d = self.d
        constant = self.constants.get(name)
        if constant is not None:
            value = constant.value
            if isinstance(value, bool):
                return self.literal(value, "boolean")
            if isinstance(value, int | float):
                return self.literal(getattr(value, "text", value), "decimal")
            return self.literal(value, "string")
        if name == "rowIndex":
            return d.list_of(d.from_bigint(scope.row_index))
        if name in ("resource", "rootResource"):
            return d.list_of(scope.resource)
        if name == "context":
            return scope.focus
        raise ViewDefinitionError(self.location, f"%{name} is not defined in this view")

    def _member(self, expr: Member, scope: Scope) -> str:
        d = self.d
        known = self.path_list(expr, scope)
        if known is not None:
            return known
        x = self.var()
        if isinstance(expr.base, This) and expr.name[:1].isupper():
            # `Patient.name`: a leading type name selects the resource itself
            return d.filter(
                self.compile(expr.base, scope),
                x,
                f"{d.as_string(d.member(x, 'resourceType'))} = {d.lit(expr.name)}",
            )
        owner = context_of(self, expr.base, scope)
        keys = member_keys(owner, expr.name)
        if keys is not None and len(keys) == 1 and single_element(owner, expr.name):
            # one item or none per base item: a list of items, not a list of lists; over
            # `where(...)` the test and the read share one pass
            value = d.drop_null(d.member(x, expr.name))
            base_expr = expr.base
            if isinstance(base_expr, FunctionCall) and base_expr.name == "where":
                inner = scope.with_focus(d.list_of(x), owner)
                test = self.compile_bool(base_expr.args[0], inner)
                value = f"CASE WHEN {test} THEN {value} END"
                base_expr = base_expr.base
            y = self.var()
            values = d.transform(self.compile(base_expr, scope), x, value)
            return d.filter(values, y, f"{y} IS NOT NULL")
        return self.each(self.compile(expr.base, scope), self.member_list(x, expr.name, keys), x)

    def path_list(self, expr: Expr, scope: Scope) -> str | None:
        """A member chain the definitions know (`member_steps`) as a list read from
        pre-extracted columns; None for any other expression."""
        path = root_path(self, expr, scope)
        if path is not None and path[0]:
            return self.field_list(path[0], single=path[1])
        steps = member_steps(self, expr, scope)
        if steps is None or not steps[1]:
            return None
        if steps[0] == FROM_RESOURCE:
            return self.list_field(steps[1])
        assert scope.element is not None  # an ELEMENT start needs one
        return scope.element.member(self.d, steps[1])

    def field_list(self, keys: tuple[str, ...], single: bool) -> str:
        """A pre-extracted field as a list (its JSON null was dropped when extracted)."""
        d, f = self.d, self.field(keys)
        if single:  # R4 never writes an array here
            return f"CASE WHEN {f} IS NULL THEN {d.empty} ELSE {d.list_of(f)} END"
        return f"CASE WHEN {f} IS NULL THEN {d.empty} ELSE {d.items(f)} END"

    def integer(self, expr: Expr, scope: Scope) -> str:
        """A SQL BIGINT from a one-integer expression (index, skip, take, precision)."""
        v, d = self.var(), self.d
        return d.let(
            self.compile(expr, scope),
            v,
            f"CASE WHEN {d.length(v)} = 1 AND {d.kind(d.at(v, '0'))} = 'integer' "
            f"THEN CAST({d.as_double(d.at(v, '0'))} AS BIGINT) "
            f"ELSE {self.fail('expected one integer')} END",
        )

    def string(self, expr: Expr, scope: Scope) -> str:
        """A SQL string from the first item of `expr` (NULL when empty)."""
        if isinstance(expr, Literal) and expr.type == "string":
            return self.d.lit(str(expr.value))
        return self.d.as_string(self.d.at(self.compile(expr, scope), "0"))


def _json_string(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)
