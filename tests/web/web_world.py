"""A small world for the clinician app and portal tests: two synthetic patients (seed 5),
their organisations, and one user of each role; signing in over HTTP."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
from web_helpers import PASSWORD, post_login

from carebase.auth.users import UserDirectory
from carebase.data.synthetic.population import Population, load_into_store
from carebase.store.base import Store

SEED = 5


@dataclass(frozen=True)
class World:
    """Patient ids (first, second), their names, and the home organisation of the first."""

    first: str
    second: str
    first_name: str
    second_name: str
    organization: str


def build_world(store: Store, directory: UserDirectory) -> World:
    """Load two patients and add the users admin, doc (clinician of the first patient's
    organisation), nurse, desk (front desk) and pat (the first patient)."""
    population = Population(SEED)
    load_into_store(population, 2, store)
    first, second = population.ids.of("Patient", 0), population.ids.of("Patient", 1)
    read = store.read("Patient", first)
    assert read is not None and read.body is not None
    import orjson

    body = orjson.loads(read.body)
    organization = body["managingOrganization"]["reference"].split("/")[1]
    other = store.read("Patient", second)
    assert other is not None and other.body is not None
    names = [_name(body), _name(orjson.loads(other.body))]
    directory.add("admin", "admin", PASSWORD, name="Ada Admin")
    directory.add("doc", "clinician", PASSWORD, name="Dr Doc", organization=organization)
    directory.add("nurse", "nurse", PASSWORD, name="Nora Nurse")
    directory.add("desk", "front-desk", PASSWORD, name="Dee Desk")
    directory.add("pat", "patient", PASSWORD, patient=first)
    return World(first, second, names[0], names[1], organization)


def _name(patient: dict[str, object]) -> str:
    name = patient["name"][0]  # type: ignore[index]
    return f"{' '.join(name['given'])} {name['family']}"


async def sign_in(client: httpx.AsyncClient, username: str) -> None:
    """Sign `username` in (password only), as a fresh browser (no earlier cookies)."""
    client.cookies.clear()
    response = await post_login(client, username, PASSWORD)
    assert response.status_code == 303, response.text


def csrf(html: str) -> str:
    """The CSRF token of a page's forms."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def errors(html: str) -> list[str]:
    """The error messages shown on a page."""
    return re.findall(r'class="error"[^>]*>([^<]*)<', html)
