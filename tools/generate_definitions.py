"""Generate carebase's compact R4 definitions from the official FHIR R4 (4.0.1) package.

Usage: python tools/generate_definitions.py [PACKAGE_DIR_OR_TGZ] [--out DIR]

PACKAGE is the unpacked `hl7.fhir.r4.examples@4.0.1` npm package (the directory that holds
`StructureDefinition-*.json`, `Bundle-searchParams.json`, ...) or the `.tgz` from
`npm pack hl7.fhir.r4.examples@4.0.1`. The output (gzip-compressed JSON, keys sorted, no
timestamps) is committed to `src/carebase/fhir/definitions/`; re-running on the same input
produces byte-identical files. The definitions are CC0.

Output files:
- `elements.json.gz`: every resource and data type (specializations only; constraint types
  such as SimpleQuantity become aliases of their base) with its snapshot elements, plus the
  expanded code sets of every *required* binding.
- `search_params.json.gz`: one row per (base, code) of every core SearchParameter, with the
  expression cut down to the union branches that apply to that base.
- `compartments.json.gz`: the Patient CompartmentDefinition (resource type -> param codes).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_PACKAGE = Path("/work/r4pkg/package")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/carebase/fhir/definitions"

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
# FHIRPath system types used in R4 snapshots for `id`, `url` and primitive `value` elements.
SYSTEM_TYPES = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
}
# Code systems defined by a grammar, not an enumeration: their expansions are samples.
GRAMMAR_SYSTEMS = {"http://unitsofmeasure.org", "urn:ietf:bcp:47", "urn:ietf:bcp:13"}
Json = dict[str, Any]


class Package:
    """Read-only access to the JSON files of the package (a directory or an npm .tgz)."""

    def __init__(self, source: Path) -> None:
        self.files: dict[str, bytes] = {}
        if source.is_dir():
            for path in sorted(source.glob("*.json")):
                self.files[path.name] = path.read_bytes()
        else:
            with tarfile.open(source, "r:gz") as tar:
                for member in tar.getmembers():
                    name = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and name.endswith(".json") and "/" in member.name:
                        extracted = tar.extractfile(member)
                        if extracted is not None and member.name.count("/") == 1:
                            self.files[name] = extracted.read()
        if "Bundle-searchParams.json" not in self.files:
            sys.exit(f"{source}: not the R4 examples package (no Bundle-searchParams.json)")

    def load(self, name: str) -> Json:
        result: Json = json.loads(self.files[name])
        return result

    def by_prefix(self, prefix: str) -> Iterator[Json]:
        for name in sorted(self.files):
            if name.startswith(prefix):
                yield self.load(name)


# --------------------------------------------------------------------------- value sets


class Terminology:
    """Expands required-binding value sets from the core CodeSystems and ValueSets."""

    def __init__(self, package: Package) -> None:
        self.code_systems = {cs["url"]: cs for cs in package.by_prefix("CodeSystem-")}
        self.value_sets = {vs["url"]: vs for vs in package.by_prefix("ValueSet-")}
        self.expansions: dict[str, Json] = {}
        if "Bundle-valueset-expansions.json" in package.files:
            for entry in package.load("Bundle-valueset-expansions.json").get("entry", []):
                resource = entry["resource"]
                self.expansions[resource["url"]] = resource.get("expansion", {})
        self.cache: dict[str, tuple[set[str], set[str]] | None] = {}

    def expand(self, url: str) -> tuple[set[str], set[str]] | None:
        """(code systems, codes) of the value set, or None when it cannot be expanded here."""
        url = url.split("|", 1)[0]
        if url not in self.cache:
            self.cache[url] = None  # guards against include cycles
            self.cache[url] = self._expand(url)
        return self.cache[url]

    def _expand(self, url: str) -> tuple[set[str], set[str]] | None:
        vs = self.value_sets.get(url)
        result = self._from_compose(vs["compose"]) if vs and "compose" in vs else None
        if result is None:
            result = self._from_expansion(self.expansions.get(url) or (vs or {}).get("expansion"))
        return result

    def _from_compose(self, compose: Json) -> tuple[set[str], set[str]] | None:
        systems: set[str] = set()
        codes: set[str] = set()
        for include in compose.get("include", []):
            part = self._include(include)
            if part is None:
                return None
            systems |= part[0]
            codes |= part[1]
        for exclude in compose.get("exclude", []):
            part = self._include(exclude)
            if part is None:
                return None  # cannot know what to remove: do not check rather than guess
            codes -= part[1]
        return (systems, codes) if codes else None

    def _include(self, include: Json) -> tuple[set[str], set[str]] | None:
        if "filter" in include:
            return None
        system = include.get("system")
        if include.get("valueSet"):
            if system:
                return None  # an intersection; rare in core, not worth approximating
            systems: set[str] = set()
            codes: set[str] = set()
            for vs_url in include["valueSet"]:
                part = self.expand(vs_url)
                if part is None:
                    return None
                systems |= part[0]
                codes |= part[1]
            return systems, codes
        if not system:
            return None
        if "concept" in include:
            return {system}, {c["code"] for c in include["concept"]}
        cs = self.code_systems.get(system)
        if cs is None or cs.get("content") != "complete" or "concept" not in cs:
            return None
        codes = set()
        stack = list(cs["concept"])
        while stack:  # hierarchical code systems nest concepts inside concepts
            concept = stack.pop()
            codes.add(concept["code"])
            stack.extend(concept.get("concept", []))
        return {system}, codes

    @staticmethod
    def _from_expansion(expansion: Json | None) -> tuple[set[str], set[str]] | None:
        if not expansion or "contains" not in expansion:
            return None
        systems: set[str] = set()
        codes: set[str] = set()
        stack = list(expansion["contains"])
        count = 0
        while stack:
            item = stack.pop()
            stack.extend(item.get("contains", []))
            if "code" in item and "system" in item:
                systems.add(item["system"])
                codes.add(item["code"])
                count += 1
        if systems & GRAMMAR_SYSTEMS:
            return None  # a grammar (UCUM, BCP-47/13): any listing is only a sample
        total = expansion.get("total")
        if total is not None and total != count:
            return None  # a truncated expansion would reject valid codes
        return (systems, codes) if codes else None


# --------------------------------------------------------------------------- structures


def element_types(element: Json, type_name: str, kind: str) -> list[str]:
    """The type codes of a snapshot element, with FHIRPath system types mapped to FHIR ones."""
    out: list[str] = []
    for t in element.get("type", []):
        code = t["code"]
        if code.startswith("http://hl7.org/fhirpath/"):
            fhir_type = next(
                (e["valueUrl"] for e in t.get("extension", []) if e["url"] == FHIR_TYPE_EXT), None
            )
            if element["path"] == f"{type_name}.value" and kind == "primitive":
                code = type_name  # the value of a primitive is the primitive itself
            elif element["path"] == f"{type_name}.id" and kind == "resource":
                code = "id"  # the snapshot says string, the spec (and JSON schema) say id
            elif fhir_type:
                code = fhir_type
            else:
                code = SYSTEM_TYPES[code]
        if code not in out:
            out.append(code)
    return out


def target_names(element: Json) -> list[str]:
    names: set[str] = set()
    for t in element.get("type", []):
        for url in t.get("targetProfile", []):
            names.add(url.rsplit("/", 1)[-1])
    return sorted(names)


def build_elements(package: Package, terminology: Terminology) -> Json:
    types: dict[str, Json] = {}
    aliases: dict[str, str] = {}
    bindings: dict[str, Json | None] = {}
    kinds = {"resource": "resource", "primitive-type": "primitive", "complex-type": "complex"}
    for sd in package.by_prefix("StructureDefinition-"):
        kind = kinds.get(sd["kind"])
        if kind is None or sd.get("url", "").rsplit("/", 1)[-1] != sd["id"]:
            continue
        if sd.get("derivation") == "constraint":
            if kind == "complex" and sd["type"] == "Quantity" and sd["id"] != sd["type"]:
                aliases[sd["id"]] = sd["type"]  # SimpleQuantity, MoneyQuantity
            continue
        name = sd["type"]
        rows = []
        for element in sd["snapshot"]["element"]:
            if "sliceName" in element:
                continue
            binding_url = None
            binding = element.get("binding")
            if binding and binding.get("strength") == "required" and binding.get("valueSet"):
                binding_url = binding["valueSet"].split("|", 1)[0]
                if binding_url not in bindings:
                    expanded = terminology.expand(binding_url)
                    bindings[binding_url] = (
                        None
                        if expanded is None
                        else {"codes": sorted(expanded[1]), "systems": sorted(expanded[0])}
                    )
            content_ref = element.get("contentReference")
            rows.append(
                [
                    element["path"],
                    element_types(element, name, kind),
                    int(element.get("min", 0)),
                    str(element.get("max", "*")),
                    1 if element.get("isSummary") else 0,
                    binding_url,
                    content_ref,
                    target_names(element),
                ]
            )
        base = sd.get("baseDefinition", "").rsplit("/", 1)[-1] or None
        types[name] = {
            "kind": kind,
            "abstract": bool(sd.get("abstract")),
            "base": base,
            "elements": rows,
        }
    return {"types": types, "aliases": aliases, "bindings": bindings}


# --------------------------------------------------------------------------- search params


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath expression at top-level `|` (not inside parentheses or strings)."""
    parts: list[str] = []
    depth = 0
    quote = False
    start = 0
    for i, ch in enumerate(expression):
        if ch == "'" and (i == 0 or expression[i - 1] != "\\"):
            quote = not quote
        elif quote:
            continue
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def leading_identifier(branch: str) -> str:
    branch = branch.lstrip("( ")
    end = 0
    while end < len(branch) and (branch[end].isalnum() or branch[end] == "_"):
        end += 1
    return branch[:end]


def build_search_params(package: Package, warnings: list[str]) -> list[list[Any]]:
    params = [e["resource"] for e in package.load("Bundle-searchParams.json")["entry"]]
    code_by_url = {p["url"]: p["code"] for p in params}
    rows: dict[tuple[str, str], list[Any]] = {}
    for p in params:
        branches = split_union(p["expression"]) if p.get("expression") else []
        components = [
            [code_by_url.get(c["definition"], c["definition"].rsplit("/", 1)[-1]), c["expression"]]
            for c in p.get("component", [])
        ]
        for base in p["base"]:
            expression = None
            if branches:
                mine = [b for b in branches if leading_identifier(b) == base]
                if not mine:
                    warnings.append(f"SearchParameter {p['id']}: no branch for {base}; kept all")
                    mine = branches
                expression = " | ".join(mine)
            key = (base, p["code"])
            if key in rows:
                warnings.append(f"SearchParameter {p['id']}: duplicate {base}.{p['code']}")
                continue
            rows[key] = [
                p["code"],
                base,
                p["type"],
                expression,
                p["url"],
                sorted(p.get("target", [])),
                components,
                list(p.get("modifier", [])),
                list(p.get("comparator", [])),
            ]
    return [rows[key] for key in sorted(rows)]


def build_compartments(package: Package) -> Json:
    patient = package.load("CompartmentDefinition-patient.json")
    return {"patient": {r["code"]: list(r["param"]) for r in patient["resource"] if r.get("param")}}


def write(path: Path, data: Any) -> None:
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # mtime=0 and no file name in the gzip header keep the output byte-identical across runs.
    with open(path, "wb") as fh, gzip.GzipFile("", "wb", 9, fh, mtime=0) as gz:
        gz.write(raw.encode())
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", nargs="?", type=Path, default=DEFAULT_PACKAGE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    package = Package(args.package)
    terminology = Terminology(package)
    warnings: list[str] = []
    elements = build_elements(package, terminology)
    search_params = build_search_params(package, warnings)
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "elements.json.gz", elements)
    write(args.out / "search_params.json.gz", search_params)
    write(args.out / "compartments.json.gz", build_compartments(package))
    unexpanded = sorted(url for url, b in elements["bindings"].items() if b is None)
    print(f"{len(elements['types'])} types, {len(search_params)} search parameter rows")
    print(f"{len(elements['bindings'])} required bindings, {len(unexpanded)} not expandable:")
    for url in unexpanded:
        print(f"  {url}")
    for warning in warnings:
        print(f"warning: {warning}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
