"""Start-up cost: loading the generated R4 definitions in a fresh process (target < 0.5 s).

Usage: python bench/bench_startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from report import machine, write_section

PROBE = (
    "import time; t = time.perf_counter();"
    "from carebase.fhir.definitions.loader import get_definitions; d = get_definitions();"
    "a = time.perf_counter() - t; [d.elements(x) for x in sorted(d.resource_types)];"
    "[d.search_params(x) for x in sorted(d.resource_types)];"
    "print(a, time.perf_counter() - t)"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    loads, full = [], []
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
        ).stdout.split()
        loads.append(float(out[0]))
        full.append(float(out[1]))
    lines = [
        "## Start-up: loading the R4 definitions",
        "",
        f"Machine: {machine()}. Script: `bench/bench_startup.py` ({args.runs} fresh processes; "
        "import and load, then every resource type's elements and search parameters built).",
        "",
        "| step | median | max |",
        "|---|---|---|",
        f"| import + `get_definitions()` | {statistics.median(loads) * 1000:.0f} ms | "
        f"{max(loads) * 1000:.0f} ms |",
        f"| ... and all 146 types materialised | {statistics.median(full) * 1000:.0f} ms | "
        f"{max(full) * 1000:.0f} ms |",
    ]
    write_section("startup", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
