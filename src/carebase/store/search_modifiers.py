"""Token and uri modifiers that need terminology or special index rows.

- token `:in` / `:not-in`: codes of a ValueSet held by the server (`terminology.Terminology`);
  `:not-in` has `:not` semantics (also resources without the element).
- token `:below` / `:above`: the code and its descendants / ancestors in a CodeSystem held by
  the server.
- uri `:below`: the uri starts with the value; uri `:above`: the stored uri is the value or
  one of its prefixes at a path boundary (`http://acme.org/fhir/` is above
  `http://acme.org/fhir/ValueSet/123`); canonical `url|version` values keep their version.
- token `:of-type` (Identifier): `type-system|type-code|value`, matched against the rows the
  indexer writes under `"{code}:of-type"` (system: the type coding's system, code: the
  identifier's value, text: the type coding's code; see `index_converters`).

Terminology is read when the query is built, so the SQL holds plain codes.
"""

from __future__ import annotations

from typing import Any

import orjson

from carebase.errors import BadRequest, TooCostly
from carebase.fhir.definitions.model import SearchParam
from carebase.fhir.search_expression import compile_for
from carebase.store.index_values import CAP_PREFIX_BYTES, index_text
from carebase.store.schema import param_key
from carebase.store.search_values import bad_value, like_escape, split_unescaped, unescape
from carebase.store.terminology import CodeSet, Direction, Terminology

Condition = tuple[str, list[Any]]

#: the modifiers this module implements
MODIFIERS = frozenset({"in", "not-in", "above", "below", "of-type"})
#: lists of codes longer than this are bound as one array argument, not one argument per code
_INLINE_CODES = 50


def modifier_condition(
    type_: str,
    param: SearchParam,
    modifier: str,
    values: list[str],
    name: str,
    terminology: Any,
) -> Condition:
    """SQL over `resource` (`rid IN (...)` / `rid NOT IN (...)`) for one parameter with one of
    `MODIFIERS` and its OR-ed raw (still escaped) `values`. `terminology` reads ValueSets and
    CodeSystems held by the server (None where no store is at hand: then :in/:not-in and token
    :above/:below raise BadRequest saying so)."""
    if modifier not in MODIFIERS:
        raise BadRequest(
            f"Search parameter '{name}': modifier ':{modifier}' is not one of "
            f"{', '.join(sorted(MODIFIERS))}",
            location=name,
        )
    if param.type == "uri" and modifier in ("above", "below"):
        sql, args = _uri_condition(modifier, values, name)
        return f"rid IN (SELECT rid FROM idx_uri WHERE pkey = ? AND {sql})", [
            param_key(type_, param.code),
            *args,
        ]
    if param.type != "token":
        raise BadRequest(
            f"Search parameter '{name}': modifier ':{modifier}' is not valid for a "
            f"{param.type} parameter",
            location=name,
        )
    if modifier == "of-type":
        if param.expression is None or not _has_identifiers(type_, param.expression):
            raise BadRequest(
                f"Search parameter '{name}': modifier ':of-type' is only valid for a parameter "
                "on Identifier elements (such as identifier)",
                location=name,
            )
        sql, args = _of_type_condition(values, name)
        return f"rid IN (SELECT rid FROM idx_token WHERE pkey = ? AND {sql})", [
            param_key(type_, f"{param.code}:of-type"),
            *args,
        ]
    if not isinstance(terminology, Terminology):
        raise BadRequest(
            f"Search parameter '{name}': modifier ':{modifier}' needs the value sets and code "
            "systems held by the server, which are not available here",
            location=name,
        )
    codes = _terminology_codes(terminology, modifier, values, name)
    sql, args = _code_set_sql(codes, terminology.dialect)
    op = "NOT IN" if modifier == "not-in" else "IN"
    return f"rid {op} (SELECT rid FROM idx_token WHERE pkey = ? AND {sql})", [
        param_key(type_, param.code),
        *args,
    ]


def _has_identifiers(type_: str, expression: str) -> bool:
    """Whether a token parameter's values can be Identifiers (extensions may hold them)."""
    kinds = {branch.type for branch in compile_for(expression, type_).branches}
    return bool(kinds & {"Identifier", "Extension", "*"})


def _terminology_codes(
    terminology: Terminology, modifier: str, values: list[str], name: str
) -> CodeSet:
    """The union of the code sets the values name (expansions or subsumption closures)."""
    result = CodeSet()
    for raw in values:
        if raw == "":
            raise bad_value(name, raw, "is empty")
        try:
            if modifier in ("in", "not-in"):
                found = terminology.expand(unescape(raw))
            else:
                system, code = _system_code(raw, name, modifier)
                direction: Direction = "below" if modifier == "below" else "above"
                found = terminology.subsumption(system, code, direction)
            result = result | found
        except TooCostly as exc:
            raise TooCostly(f"Search parameter '{name}': {exc.message}", location=name) from None
        except BadRequest as exc:
            if exc.issues and exc.issues[0].expression:  # already names a parameter
                raise
            raise BadRequest(f"Search parameter '{name}': {exc.message}", location=name) from None
    return result


def _system_code(raw: str, name: str, modifier: str) -> tuple[str | None, str]:
    parts = split_unescaped(raw, "|")
    if len(parts) == 1:
        return None, unescape(parts[0])
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise bad_value(name, raw, f"is not a code for :{modifier} (expected system|code or code)")
    return unescape(parts[0]), unescape(parts[1])


def _in_list(column: str, items: list[str], dialect: str) -> Condition:
    """`column` is one of `items`: one argument per item when few, else one array argument
    (so a large expansion never runs into the databases' cap on bound arguments)."""
    if len(items) <= _INLINE_CODES:
        return f"{column} IN ({', '.join('?' * len(items))})", list(items)
    if dialect == "postgresql":
        return f"{column} = ANY(?)", [list(items)]
    return f"{column} IN (SELECT value FROM json_each(?))", [orjson.dumps(items).decode()]


def _code_set_sql(codes: CodeSet, dialect: str) -> Condition:
    """A condition on idx_token's system/code columns true for the members of `codes`."""
    by_system: dict[str | None, list[str]] = {}
    for system, code in sorted(codes.codes, key=lambda x: (x[0] or "", x[1])):
        by_system.setdefault(system, []).append(index_text(code))
    parts: list[str] = []
    args: list[Any] = []
    for system, listed in by_system.items():
        in_sql, in_args = _in_list("code", listed, dialect)
        if system is None:
            parts.append(f"(system IS NULL AND {in_sql})")
            args.extend(in_args)
        else:
            parts.append(f"(system = ? AND {in_sql})")
            args.extend([index_text(system), *in_args])
    for system, excluded in sorted(codes.open_systems.items()):
        if excluded:
            in_sql, in_args = _in_list("code", sorted(map(index_text, excluded)), dialect)
            parts.append(f"(system = ? AND code IS NOT NULL AND NOT {in_sql})")
            args.extend([index_text(system), *in_args])
        else:
            parts.append("(system = ? AND code IS NOT NULL)")
            args.append(index_text(system))
    if not parts:
        return "1 = 0", []
    return "(" + " OR ".join(parts) + ")", args


def uri_ancestors(uri: str) -> list[str]:
    """`uri` and its prefixes at path boundaries, each with and without the trailing `/`
    (never shorter than the scheme and authority): what `:above` matches."""
    start = uri.find("://")
    start = start + 3 if start != -1 else 0
    out = [uri]
    at = uri.find("/", start)
    while at != -1:
        out.extend((uri[: at + 1], uri[:at]))
        at = uri.find("/", at + 1)
    return list(dict.fromkeys(p for p in out if p))


def _uri_condition(modifier: str, values: list[str], name: str) -> Condition:
    parts: list[str] = []
    args: list[Any] = []
    above: list[str] = []
    for raw in values:
        if raw == "":
            raise bad_value(name, raw, "is empty")
        pieces = split_unescaped(raw, "|")
        if len(pieces) > 2:
            raise bad_value(name, raw, "has more than one '|' (expected a uri or url|version)")
        url = unescape(pieces[0])
        full = "|".join(unescape(p) for p in pieces)
        if modifier == "above":
            above.extend(uri_ancestors(url))
            above.append(full)
        else:  # below: starts with the value (LIKE narrows, SUBSTR makes it case-sensitive)
            parts.append("(uri LIKE ? ESCAPE '\\' AND SUBSTR(uri, 1, ?) = ?)")
            args.extend([f"{like_escape(full)}%", len(full), full])
            if len(full.encode("utf-8", "surrogatepass")) > CAP_PREFIX_BYTES:
                # beyond a capped uri's stored prefix: only the uri itself is still found
                # (as string_condition does for long prefixes, see index_values.index_text)
                above.append(full)
    if above:
        unique = list(dict.fromkeys(map(index_text, above)))
        parts.append(f"uri IN ({', '.join('?' * len(unique))})")
        args.extend(unique)
    return "(" + " OR ".join(parts) + ")", args


def _of_type_condition(values: list[str], name: str) -> Condition:
    parts: list[str] = []
    args: list[Any] = []
    for raw in values:
        pieces = split_unescaped(raw, "|")
        if len(pieces) != 3 or not all(pieces):
            raise bad_value(
                name,
                raw,
                "is not an identifier type and value (expected system|code|value, e.g. "
                "http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345)",
            )
        system, type_code, value = (unescape(p) for p in pieces)
        parts.append("(code = ? AND system = ? AND text = ?)")
        args.extend([index_text(value), index_text(system), type_code])
    return "(" + " OR ".join(parts) + ")", args
