"""Run every benchmark that writes to docs/benchmarks.md (what `make bench` does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SCRIPTS = (
    ["bench_startup.py"],
    ["http_bench.py", "--write-docs"],
    ["bench_ingest.py", "--runs", "3"],
    ["bench_audit.py", "--runs", "3"],
    ["bench_import.py", "--runs", "3"],
    ["bench_auth.py"],
    ["bench_auth_stages.py", "--backends", "sqlite", "postgresql"],
    ["bench_encryption.py"],
    ["bench_generate.py", "--runs", "3"],
    ["bench_bulk.py"],
    ["bench_views.py", "--runs", "3"],
    ["bench_ml.py"],
)


def main() -> None:
    for script, *args in SCRIPTS:
        print(f"== {script} {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, str(BENCH / script), *args], check=True, cwd=BENCH.parent)


if __name__ == "__main__":
    main()
