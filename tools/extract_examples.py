"""Copy the official R4 example resources into one committed test corpus (NDJSON, gzip).

Usage: python tools/extract_examples.py [PACKAGE_DIR] [--out tests/data/r4-examples.ndjson.gz]

The R4 examples package mixes the examples with the specification's own definitions
(StructureDefinitions, SearchParameters, value sets, ... delivered both one per file and in
collection Bundles such as `Bundle-resources.json`). "Definitions" here means every resource
that appears in one of those definition Bundles, plus the Bundles themselves and the
ImplementationGuide of the spec; everything else is an example and goes into the corpus, one
compact JSON resource per line, sorted by file name, so the output is deterministic. CC0.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

DEFAULT_PACKAGE = Path("/work/r4pkg/package")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests/data/r4-examples.ndjson.gz"
#: collection Bundles that deliver the specification's definitions, not examples
DEFINITION_BUNDLES = (
    "Bundle-conceptmaps.json",
    "Bundle-dataelements.json",
    "Bundle-extensions.json",
    "Bundle-externals.json",
    "Bundle-profiles-others.json",
    "Bundle-registry.json",
    "Bundle-resources.json",
    "Bundle-searchParams.json",
    "Bundle-terminologies.json",
    "Bundle-types.json",
    "Bundle-v2-valuesets.json",
    "Bundle-v3-valuesets.json",
    "Bundle-valueset-expansions.json",
    "Bundle-valuesets.json",
)
#: the specification's own ImplementationGuide (2.7 MB, twice): a definition, not an example
SKIP_FILES = ("ImplementationGuide-fhir.json", "ig-r4.json", "package.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", nargs="?", type=Path, default=DEFAULT_PACKAGE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    definitions: set[tuple[str, str]] = set()
    for name in DEFINITION_BUNDLES:
        path = args.package / name
        if path.exists():
            for entry in json.loads(path.read_bytes()).get("entry", []):
                resource = entry.get("resource", {})
                definitions.add((resource.get("resourceType", ""), resource.get("id", "")))
    lines: list[bytes] = []
    for path in sorted(args.package.glob("*.json")):
        if path.name in SKIP_FILES or path.name in DEFINITION_BUNDLES:
            continue
        resource = json.loads(path.read_bytes())
        if (resource.get("resourceType"), resource.get("id")) in definitions:
            continue
        lines.append(json.dumps(resource, separators=(",", ":"), ensure_ascii=False).encode())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as fh, gzip.GzipFile("", "wb", 9, fh, mtime=0) as gz:
        gz.write(b"\n".join(lines) + b"\n")
    print(f"wrote {len(lines)} resources to {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
