"""Where the cost of a secured read goes, stage by stage, over HTTP (companion of bench_auth).

Usage: python bench/bench_auth_stages.py [--quick] [--rounds N] [--seconds S]
       [--backends sqlite postgresql] [--write-docs]

The same 2,000 Patients read in turn (GET /fhir/Patient/{id}, a `system/*.rs` service token)
from four servers, one at a time, each round in turn, the server and all it starts pinned to
CPU 0 and wrk to CPU 1 (the `pinned` placement of bench_auth.py, where CPU is the limit):
  open         no token, no access check, no audit entry (bench_auth's baseline)
  unpersisted  carebase as shipped up to the audit trail: bearer token verified, access
               policy applied, the audit entry built and encoded, then dropped
  thread       as shipped: the audit trail written by a thread of the server (what
               CAREBASE_AUDIT_WRITER=auto picks for a server with one usable CPU)
  process      the audit trail written by a process of its own instead (what `auto` picks
               on SQLite where a CPU is left over for it)
Each row gives the medians over rounds of req/s and of CPU per read (the server process, all
its threads and its audit writer), and what the stage adds to the one it builds on.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench_auth import (
    BASE_URL,
    load_arguments,
    measure_backends,
    publish,
    seed,
    serve_and_load,
)
from http_wrk import LoadSpec, WrkResult
from report import machine

from carebase.auth.tokens import TokenService
from carebase.config import Settings

#: (name, uvicorn factory in auth_apps, extra environment), in the order they are run
STAGES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("open", "open_app", {}),
    ("unpersisted", "unpersisted_app", {}),
    ("thread", "secured_app", {"CAREBASE_AUDIT_WRITER": "thread"}),
    ("process", "secured_app", {"CAREBASE_AUDIT_WRITER": "process"}),
)
#: the stage each one adds to (the two trails are alternatives, each on top of `unpersisted`)
BUILDS_ON = {"unpersisted": "open", "thread": "unpersisted", "process": "unpersisted"}
DESCRIPTION = {
    "open": "open read: no token, no access check, no audit entry",
    "unpersisted": "+ bearer check, access policy, audit entry built and encoded (then dropped)",
    "thread": "+ the entry written by a thread of the server (as shipped on one CPU)",
    "process": "+ the entry written by a writer process instead",
}


def measure(backend: str, url: str, tmp: Path, args: argparse.Namespace) -> list[WrkResult]:
    """Every round of the four stages on one database."""
    ids = seed(url, args.patients)
    data_dir = tmp / f"data-{backend}"
    tokens = TokenService.from_settings(Settings(data_dir=data_dir, base_url=BASE_URL), ttl=3600)
    service, _ = tokens.issue(subject="bench", scopes=["system/*.rs"], kind="service",
                              role="service")  # fmt: skip
    spec = LoadSpec("GET", "/fhir/Patient/", ids)
    results: list[WrkResult] = []
    for _ in range(args.rounds):
        for name, factory, env in STAGES:
            loads = [(f"{name}-{backend}", spec, None if name == "open" else service)]
            results += serve_and_load(factory, url, data_dir, "pinned", loads, args, env)
    return results


def markdown(results: list[WrkResult], args: argparse.Namespace) -> str:
    """The `auth-stages` section of docs/benchmarks.md."""
    by: dict[str, list[WrkResult]] = {}
    for r in results:
        by.setdefault(r.name, []).append(r)
    lines = [
        "## Security: where a secured read's CPU goes (HTTP, stage by stage)",
        "",
        f"Machine: {machine()}. Script: `bench/bench_auth_stages.py`: {args.patients:,} "
        "Synthea-sized Patients read in turn with a `system/*.rs` token; four servers (one "
        "worker each) in turn, never at once, the server and everything it starts on CPU 0 "
        f"and wrk ({args.connections} connections) on CPU 1; {args.warmup:g} s warm-up and "
        f"{args.seconds:g} s measured per row, {args.rounds} rounds alternating the servers; "
        "medians of the rounds. CPU is the user + system time per read of the server "
        "process, its threads and its audit writer process. `Adds` is the row's CPU minus "
        "that of the row it builds on (the open read for the second row, the second row "
        "for either trail); `/ open` is the row's req/s over the open row's (the thread row "
        "is the trail `CAREBASE_AUDIT_WRITER=auto` ships where the server has one CPU).",
        "",
        "| database | stage | req/s | / open | CPU µs/read | adds |",
        "|---|---|---|---|---|---|",
    ]
    for backend in args.backends:
        rows = [(name, by.get(f"{name}-{backend}", [])) for name, _, _ in STAGES]
        if not rows[0][1]:
            continue
        open_rps = statistics.median(r.rps for r in rows[0][1])
        cpu_of: dict[str, float] = {}
        for name, runs in rows:
            rps = statistics.median(r.rps for r in runs)
            cpu = cpu_of[name] = statistics.median(r.server_cpu_us or 0.0 for r in runs)
            base = BUILDS_ON.get(name)
            adds = "" if base is None or base not in cpu_of else f"{cpu - cpu_of[base]:+,.0f}"
            lines.append(
                f"| {backend} | {DESCRIPTION[name]} | {rps:,.0f} | {rps / open_rps:.2f} "
                f"| {cpu:,.0f} | {adds} |"
            )
    errors = sum(r.errors for r in results)
    lines += ["", f"Socket errors and non-2xx answers over all rows: {errors}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    load_arguments(parser, rounds=5, seconds=6.0, warmup=2.0, backends=["sqlite"])
    args = parser.parse_args()
    publish("auth-stages", markdown(measure_backends(args, measure, "auth-stages"), args), args)


if __name__ == "__main__":
    main()
