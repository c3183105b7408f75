"""The server's CapabilityStatement, generated from the capabilities the routes declare.

The API layer passes the set of capability tokens its route table implements (e.g. `read`,
`conditional-update`, `transaction`, `op:validate`); every resource type gets the type-level
ones, with its search parameters from the R4 definitions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from carebase.fhir.definitions.loader import Definitions
from carebase.fhir.definitions.model import SearchParam

#: Type-level RESTful interaction codes (CapabilityStatement.rest.resource.interaction).
TYPE_INTERACTION_CODES = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
#: System-level interaction codes (CapabilityStatement.rest.interaction).
SYSTEM_INTERACTION_CODES = ("transaction", "batch", "search-system", "history-system")
#: Operations we know how to describe: token -> (name, canonical definition).
OPERATION_DEFINITIONS = {
    "op:validate": ("validate", "http://hl7.org/fhir/OperationDefinition/Resource-validate"),
}
_BULK = "http://hl7.org/fhir/uv/bulkdata"
_VIEW_RUN = "http://sql-on-fhir.org/OperationDefinition/$viewdefinition-run"
#: Bulk Data operations at system level (rest.operation): token -> (name, definition).
SYSTEM_OPERATIONS = {
    "op:export": ("export", f"{_BULK}/OperationDefinition/export"),
    "op:import": ("import", f"{_BULK}/OperationDefinition/import"),
    "op:viewdefinition-run": ("viewdefinition-run", _VIEW_RUN),
}
#: SQL on FHIR: operations offered on one resource type only: token -> (type, name, definition).
TYPE_OPERATIONS = {"op:viewdefinition-run": ("ViewDefinition", "viewdefinition-run", _VIEW_RUN)}
#: Bulk Data export at type level (Patient/$export, Group/[id]/$export), with `op:export`.
TYPE_EXPORTS = {
    "Patient": f"{_BULK}/OperationDefinition/patient-export",
    "Group": f"{_BULK}/OperationDefinition/group-export",
}


Searchable = Callable[[SearchParam], bool]


def _has_expression(param: SearchParam) -> bool:
    return param.expression is not None  # _text, _content, _query...: nothing to index


def _search_params(
    definitions: Definitions, type_: str, searchable: Searchable
) -> list[dict[str, object]]:
    return [
        {"name": param.code, "definition": param.url, "type": param.type}
        for param in definitions.search_params(type_).values()
        if searchable(param)
    ]


def _reference_params(definitions: Definitions, type_: str) -> list[SearchParam]:
    return [
        p
        for p in definitions.search_params(type_).values()
        if p.type == "reference" and p.expression
    ]


def _includes(definitions: Definitions, type_: str) -> list[str]:
    """`_include` values for `type_`: each reference parameter, and `Type:*`."""
    names = [f"{type_}:{p.code}" for p in _reference_params(definitions, type_)]
    return [*names, f"{type_}:*"] if names else []


def _revincludes(definitions: Definitions, type_: str) -> list[str]:
    """`_revinclude` values for `type_`: every reference parameter that can point to it."""
    return [
        f"{source}:{p.code}"
        for source in sorted(definitions.resource_types)
        for p in _reference_params(definitions, source)
        if not p.targets or type_ in p.targets
    ]


#: Search result parameters the server supports on every search (rest.searchParam).
RESULT_PARAMETERS = (
    ("_sort", "string", "Sort keys, comma-separated, '-' for descending: any search parameter "
     "of type string, token, date, number, quantity, uri or reference, and _id, _lastUpdated"),
    ("_count", "number", "Matches per page (default and maximum are configurable)"),
    ("_total", "token", "none | estimate | accurate (default accurate)"),
    ("_summary", "token", "true | text | data | count | false"),
    ("_elements", "string", "Top-level elements to return for the matches"),
    ("_include", "special", "SourceType:parameter[:TargetType] or SourceType:*; :iterate"),
    ("_revinclude", "special", "SourceType:parameter[:TargetType]; :iterate"),
    ("_type", "token", "Resource types of a system or compartment search"),
)  # fmt: skip


def _resource_entry(
    definitions: Definitions, type_: str, tokens: frozenset[str], searchable: Searchable
) -> dict[str, object]:
    entry: dict[str, object] = {
        "type": type_,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{type_}",
        "interaction": [{"code": code} for code in TYPE_INTERACTION_CODES if code in tokens],
        "versioning": "versioned-update" if "update" in tokens else "versioned",
        "readHistory": "vread" in tokens,
        "updateCreate": "update" in tokens,
        "conditionalCreate": "conditional-create" in tokens,
        "conditionalRead": "full-support" if "conditional-read" in tokens else "not-supported",
        "conditionalUpdate": "conditional-update" in tokens,
        "conditionalDelete": "single" if "conditional-delete" in tokens else "not-supported",
        "referencePolicy": ["literal", "local"],
    }
    params = _search_params(definitions, type_, searchable) if "search-type" in tokens else []
    if params:
        entry["searchInclude"] = _includes(definitions, type_)
        entry["searchRevInclude"] = _revincludes(definitions, type_)
        entry["searchParam"] = params
    operations = [
        {"name": name, "definition": url}
        for token, (name, url) in OPERATION_DEFINITIONS.items()
        if token in tokens
    ]
    for token, (owner, name, url) in TYPE_OPERATIONS.items():
        if token in tokens and type_ == owner:
            operations.append({"name": name, "definition": url})
    if "op:export" in tokens and type_ in TYPE_EXPORTS:
        operations.append({"name": "export", "definition": TYPE_EXPORTS[type_]})
    if operations:
        entry["operation"] = operations
    return entry


def capability_statement(
    definitions: Definitions,
    tokens: Iterable[str],
    *,
    base_url: str,
    software_version: str,
    date: datetime | None = None,
    searchable: Searchable = _has_expression,
) -> dict[str, object]:
    """The CapabilityStatement for a server implementing `tokens` on every resource type.

    `searchable` says which search parameters the search engine supports (listed per type).
    """
    supported = frozenset(tokens)
    when = (date or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rest: dict[str, object] = {
        "mode": "server",
        "documentation": "FHIR R4 RESTful API of carebase",
        "resource": [
            _resource_entry(definitions, type_, supported, searchable)
            for type_ in sorted(definitions.resource_types)
        ],
        "interaction": [{"code": code} for code in SYSTEM_INTERACTION_CODES if code in supported],
    }
    if "search-type" in supported or "search-system" in supported:
        rest["searchParam"] = [
            {"name": name, "type": kind, "documentation": text}
            for name, kind, text in RESULT_PARAMETERS
        ]
    system_operations = [
        {"name": name, "definition": url}
        for token, (name, url) in SYSTEM_OPERATIONS.items()
        if token in supported
    ]
    if system_operations:
        rest["operation"] = system_operations
    if "search-compartment" in supported:
        rest["compartment"] = ["http://hl7.org/fhir/CompartmentDefinition/patient"]
    statement: dict[str, object] = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": when,
        "publisher": "carebase",
        "kind": "instance",
        "software": {"name": "carebase", "version": software_version},
        "implementation": {"description": "carebase FHIR server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
    }
    if "op:export" in supported:
        statement["instantiates"] = [f"{_BULK}/CapabilityStatement/bulk-data"]
    if "patch" in supported:
        statement["patchFormat"] = ["application/json-patch+json", "application/fhir+json"]
    statement["rest"] = [rest]
    return statement
