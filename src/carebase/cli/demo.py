"""`carebase demo`: build the demo data set once, load it, create one login per role, and
serve (what `make demo` runs). For a local demo only: it prints the demo passwords."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from carebase.auth.users import UserDirectory
from carebase.cli.generate import PatientsOption, SeedOption, describe_load, patient_progress
from carebase.cli.options import DatabaseOption, friendly_errors, settings_for
from carebase.cli.serve import run_server
from carebase.cli.users import report_console
from carebase.data.loader import LoadSummary, Origin, ResourceLoader
from carebase.data.synthetic.population import GENERATOR_VERSION, Population, write_ndjson
from carebase.fhir import json_io
from carebase.store.base import Store
from carebase.store.factory import open_store

MARKER = "population.json"
PASSWORDS = "users.json"
#: Says which database the cached population was fully loaded into (its URL's SHA-256).
LOADED = "loaded.json"
# Shared resources first, so a reader of a half-loaded database finds what patients cite.
LOAD_ORDER = ("Organization", "Practitioner", "Patient", "Encounter")
# (username, role, practitioner key, works at the patients' clinic)
DEMO_USERS = (
    ("demo-admin", "admin", None),
    ("demo-clinician", "clinician", "fairview-family-0"),
    ("demo-nurse", "nurse", "fairview-family-3"),
    ("demo-frontdesk", "front-desk", None),
    ("demo-patient", "patient", None),
    ("demo-researcher", "researcher", None),
)
DEMO_CLINIC = "fairview-family"


def ensure_population(directory: Path, patients: int, seed: int, console: Console) -> bool:
    """Generate the demo NDJSON into `directory` unless it already holds this (patients,
    seed, generator version); True when it was (re)generated."""
    wanted = {"patients": patients, "seed": seed, "generator": GENERATOR_VERSION}
    marker = directory / MARKER
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text())
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, dict) and {k: recorded.get(k) for k in wanted} == wanted:
            return False
    if directory.exists():
        shutil.rmtree(directory)
    building = directory.with_name(directory.name + ".building")
    if building.exists():
        shutil.rmtree(building)
    with patient_progress(console, patients, "Generating demo patients") as advance:
        counts = write_ndjson(Population(seed), patients, building, on_patient=advance)
    # The marker is written last and the directory renamed into place: an interrupted run
    # never leaves a cache that looks complete.
    (building / MARKER).write_text(json.dumps({**wanted, "resources": counts}, indent=2))
    building.rename(directory)
    return True


def _ndjson_records(directory: Path) -> Iterator[tuple[Any, Origin]]:
    files = sorted(directory.glob("*.ndjson"))
    rank = {type_: i for i, type_ in enumerate(LOAD_ORDER)}
    files.sort(key=lambda f: (rank.get(f.stem, len(rank)), f.stem))
    for path in files:
        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield json_io.loads(line), Origin(str(path), f"line {number}")


def load_population(directory: Path, store: Store, console: Console) -> LoadSummary:
    """Load the cached NDJSON (resources whose content is unchanged are skipped)."""
    counts = json.loads((directory / MARKER).read_text()).get("resources", {})
    with Progress(
        TextColumn("Loading demo data"), BarColumn(), MofNCompleteColumn(), console=console
    ) as progress:
        task = progress.add_task("load", total=sum(counts.values()) or None)
        loader = ResourceLoader(
            store, on_batch=lambda batch: progress.advance(task, _batch_size(batch))
        )
        for resource, origin in _ndjson_records(directory):
            loader.add(resource, origin)
        return loader.finish()


def _load_record(directory: Path, url: str) -> dict[str, Any]:
    population = json.loads((directory / MARKER).read_text())
    return {"database": hashlib.sha256(url.encode()).hexdigest(), "population": population}


def already_loaded(cache: Path, url: str, store: Store, patients: int) -> bool:
    """Whether the cached population was fully loaded into this database before (and its
    patients are still there), so a restart need not check every resource again."""
    try:
        recorded = json.loads((cache / LOADED).read_text())
    except (OSError, ValueError):
        return False
    if recorded != _load_record(cache / "population", url):
        return False
    return (store.search("Patient", [], count=1).total or 0) >= patients


def note_loaded(cache: Path, url: str) -> None:
    """Record that the cached population is fully loaded into the database at `url`."""
    (cache / LOADED).write_text(json.dumps(_load_record(cache / "population", url)))


def _batch_size(batch: LoadSummary) -> int:
    return batch.created + batch.updated + batch.unchanged + batch.rejected


def demo_patient(population: Population, patients: int) -> int:
    """The demo patient: the first living patient of the demo clinic with a few visits."""
    for number in range(patients):
        timeline = population.timeline(number)
        if (
            timeline.home_site == DEMO_CLINIC
            and timeline.death is None
            and len(timeline.visits) >= 5
        ):
            return number
    return 0


def ensure_users(
    store: Store, population: Population, patient_number: int, passwords_file: Path
) -> list[tuple[str, str, str, str]]:
    """Create the demo users that do not exist yet; (username, role, fhirUser, password)
    for each, the password being "(unchanged)" when it is not known to this demo."""
    known: dict[str, str] = {}
    if passwords_file.is_file():
        known = json.loads(passwords_file.read_text())
    directory = UserDirectory(store)
    rows = []
    for username, role, practitioner_key in DEMO_USERS:
        user = directory.get(username)
        if user is None:
            password = secrets.token_urlsafe(12)
            user = directory.add(
                username,
                role,
                password,
                patient=population.ids.of("Patient", patient_number) if role == "patient" else None,
                practitioner=(
                    population.ids.of("Practitioner", practitioner_key)
                    if practitioner_key
                    else None
                ),
                organization=(
                    population.ids.of("Organization", DEMO_CLINIC) if practitioner_key else None
                ),
                name=f"Demo {role.replace('-', ' ')}",
            )
            known[username] = password
        rows.append((username, role, user.fhir_user or "", known.get(username, "(unchanged)")))
    # Created owner-only from the start (not chmod-ed afterwards): it holds passwords.
    fd = os.open(passwords_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(known, indent=2))
    return rows


def _print_welcome(console: Console, url: str, users: list[tuple[str, str, str, str]]) -> None:
    table = Table("username", "role", "fhirUser", "password", title="Demo logins")
    for username, role, fhir_user, password in users:
        table.add_row(username, role, escape(fhir_user), escape(password))
    console.print(table)
    console.print(
        "[bold yellow]These passwords are for a LOCAL DEMO only[/bold yellow] (kept in the "
        "data directory's demo/users.json); never use the demo users on a real server.\n"
        f"FHIR API: {url}/fhir   clinician app: {url}/app   patient portal: {url}/portal   "
        f"sign in: {url}/login   "
        f"(the data is synthetic: generated people, not real patients)"
    )


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command()
    def demo(
        patients: PatientsOption = 1000,
        seed: SeedOption = 1,
        database: DatabaseOption = None,
        host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
        serve: Annotated[
            bool, typer.Option("--serve/--no-serve", help="Serve once the data is ready.")
        ] = True,
        reload: Annotated[
            bool,
            typer.Option(
                "--reload", help="Load the cached population again even if it was loaded."
            ),
        ] = False,
    ) -> None:
        """Build the demo: a synthetic population (generated once, cached in the data
        directory), loaded into the database, with one login per role; then serve."""
        console = report_console()
        settings = settings_for(database, host=host, port=port)
        url = settings.resolved_database_url
        cache = settings.data_dir / "demo"
        population = Population(seed)
        with friendly_errors(url):
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            if ensure_population(cache / "population", patients, seed, console):
                console.print(f"Generated {patients:,} demo patients (seed {seed}) in {cache}.")
            else:
                console.print(f"Using the demo patients cached in {cache}.")
            store = open_store(url, settings)
            try:
                store.migrate()
                if not reload and already_loaded(cache, url, store, patients):
                    console.print(
                        "Demo data already loaded into this database (--reload checks every "
                        "resource again)."
                    )
                else:
                    (cache / LOADED).unlink(missing_ok=True)
                    summary = load_population(cache / "population", store, console)
                    console.print(f"Demo data loaded: {describe_load(summary)}.")
                    if summary.rejected == 0:
                        note_loaded(cache, url)
                users = ensure_users(
                    store, population, demo_patient(population, patients), cache / PASSWORDS
                )
            finally:
                store.close()
        _print_welcome(console, f"http://{host}:{port}", users)
        if serve:
            run_server(settings)
