"""Benchmark: search indexing speed (µs per resource, by type) over the Synthea R4 sample.

Usage: .venv/bin/python bench/bench_indexer.py [PATH_TO/synthea-r4-100.tar.gz] [--repeat N]
Reads the transaction Bundles straight from the tar (no unpacking), rewrites each bundle's
`urn:uuid:` references to `Type/id` as transaction processing does before indexing, indexes
every resource, and prints per-type averages.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from carebase.store.indexer import get_indexer

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "synthea-r4-100.tar.gz"


def load(path: Path) -> list[dict[str, Any]]:
    """Every entry resource of every Bundle in the tar."""
    out: list[dict[str, Any]] = []
    with tarfile.open(path) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".json"):
                data = tar.extractfile(member)
                assert data is not None
                bundle = orjson.loads(data.read())
                entries = [e for e in bundle.get("entry", ()) if "resource" in e]
                local = {
                    e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
                    for e in entries
                    if "fullUrl" in e and "id" in e["resource"]
                }
                out.extend(_rewrite(e["resource"], local) for e in entries)
    return out


def _rewrite(node: Any, local: dict[str, str]) -> Any:
    """`node` with `reference` values found in `local` replaced (in place)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value in local:
                node[key] = local[value]
            else:
                _rewrite(value, local)
    elif isinstance(node, list):
        for item in node:
            _rewrite(item, local)
    return node


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tar", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--repeat", type=int, default=3, help="passes; the best one is shown")
    args = parser.parse_args()
    if not args.tar.exists():
        print(f"no data at {args.tar}", file=sys.stderr)
        return 1
    resources = load(args.tar)
    indexer = get_indexer("http://localhost:8080/fhir")
    for r in resources[:2000]:  # build the per-type plans outside the timing
        indexer.index(r)
    best: dict[str, float] = {}
    counts: dict[str, int] = defaultdict(int)
    rows_per: dict[str, int] = defaultdict(int)
    totals = []
    for _ in range(args.repeat):
        spent: dict[str, float] = defaultdict(float)
        clock = time.perf_counter
        start_all = clock()
        for r in resources:
            t0 = clock()
            rows = indexer.index(r)
            spent[r["resourceType"]] += clock() - t0
            if not best:
                counts[r["resourceType"]] += 1
                rows_per[r["resourceType"]] += sum(len(getattr(rows, f)) for f in rows.__slots__)
        totals.append(clock() - start_all)
        for k, v in spent.items():
            best[k] = min(best.get(k, v), v)
    print(f"{len(resources)} resources, best of {args.repeat} passes")
    print(f"{'type':<24}{'count':>8}{'µs/resource':>14}{'rows/resource':>15}")
    for rtype in sorted(counts, key=lambda t: -counts[t]):
        n = counts[rtype]
        print(f"{rtype:<24}{n:>8}{best[rtype] / n * 1e6:>14.1f}{rows_per[rtype] / n:>15.1f}")
    total = min(totals)
    print(f"{'all':<24}{len(resources):>8}{total / len(resources) * 1e6:>14.1f}")
    print(f"throughput: {len(resources) / total:,.0f} resources/s (indexing only, one core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
