"""Micro-benchmark: validation cost per resource over the Synthea R4 sample.

Usage: python bench/bench_validation.py [PATH_TO/synthea-r4-100.tar.gz] [--rounds N]

Prints the definitions load time, the first-pass cost (includes compiling the per-type
tables) and the best-of-N steady-state µs/resource, overall and for the commonest types.
"""

from __future__ import annotations

import argparse
import tarfile
import time
from collections import defaultdict
from pathlib import Path

import orjson

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/synthea-r4-100.tar.gz"


def load_resources(path: Path) -> list[dict[str, object]]:
    """Every entry resource of every Bundle in the tarball."""
    resources: list[dict[str, object]] = []
    with tarfile.open(path) as tar:
        for member in tar:
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None and member.name.endswith(".json"):
                bundle = orjson.loads(extracted.read())
                resources.extend(entry["resource"] for entry in bundle.get("entry", []))
    return resources


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    started = time.perf_counter()
    from carebase.fhir.definitions.loader import get_definitions
    from carebase.fhir.validation import validate_resource

    get_definitions()
    print(f"definitions import+load: {(time.perf_counter() - started) * 1e3:.1f} ms")

    resources = load_resources(args.data)
    print(f"{len(resources)} resources from {args.data.name}")
    started = time.perf_counter()
    invalid = sum(1 for resource in resources if validate_resource(resource))
    first = time.perf_counter() - started
    print(f"first pass: {first / len(resources) * 1e6:.1f} µs/resource ({invalid} invalid)")

    best = float("inf")
    per_type: dict[str, float] = defaultdict(lambda: float("inf"))
    counts: dict[str, int] = defaultdict(int)
    for resource in resources:
        counts[str(resource["resourceType"])] += 1
    for _ in range(args.rounds):
        totals: dict[str, float] = defaultdict(float)
        started = time.perf_counter()
        for resource in resources:
            t0 = time.perf_counter()
            validate_resource(resource)
            totals[str(resource["resourceType"])] += time.perf_counter() - t0
        best = min(best, time.perf_counter() - started)
        for name, total in totals.items():
            per_type[name] = min(per_type[name], total)
    print(f"steady state (best of {args.rounds}): {best / len(resources) * 1e6:.1f} µs/resource")
    for name in sorted(counts, key=lambda n: -counts[n])[:10]:
        print(f"  {name:<22} {counts[name]:>6}  {per_type[name] / counts[name] * 1e6:7.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
