"""The synthetic population generator: patients/s, resources/s and peak RSS.

Each measurement runs in a fresh child process (so peak RSS is the generator's own):
- NDJSON (`carebase generate --out`) at 1,000 patients (median of --runs) and at 10,000
  (one run): equal peak RSS at both sizes shows memory does not grow with the population;
- loading 1,000 patients into a new SQLite database (`carebase generate --database`), what
  `make demo` does on its first start.

Usage: python bench/bench_generate.py [--runs 3] [--large 10000] [--no-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from report import machine, write_section

CHILD = """
import json, resource, sys, time
from pathlib import Path
from carebase.data.synthetic.population import Population, load_into_store, write_ndjson
from carebase.store.factory import open_store
patients, target = int(sys.argv[1]), sys.argv[2]
started = time.perf_counter()
if target.startswith("sqlite"):
    store = open_store(target)
    store.migrate()
    made = load_into_store(Population(1), patients, store).written
    store.close()
else:
    made = sum(write_ndjson(Population(1), patients, Path(target)).values())
seconds = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "resources": made, "peak_mb": peak_mb}))
"""


def run(patients: int, target: str) -> dict[str, float]:
    """One generation in a child process: seconds, resources and peak RSS (MB)."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(patients), target],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def measure(patients: int, runs: int, kind: str) -> dict[str, float]:
    """Median seconds (and the max peak RSS) of `runs` runs."""
    results = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            target = f"sqlite:///{tmp}/bench.db" if kind == "sqlite" else f"{tmp}/out"
            result = run(patients, target)
        print(
            f"{kind} {patients:,} patients: {result['seconds']:.1f} s, "
            f"{result['resources']:,.0f} resources, peak RSS {result['peak_mb']:.0f} MB",
            flush=True,
        )
        results.append(result)
    return {
        "seconds": statistics.median(r["seconds"] for r in results),
        "resources": results[0]["resources"],
        "peak_mb": max(r["peak_mb"] for r in results),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--large", type=int, default=10_000)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    rows = [
        ("NDJSON files", 1000, measure(1000, args.runs, "ndjson")),
        ("NDJSON files", args.large, measure(args.large, 1, "ndjson")),
        ("SQLite database (loader)", 1000, measure(1000, 1, "sqlite")),
    ]
    lines = [
        "## Synthetic population generator (`bench/bench_generate.py`)",
        "",
        f"Machine: {machine()}.",
        "",
        "Each row is a fresh process generating seed 1 (median seconds of the runs; peak RSS",
        "of the whole process, interpreter and definitions included). Load average at the end:",
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work shared the machine).",
        "",
        "| output | patients | resources | seconds | patients/s | resources/s | peak RSS | runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, patients, r in rows:
        lines.append(
            f"| {label} | {patients:,} | {r['resources']:,.0f} | {r['seconds']:.1f} | "
            f"{patients / r['seconds']:,.0f} | {r['resources'] / r['seconds']:,.0f} | "
            f"{r['peak_mb']:.0f} MB | {r['runs']:.0f} |"
        )
    lines += [
        "",
        "The peak RSS at 1,000 and at the larger size is the same: only the current patient",
        "is held in memory, so the population size is limited by disk, not memory. Loading",
        "into the database is bound by the loader and the store (validation, a read of the",
        "current version to skip unchanged content, index rows), not by the generator.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_docs:
        write_section("generate", text)


if __name__ == "__main__":
    main()
