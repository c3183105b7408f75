"""Typed fast paths for the SQL compiler: what the R4 definitions say about a FHIRPath.

The list-of-items form (sql_compile) is exact for any JSON but costly: every step is a lambda
over a list and every key lookup re-parses JSON. Knowing the FHIR type of the items at hand
(`context_of`) lets a member read only its own key instead of every `name[x]` spelling; a
chain of members from the resource whose elements are single-valued (`root_path`) is read
once per resource as a pre-extracted field; and an expression that gives at most one item
(`single`) compiles to one SQL item (NULL = empty), no list at all. These rules assume
R4-shaped JSON (a max-1 element is not an array); other JSON takes the generic form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from carebase.analytics import fhirpath_values as fv
from carebase.analytics.fhirpath_ast import (
    Expr,
    FunctionCall,
    Literal,
    Member,
    This,
    TypeSpecifier,
    Variable,
)
from carebase.fhir.element_nav import (
    Context,
    child_context,
    choice_keys,
    resolve_key,
    root_context,
)

if TYPE_CHECKING:
    from carebase.analytics.sql_compile import Scope, SqlCompiler

#: functions whose items are items of their base (so of the base's type)
_SAME_ITEMS = frozenset({"where", "first", "last", "tail", "skip", "take", "single", "distinct"})
_ROOT_VARIABLES = frozenset({"resource", "rootResource"})
#: constant types compared as plain text (dates and times compare by precision instead)
_STRING_CONSTANTS = frozenset(
    {"string", "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown"}
)


def member_keys(context: Context | None, name: str) -> tuple[str, ...] | None:
    """The JSON keys member `name` reads under `context` (one key, or a choice element's
    typed keys); None when the definitions do not know it (read it the generic way)."""
    if context is None:
        return None
    found = resolve_key(context, name)
    if found is not None and not found.is_choice and not name.startswith("_"):
        return (name,)
    keys = choice_keys(context, name)
    return keys or None


def single_element(context: Context | None, name: str) -> bool:
    """Whether element `name` under `context` is a known, single-valued, non-choice one."""
    found = resolve_key(context, name) if context is not None else None
    return found is not None and not found.is_choice and found.element.max in ("0", "1")


def choice_member(
    c: SqlCompiler, call: FunctionCall, scope: Scope
) -> tuple[Member, Context, str] | None:
    """(member, its owner's context, typed key) for `name.ofType(T)` on a choice element."""
    member = call.base
    if call.name != "ofType" or not isinstance(member, Member):
        return None
    owner = context_of(c, member.base, scope)
    if owner is None:
        return None
    spec = call.args[0]
    assert isinstance(spec, TypeSpecifier)  # the parser guarantees it
    key = fv.choice_key(member.name, spec.name)
    found = resolve_key(owner, key)
    if found is None or not found.is_choice or found.name != member.name:
        return None
    return member, owner, key


def _is_type_name(expr: Member) -> bool:
    return isinstance(expr.base, This) and expr.name[:1].isupper()


def is_root(c: SqlCompiler, expr: Expr, scope: Scope) -> bool:
    """Whether `expr` is the resource itself (`$this` at the top, `%resource`)."""
    if isinstance(expr, Variable):
        return expr.name in _ROOT_VARIABLES and expr.name not in c.constants
    if isinstance(expr, This):
        return c.d.single_name(scope.focus) == scope.resource
    if isinstance(expr, Member) and _is_type_name(expr):
        return expr.name == c.resource_type and is_root(c, expr.base, scope)
    return False


def context_of(c: SqlCompiler, expr: Expr, scope: Scope) -> Context | None:
    """The definitions context of the items `expr` gives (None when not known)."""
    if is_root(c, expr, scope):
        return root_context(c.resource_type) if c.resource_type else None
    if isinstance(expr, This):
        return scope.context
    if isinstance(expr, Member) and not _is_type_name(expr):
        owner = context_of(c, expr.base, scope)
        found = resolve_key(owner, expr.name) if owner is not None else None
        if owner is None or found is None or found.is_choice:
            return None
        return child_context(owner, found)
    if isinstance(expr, FunctionCall):
        choice = choice_member(c, expr, scope)
        if choice is not None:
            found = resolve_key(choice[1], choice[2])
            return None if found is None else child_context(choice[1], found)
        if expr.name in _SAME_ITEMS:
            return context_of(c, expr.base, scope)
    return None


@dataclass(frozen=True, slots=True)
class Step:
    """One JSON key of a member chain; `many` when the element repeats (an array in R4)."""

    key: str
    many: bool


#: where a member chain starts: the resource, or the forEach element in scope
FROM_RESOURCE, FROM_ELEMENT = "resource", "element"


def member_steps(c: SqlCompiler, expr: Expr, scope: Scope) -> tuple[str, tuple[Step, ...]] | None:
    """(start, steps) for a chain of members the definitions know (choices only through
    `ofType`), from the resource or from the forEach element the scope iterates; None
    otherwise. Steps may repeat: the chain then reads a collection."""
    if is_root(c, expr, scope):
        return FROM_RESOURCE, ()
    if isinstance(expr, This) and scope.element is not None:
        return FROM_ELEMENT, ()
    if isinstance(expr, Member) and not _is_type_name(expr):
        base, name = expr.base, expr.name
        owner = context_of(c, base, scope)
        found = resolve_key(owner, name) if owner is not None else None
        if found is None or found.is_choice or name.startswith("_"):
            return None
        key = name
    elif isinstance(expr, FunctionCall) and (choice := choice_member(c, expr, scope)):
        base, key = choice[0].base, choice[2]
        found = resolve_key(choice[1], key)
        assert found is not None  # _choice_member checked it
    else:
        return None
    above = member_steps(c, base, scope)
    if above is None:
        return None
    return above[0], (*above[1], Step(key, found.element.max not in ("0", "1")))


def root_path(c: SqlCompiler, expr: Expr, scope: Scope) -> tuple[tuple[str, ...], bool] | None:
    """(JSON keys from the resource, whether single-valued) for a member chain from the
    resource whose steps before the last are all single-valued; None otherwise."""
    found = member_steps(c, expr, scope)
    if found is None or found[0] != FROM_RESOURCE:
        return None
    return _root_keys(found[1])


def _root_keys(steps: tuple[Step, ...]) -> tuple[tuple[str, ...], bool] | None:
    """`root_path` of the steps of a chain from the resource."""
    if any(step.many for step in steps[:-1]):
        return None
    return tuple(step.key for step in steps), not (steps and steps[-1].many)


def element_single(c: SqlCompiler, expr: Expr, scope: Scope) -> str | None:
    """A single-valued member chain from the forEach element in scope as one SQL item (NULL
    when empty), read from the element's pre-extracted members; None for anything else."""
    found = member_steps(c, expr, scope) if scope.element is not None else None
    if found is None or found[0] != FROM_ELEMENT or not found[1]:
        return None
    return _element_item(c, scope, found[1])


def _element_item(c: SqlCompiler, scope: Scope, steps: tuple[Step, ...]) -> str | None:
    """The one item of chain `steps` from the forEach element in scope; None when a step
    repeats."""
    if scope.element is None or any(step.many for step in steps):
        return None
    return c.d.at(scope.element.member(c.d, steps), "0")


def single(c: SqlCompiler, expr: Expr, scope: Scope) -> str | None:
    """`expr` as one SQL item (NULL when empty) when it gives at most one item, else None."""
    d = c.d
    chain = member_steps(c, expr, scope)
    path = _root_keys(chain[1]) if chain is not None and chain[0] == FROM_RESOURCE else None
    if path is not None:
        return c.field(path[0]) if path[1] and path[0] else None
    if chain is not None and chain[0] == FROM_ELEMENT and chain[1]:
        return _element_item(c, scope, chain[1])  # read from the element's members
    if isinstance(expr, This):  # the one item a where/select/forEach lambda binds
        return d.single_name(scope.focus)
    if isinstance(expr, Literal) and expr.type != "empty":
        return d.at(c.literal(expr.value, expr.type), "0")
    if isinstance(expr, Member) and not _is_type_name(expr):
        owner = context_of(c, expr.base, scope)
        found = resolve_key(owner, expr.name) if owner is not None else None
        item = single(c, expr.base, scope) if found is not None else None
        if item is None or found is None or found.is_choice or found.element.max != "1":
            return None
        return d.drop_null(d.member(item, expr.name))
    if not isinstance(expr, FunctionCall):
        return None
    if expr.name == "first":
        item = single(c, expr.base, scope)
        return item if item is not None else d.at(c.compile(expr.base, scope), "0")
    if expr.name == "getResourceKey" and is_root(c, expr.base, scope):
        key = c.field(("id",))
        return f"CASE WHEN {d.kind(key)} = 'string' THEN {key} END"
    if expr.name == "getReferenceKey":
        return _reference_key(c, expr, scope)
    return None


def _reference_key(c: SqlCompiler, call: FunctionCall, scope: Scope) -> str | None:
    from carebase.analytics.sql_compile import _REFERENCE_PATTERN

    d = c.d
    text = string_value(c, Member(call.base, "reference"), scope)
    if text is None:
        return None
    # the type and id are the last segments of a reference, so naming the wanted type in
    # the pattern finds the same id with one regular expression instead of two
    if not call.args:
        return d.from_string(f"nullif({d.regexp_extract(text, _REFERENCE_PATTERN, 2)}, '')")
    spec = call.args[0]
    assert isinstance(spec, TypeSpecifier)  # the parser guarantees it
    pattern = _REFERENCE_PATTERN.replace("([A-Z][A-Za-z]+)", spec.name, 1)
    key = f"nullif({d.regexp_extract(text, pattern, 1)}, '')"
    # the usual spelling, `<Type>/<id>`, checked by an anchored match (far cheaper than the
    # search for the last segments, which the other spellings still take)
    usual = f"{spec.name}/[A-Za-z0-9\\-.]{{1,64}}"
    start = len(spec.name) + 2
    return d.from_string(
        f"CASE WHEN {d.matches(text, usual)} THEN substr({text}, {start}) ELSE {key} END"
    )


def string_value(c: SqlCompiler, expr: Member, scope: Scope) -> str | None:
    """A single member of a string-like FHIR type (uri, code, ...) as a SQL string (NULL
    when empty); None when the definitions do not say it is one."""
    if _is_type_name(expr):
        return None
    owner = context_of(c, expr.base, scope)
    found = resolve_key(owner, expr.name) if owner is not None else None
    if found is None or found.is_choice or found.element.max != "1":
        return None
    if not fv.is_type("s", found.type_code) or found.type_code[:1].isupper():
        return None
    path = root_path(c, expr, scope)
    if path is not None:
        return c.d.as_string(c.field(path[0]))
    item = element_single(c, expr, scope)
    if item is not None:
        return c.d.as_string(item)
    item = single(c, expr.base, scope)
    return None if item is None else c.d.member_string(item, expr.name)


def _literal_text(c: SqlCompiler, expr: Expr) -> str | None:
    """The text of a string literal or of a view constant holding a string, else None."""
    if isinstance(expr, Literal) and expr.type == "string":
        return str(expr.value)
    constant = c.constants.get(expr.name) if isinstance(expr, Variable) else None
    if constant is not None and constant.type in _STRING_CONSTANTS:
        return str(constant.value)
    return None


def equals_string(c: SqlCompiler, left: Expr, right: Expr, scope: Scope) -> str | None:
    """`left = 'text'` (either side the literal or a string constant) as a SQL BOOLEAN when
    the other side is single: a JSON string equals only the same JSON text, and NULL (empty)
    stays NULL."""
    if _literal_text(c, left) is not None:
        left, right = right, left
    value = _literal_text(c, right)
    if value is None:
        return None
    text = string_value(c, left, scope) if isinstance(left, Member) else None
    if text is not None:  # R4 JSON holds these as strings: compare the decoded text
        return f"({text} = {c.d.lit(value)})"
    item = single(c, left, scope)
    if item is None:
        return None
    return f"({c.d.text(item)} = {c.d.text(single(c, right, scope) or '')})"
