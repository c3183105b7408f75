"""Authenticated and audited reads against unauthenticated, unaudited reads, over HTTP.

Usage: python bench/bench_auth.py [--quick] [--rounds N] [--seconds S] [--placements pinned shared]
       [--backends sqlite postgresql] [--write-docs]

One database per backend (SQLite file, then PostgreSQL) with 2,000 Synthea-sized Patients.
Two uvicorn processes take turns, pinned to CPU 0 with wrk on CPU 1, then with nothing
pinned (`--placements`): `open` serves the route handlers
with no authentication and no audit; `secured` is carebase as shipped: a bearer token
verified on every request, the access policy applied, and every read written to the
hash-chained audit trail. Scenarios, each round in turn, medians over rounds:
  open-many / secured-many   GET /fhir/Patient/{id} over all ids, secured with a
                             `system/*.rs` service token
  open-one / patient-one     GET of one Patient, secured with that patient's own
                             `patient/*.rs` token (the compartment check included)
The issue's floor: secured reads at >= 80% of open reads in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from http_bench import sample_patient
from http_wrk import LoadSpec, WrkResult, run_wrk
from report import machine, write_section
from server import free_port, fresh_postgres_database, terminate

from carebase.auth.tokens import TokenService
from carebase.config import Settings
from carebase.store.factory import open_store

BENCH = Path(__file__).resolve().parent
#: Where the processes run: `pinned` gives the server (all its threads) CPU 0 and wrk CPU 1;
#: `shared` pins nothing, as a deployment would run (the server's threads and wrk share both).
PLACEMENTS = {"pinned": ("0", "1"), "shared": ("0,1", "0,1")}
BASE_URL = "http://bench.invalid/fhir"  # tokens' audience; the same for both apps


def seed(url: str, count: int) -> list[str]:
    """Store `count` copies of the sample Patient; returns their ids."""
    store = open_store(url, Settings())
    store.migrate()
    patient = sample_patient()
    ids = []
    try:
        for start in range(0, count, 500):
            with store.transaction() as tx:
                for _ in range(min(500, count - start)):
                    ids.append(tx.create("Patient", dict(patient)).id)
    finally:
        store.close()
    return ids


class App:
    """One of the two apps under uvicorn, pinned to the server CPU."""

    def __init__(
        self, factory: str, url: str, data_dir: Path, cpu: str, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, CAREBASE_DATABASE_URL=url, CAREBASE_DATA_DIR=str(data_dir),
                   CAREBASE_BASE_URL=BASE_URL, CAREBASE_AUTH_RATE_LIMIT="off",
                   **(env or {}))  # fmt: skip
        env["PYTHONPATH"] = os.pathsep.join([str(BENCH), env.get("PYTHONPATH", "")])
        cmd = ["taskset", "-c", cpu, sys.executable, "-m", "uvicorn",
               f"auth_apps:{factory}", "--factory", "--port", str(self.port),
               "--log-level", "warning", "--no-access-log"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/fhir/metadata", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{factory} did not start")

    def stop(self) -> None:
        terminate(self.proc, timeout=20)


def measure(backend: str, url: str, tmp: Path, args: argparse.Namespace) -> list[WrkResult]:
    """Every round of the four scenarios on one database."""
    ids = seed(url, args.patients)
    data_dir = tmp / f"data-{backend}"
    settings = Settings(data_dir=data_dir, base_url=BASE_URL)
    tokens = TokenService.from_settings(settings, ttl=3600)
    service, _ = tokens.issue(subject="bench", scopes=["system/*.rs"], kind="service",
                              role="service")  # fmt: skip
    own, _ = tokens.issue(subject="p", scopes=["patient/*.rs"], role="patient", patient=ids[0])
    many, one = LoadSpec("GET", "/fhir/Patient/", ids), LoadSpec("GET", "/fhir/Patient/", ids[:1])
    plan = {
        "open": [("many", many, None), ("one", one, None)],
        "secured": [("many", many, service), ("one", one, own)],
    }
    results: list[WrkResult] = []
    for _ in range(args.rounds):
        for placement in args.placements:
            for app_name, factory in (("open", "open_app"), ("secured", "secured_app")):
                loads = []
                for shape, spec, token in plan[app_name]:
                    label = "patient" if (app_name, shape) == ("secured", "one") else app_name
                    loads.append((f"{label}-{shape}-{backend}-{placement}", spec, token))
                results += serve_and_load(factory, url, data_dir, placement, loads, args)
    return results


def serve_and_load(
    factory: str,
    url: str,
    data_dir: Path,
    placement: str,
    loads: list[tuple[str, LoadSpec, str | None]],
    args: argparse.Namespace,
    env: dict[str, str] | None = None,
) -> list[WrkResult]:
    """Start the app `factory` at `placement`, run wrk for each (name, spec, token) of
    `loads` against it in turn (printing each result), and stop it."""
    server_cpu, client_cpu = PLACEMENTS[placement]
    app = App(factory, url, data_dir, server_cpu, env)
    results = []
    try:
        for name, spec, token in loads:
            r = run_wrk(name, app.base, spec, args.seconds, args.warmup, args.connections,
                        client_cpu, token, server_pid=app.proc.pid)  # fmt: skip
            print(r.line(), flush=True)
            results.append(r)
    finally:
        app.stop()
    return results


def load_arguments(parser: argparse.ArgumentParser, rounds: int, seconds: float,
                   warmup: float, backends: list[str]) -> None:  # fmt: skip
    """The options bench_auth and bench_auth_stages share (with their defaults)."""
    parser.add_argument("--quick", action="store_true", help="short rows, one round")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--seconds", type=float, default=seconds)
    parser.add_argument("--warmup", type=float, default=warmup)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "postgresql"],
                        default=backends)  # fmt: skip
    parser.add_argument("--write-docs", action="store_true", help="write docs even with --quick")


def publish(name: str, section: str, args: argparse.Namespace) -> None:
    """Print `section`, and make it section `name` of docs/benchmarks.md unless a quick run
    was not asked to (`--write-docs`)."""
    print(section)
    if not args.quick or args.write_docs:
        write_section(name, section)


def measure_backends(
    args: argparse.Namespace,
    measure_one: Callable[[str, str, Path, argparse.Namespace], list[WrkResult]],
    name: str,
) -> list[WrkResult]:
    """`measure_one(backend, url, tmp, args)` on each backend of `args`, in a temporary
    directory (SQLite) and a fresh PostgreSQL database named `carebase_{name}`."""
    if args.quick:
        args.rounds, args.seconds, args.warmup, args.patients = 1, 3.0, 1.0, 200
    results: list[WrkResult] = []
    with tempfile.TemporaryDirectory(prefix=f"carebase-{name}-") as tmp:
        if "sqlite" in args.backends:
            results += measure_one("sqlite", f"sqlite:///{tmp}/bench.db", Path(tmp), args)
        if "postgresql" in args.backends:
            url = fresh_postgres_database(f"carebase_{name.replace('-', '_')}")
            results += measure_one("postgresql", url, Path(tmp), args)
    return results


def markdown(results: list[WrkResult], args: argparse.Namespace) -> str:
    """The `auth` section of docs/benchmarks.md."""
    by: dict[str, list[WrkResult]] = {}
    for r in results:
        by.setdefault(r.name, []).append(r)

    def median(name: str, cpu: bool = False) -> float:
        runs = by.get(name, [])
        values = [(r.server_cpu_us or 0.0) if cpu else r.rps for r in runs]
        return statistics.median(values) if values else 0.0

    lines = [
        "## Security: authenticated and audited reads against open reads (HTTP)",
        "",
        f"Machine: {machine()}. Script: `bench/bench_auth.py`: {args.patients:,} Synthea-sized "
        "Patients per database; two uvicorn processes (one worker each) in turn, never at "
        f"once; wrk with {args.connections} connections, {args.warmup:g} s warm-up and "
        f"{args.seconds:g} s measured per row, {args.rounds} rounds alternating the apps; "
        "medians of the rounds. `open` is the same route handlers and hardening middleware "
        "with no authentication and no audit entry; `secured` is carebase as shipped: the "
        "bearer token verified (cached after the first RSA check), the access policy "
        "applied, each read written to the hash-chained audit trail (group commit every "
        f"{Settings().audit_flush_ms:g} ms) by the writer `CAREBASE_AUDIT_WRITER=auto` picks "
        "(a thread of the server where the server has one usable CPU; else a process of "
        "its own). Placement `pinned`: the server process, all its threads, on CPU 0 and "
        "wrk on CPU 1; `shared`: nothing pinned, as deployed (the audit writer process can "
        "use the other core, which wrk also needs). "
        "CPU is the user + system time "
        "per request while measured of the server process, all its threads and any audit "
        "writer process; "
        "`CPU open / secured` is the floor's ratio in CPU terms (what the throughput ratio "
        "is when the server's core is the bottleneck and nothing else runs on it).",
        "",
        "| database | reads | placement | open req/s | secured req/s | secured / open "
        "| CPU µs/req open → secured | CPU open / secured | rounds (secured) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for backend in ("sqlite", "postgresql"):
        for shape, label, secured in (
            ("many", "all Patients, `system/*.rs` token", "secured"),
            ("one", "one Patient, its own `patient/*.rs` token", "patient"),
        ):
            for placement in args.placements:
                o_name = f"open-{shape}-{backend}-{placement}"
                s_name = f"{secured}-{shape}-{backend}-{placement}"
                o, s = median(o_name), median(s_name)
                if not o:
                    continue
                o_cpu, s_cpu = median(o_name, True), median(s_name, True)
                cpu = f"{o_cpu:,.0f} → {s_cpu:,.0f}"
                cpu_ratio = f"{o_cpu / s_cpu:.2f}" if s_cpu else "-"
                runs = ", ".join(f"{r.rps:,.0f}" for r in by.get(s_name, []))
                lines.append(
                    f"| {backend} | {label} | {placement} | {o:,.0f} | {s:,.0f} | {s / o:.2f} "
                    f"| {cpu} | {cpu_ratio} | {runs} |"
                )
    errors = sum(r.errors for r in results)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += [
        "",
        f"Socket errors and non-2xx answers over all rows: {errors}. Load average (1, 5, 15 "
        f"min) at the end: {load} on {os.cpu_count()} cores: where other work shared the "
        "machine, the req/s columns measure its share as much as carebase (and `secured` "
        "with its audit writer process gets two shares of a contended core where `open` "
        "gets one), the CPU columns much less so.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    load_arguments(parser, rounds=3, seconds=10.0, warmup=3.0, backends=["sqlite", "postgresql"])
    parser.add_argument("--placements", nargs="+", choices=list(PLACEMENTS),
                        default=list(PLACEMENTS))  # fmt: skip
    args = parser.parse_args()
    publish("auth", markdown(measure_backends(args, measure, "auth-bench"), args), args)


if __name__ == "__main__":
    main()
