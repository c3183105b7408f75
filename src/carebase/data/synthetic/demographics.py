"""People and places of the synthetic population: names, addresses, phones, birth dates,
and the fixed set of organisations and practitioners every patient is cared for by.

Small in-project name lists instead of Faker: they are deterministic under a seeded
`random.Random`, need no dependency, and cost microseconds per patient (see
docs/data/synthetic-population.md for why Faker and the other PyPI generators were not used).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

FEMALE_GIVEN = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah",
    "Karen", "Lisa", "Nancy", "Betty", "Sandra", "Margaret", "Ashley", "Kimberly", "Emily",
    "Donna", "Michelle", "Carol", "Amanda", "Melissa", "Deborah", "Stephanie", "Maria", "Rosa",
    "Aisha", "Mei", "Priya", "Fatima", "Ana", "Grace", "Chloe", "Olivia", "Hannah", "Ruth",
)  # fmt: skip
MALE_GIVEN = (
    "James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas",
    "Charles", "Christopher", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven", "Paul",
    "Andrew", "Joshua", "Kenneth", "Kevin", "Brian", "George", "Timothy", "Jose", "Luis",
    "Omar", "Wei", "Raj", "Ahmed", "Carlos", "Samuel", "Henry", "Jack", "Noah", "Ethan",
)  # fmt: skip
FAMILY = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall",
    "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Chen", "Patel", "Kim", "Okafor",
)  # fmt: skip
STREETS = (
    "Maple", "Oak", "Pine", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park", "Main",
    "Church", "Highland", "Sunset", "River", "Spring", "Meadow", "Forest", "Chestnut", "Walnut",
)  # fmt: skip
STREET_KINDS = ("Street", "Avenue", "Road", "Lane", "Drive", "Court", "Way")
# Fictional towns of one fictional county, with ZIP codes in the reserved-looking 0xxxx range.
TOWNS = (
    ("Riverton", "01801"), ("Fairview", "01802"), ("Millbrook", "01803"), ("Ashford", "01804"),
    ("Lakeside", "01805"), ("Brookfield", "01806"), ("Greenwood", "01807"), ("Oakdale", "01808"),
)  # fmt: skip
STATE = "MA"
COUNTRY = "US"


@dataclass(frozen=True, slots=True)
class Person:
    """Who a patient is: the parts of the Patient resource that do not change."""

    given: str
    family: str
    sex: str  # "female" or "male" (administrative gender)
    birth_date: date
    line: str
    city: str
    postal_code: str
    phone: str
    mrn: str


def draw_person(rng: random.Random, number: int, start: date) -> Person:
    """A person aged 18 to 85 on `start` (the first day of the records); `number` makes the
    MRN unique within the population."""
    sex = "female" if rng.random() < 0.51 else "male"
    given = rng.choice(FEMALE_GIVEN if sex == "female" else MALE_GIVEN)
    # Adults only: ages skewed towards middle age, as in a primary-care list.
    age_days = int(rng.triangular(18, 85, 45) * 365.25)
    birth = start - timedelta(days=age_days)
    town, postal_code = rng.choice(TOWNS)
    line = f"{rng.randint(1, 999)} {rng.choice(STREETS)} {rng.choice(STREET_KINDS)}"
    # 555-01xx numbers are reserved for fiction in the North American numbering plan.
    phone = f"{rng.randint(201, 989)}-555-01{rng.randint(0, 99):02d}"
    return Person(
        given=given,
        family=rng.choice(FAMILY),
        sex=sex,
        birth_date=birth,
        line=line,
        city=town,
        postal_code=postal_code,
        phone=phone,
        mrn=f"M{number + 1:08d}",
    )


@dataclass(frozen=True, slots=True)
class Site:
    """A clinic or hospital of the synthetic health system."""

    key: str
    name: str
    kind: str  # "prov" (healthcare provider)
    city: str
    postal_code: str
    hospital: bool


SITES = (
    Site("riverton-general", "Riverton General Hospital", "prov", "Riverton", "01801", True),
    Site("fairview-family", "Fairview Family Practice", "prov", "Fairview", "01802", False),
    Site("millbrook-health", "Millbrook Community Health Center", "prov", "Millbrook", "01803",
         False),
    Site("lakeside-clinic", "Lakeside Primary Care Clinic", "prov", "Lakeside", "01805", False),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Clinician:
    """A practitioner: a name, a qualification and an NPI-style number."""

    key: str
    given: str
    family: str
    sex: str
    npi: str
    qualification: str  # "MD" or "RN"
    site: str  # the key of the Site they work at


def npi_check_digit(first9: str) -> str:
    """The Luhn check digit of an NPI (computed over the prefix 80840 and the 9 digits)."""
    digits = [int(c) for c in "80840" + first9]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:  # every second digit from the right, starting with the rightmost
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def clinicians(seed: int) -> list[Clinician]:
    """The fixed staff of the health system: per site three doctors and two nurses."""
    rng = random.Random(f"carebase-staff:{seed}")
    staff: list[Clinician] = []
    for site in SITES:
        for k, qualification in enumerate(("MD", "MD", "MD", "RN", "RN")):
            sex = rng.choice(("female", "male"))
            first9 = f"1{rng.randint(0, 99_999_999):08d}"
            staff.append(
                Clinician(
                    key=f"{site.key}-{k}",
                    given=rng.choice(FEMALE_GIVEN if sex == "female" else MALE_GIVEN),
                    family=rng.choice(FAMILY),
                    sex=sex,
                    npi=first9 + npi_check_digit(first9),
                    qualification=qualification,
                    site=site.key,
                )
            )
    return staff
