"""The clinician chart of a big record: server time to render the chart of a patient with
500 encounters and 10,000 observations (floor: median < 300 ms).

The patient: 500 encounters over 20 years, 10,000 observations (vital signs as blood
pressure panels, heart rate, weight, BMI; labs with reference ranges: HbA1c, glucose,
creatinine, LDL, HDL), 40 conditions, 30 medication requests, 25 immunizations, 200 notes,
5 allergies, in a SQLite and (with --postgres URL) a PostgreSQL store. The timing is the
whole request through the app in-process over ASGI (no sockets): session lookup, the
access policy, every chart search, the SVG trends, the template, and the audit entry (to a
memory trail); --requests requests after 3 warm-up requests, median and p95. The search
page and the all-encounters page are timed the same way. PostgreSQL is ANALYZEd after the
load (as autovacuum would do soon after).

Usage: python bench/bench_web.py [--requests 30] [--postgres URL] [--no-docs]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from report import machine, postgres_schema, write_section

ENCOUNTERS, OBSERVATIONS, FLOOR_MS = 500, 10_000, 300.0
PASSWORD = "correct horse battery"
LOINC, UCUM = "http://loinc.org", "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
#: code, display, unit, low, high, mean, spread, category
MEASURES = [
    ("8867-4", "Heart rate", "/min", 60, 100, 74, 9, "vital-signs"),
    ("29463-7", "Body weight", "kg", None, None, 82, 6, "vital-signs"),
    ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 18.5, 25, 28, 3, "vital-signs"),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.0, 5.6, 6.1, 0.8, "laboratory"),
    (
        "1558-6",
        "Fasting glucose [Mass/volume] in Serum or Plasma",
        "mg/dL",
        70,
        99,
        110,
        18,
        "laboratory",
    ),
    (
        "2160-0",
        "Creatinine [Mass/volume] in Serum or Plasma",
        "mg/dL",
        0.6,
        1.2,
        1.0,
        0.2,
        "laboratory",
    ),
    (
        "13457-7",
        "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
        "mg/dL",
        None,
        130,
        125,
        25,
        "laboratory",
    ),
    (
        "2085-9",
        "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
        "mg/dL",
        40,
        None,
        45,
        8,
        "laboratory",
    ),
]


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": round(value, 1), "unit": unit, "system": UCUM, "code": unit}


def big_record(patient_id: str, seed: int = 1) -> list[dict[str, Any]]:
    """The resources of the big record (Patient first)."""
    rng = random.Random(seed)
    subject = {"reference": f"Patient/{patient_id}"}
    start = datetime(2006, 1, 1, tzinfo=UTC)
    out: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": patient_id,
            "active": True,
            "identifier": [
                {
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                "code": "MR",
                            }
                        ]
                    },
                    "system": "urn:bench",
                    "value": "B0000001",
                }
            ],
            "name": [{"family": "Bigrecord", "given": ["Bea"]}],
            "gender": "female",
            "birthDate": "1950-06-01",
        }
    ]
    visits = sorted(start + timedelta(days=rng.uniform(0, 7300)) for _ in range(ENCOUNTERS))
    for n, when in enumerate(visits):
        out.append(
            {
                "resourceType": "Encounter",
                "id": f"{patient_id}-e{n}",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                },
                "type": [{"text": "Follow-up encounter"}],
                "subject": subject,
                "period": {
                    "start": when.isoformat(),
                    "end": (when + timedelta(minutes=30)).isoformat(),
                },
                "reasonCode": [{"text": "Essential hypertension"}],
            }
        )
    count = 0
    while count < OBSERVATIONS:
        visit = rng.randrange(ENCOUNTERS)
        when = visits[visit].isoformat()
        encounter = {"reference": f"Encounter/{patient_id}-e{visit}"}
        if count % 5 == 0:
            out.append(
                {
                    "resourceType": "Observation",
                    "id": f"{patient_id}-o{count}",
                    "status": "final",
                    "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}],
                    "code": {
                        "coding": [
                            {"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}
                        ],
                        "text": "Blood pressure",
                    },
                    "subject": subject,
                    "encounter": encounter,
                    "effectiveDateTime": when,
                    "component": [
                        {
                            "code": {
                                "coding": [
                                    {
                                        "system": LOINC,
                                        "code": "8480-6",
                                        "display": "Systolic blood pressure",
                                    }
                                ]
                            },
                            "valueQuantity": _quantity(rng.gauss(135, 14), "mm[Hg]"),
                        },
                        {
                            "code": {
                                "coding": [
                                    {
                                        "system": LOINC,
                                        "code": "8462-4",
                                        "display": "Diastolic blood pressure",
                                    }
                                ]
                            },
                            "valueQuantity": _quantity(rng.gauss(84, 9), "mm[Hg]"),
                        },
                    ],
                }
            )
        else:
            code, display, unit, low, high, mean, spread, category = rng.choice(MEASURES)
            obs: dict[str, Any] = {
                "resourceType": "Observation",
                "id": f"{patient_id}-o{count}",
                "status": "final",
                "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
                "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
                "subject": subject,
                "encounter": encounter,
                "effectiveDateTime": when,
                "valueQuantity": _quantity(rng.gauss(mean, spread), unit),
            }
            if low is not None or high is not None:
                obs["referenceRange"] = [
                    {
                        **({"low": _quantity(low, unit)} if low is not None else {}),
                        **({"high": _quantity(high, unit)} if high is not None else {}),
                    }
                ]
            out.append(obs)
        count += 1
    for n in range(40):
        out.append(
            {
                "resourceType": "Condition",
                "id": f"{patient_id}-c{n}",
                "subject": subject,
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active" if n % 2 else "resolved",
                        }
                    ]
                },
                "code": {
                    "coding": [
                        {
                            "system": "http://hl7.org/fhir/sid/icd-10-cm",
                            "code": "I10",
                            "display": "Essential (primary) hypertension",
                        }
                    ]
                },
                "recordedDate": visits[n * 10].isoformat(),
            }
        )
    for n in range(30):
        out.append(
            {
                "resourceType": "MedicationRequest",
                "id": f"{patient_id}-m{n}",
                "intent": "order",
                "status": "active" if n % 3 == 0 else "stopped",
                "subject": subject,
                "medicationCodeableConcept": {"text": f"Medication {n} 10 MG Oral Tablet"},
                "authoredOn": visits[n * 15].isoformat(),
                "dosageInstruction": [{"text": "Take 1 tablet by mouth once daily"}],
            }
        )
    for n in range(25):
        out.append(
            {
                "resourceType": "Immunization",
                "id": f"{patient_id}-i{n}",
                "status": "completed",
                "vaccineCode": {"text": "Influenza, seasonal, injectable"},
                "patient": subject,
                "occurrenceDateTime": visits[n * 19].isoformat(),
            }
        )
    for n in range(200):
        out.append(
            {
                "resourceType": "DocumentReference",
                "id": f"{patient_id}-d{n}",
                "status": "current",
                "subject": subject,
                "type": {"text": "Progress note"},
                "date": visits[n * 2].isoformat(),
                "content": [
                    {"attachment": {"contentType": "text/plain", "data": "Tm90ZSB0ZXh0Lg=="}}
                ],
            }
        )
    for n in range(5):
        out.append(
            {
                "resourceType": "AllergyIntolerance",
                "id": f"{patient_id}-a{n}",
                "patient": subject,
                "code": {"text": f"Allergen {n}"},
                "criticality": "low",
            }
        )
    return out


def load(store: Any, resources: list[dict[str, Any]]) -> None:
    """Store the record (ids as given) in batches."""
    for offset in range(0, len(resources), 500):
        with store.transaction() as tx:
            for resource in resources[offset : offset + 500]:
                tx.update(resource["resourceType"], resource["id"], resource)


async def time_pages(app: Any, patient_id: str, requests: int) -> dict[str, list[float]]:
    """Milliseconds per request for the chart, the search and the encounters pages."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        page = await client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        signed = await client.post(
            "/login",
            data={"csrf_token": token, "next": "/", "username": "bench", "password": PASSWORD},
        )
        assert signed.status_code == 303, signed.text
        paths = {
            "chart": f"/app/patients/{patient_id}",
            "search": "/app/search?q=Bigrecord",
            "encounters": f"/app/patients/{patient_id}/encounters",
        }
        times: dict[str, list[float]] = {}
        for name, path in paths.items():
            for _ in range(3):
                response = await client.get(path)
                assert response.status_code == 200, (path, response.text[:500])
            samples = []
            for _ in range(requests):
                started = time.perf_counter()
                response = await client.get(path)
                samples.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
            times[name] = samples
        chart = (await client.get(paths["chart"])).text
        assert "Encounters" in chart and "(500)" in chart and 'id="trend-bp"' in chart
        found = (await client.get(paths["search"])).text
        assert f"/app/patients/{patient_id}" in found, found
        listed = (await client.get(paths["encounters"])).text
        assert listed.count("<time>") == 50, listed
        return times


def run(url: str, requests: int, data_dir: Path) -> dict[str, list[float]]:
    """Build the record in the store at `url` and time the pages."""
    from carebase.api.app import create_app
    from carebase.auth.audit_entry import MemoryAuditTrail
    from carebase.auth.keys import KeyRing
    from carebase.auth.passwords import Passwords
    from carebase.auth.users import UserDirectory
    from carebase.config import Settings
    from carebase.store.factory import open_store

    store = open_store(url)
    store.migrate()
    patient_id = "bench-big-record"
    started = time.perf_counter()
    load(store, big_record(patient_id))
    print(f"  loaded the record in {time.perf_counter() - started:.1f} s")
    if store.dialect == "postgresql":
        # Fresh tables have no statistics until autovacuum gets to them; without them the
        # planner walks the whole date index for a sorted search (seconds, not ms).
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
    keys = data_dir / "keys"
    if not keys.exists():
        KeyRing.open(keys)
    settings = Settings(data_dir=data_dir, base_url="http://bench/fhir")
    app = create_app(settings, store, audit=MemoryAuditTrail())
    fast = Passwords(time_cost=1, memory_cost_kib=8, parallelism=1)
    directory = app.state.user_directory = UserDirectory(store, passwords=fast)
    if directory.get("bench") is None:
        directory.add("bench", "clinician", PASSWORD, name="Bench")
    try:
        return asyncio.run(time_pages(app, patient_id, requests))
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--postgres", default=os.environ.get("CAREBASE_BENCH_POSTGRES_URL"))
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        print("SQLite")
        results["SQLite"] = run(f"sqlite:///{tmp}/bench.db", args.requests, Path(tmp) / "data")
        if args.postgres:
            print("PostgreSQL")
            with postgres_schema(args.postgres, "bench_web") as url:
                results["PostgreSQL"] = run(url, args.requests, Path(tmp) / "data")
    load_avg = os.getloadavg()[0]
    lines = [
        "## Clinician chart of a big record (`bench/bench_web.py`)",
        "",
        f"Machine: {machine()}. Load average at the end: {load_avg:.1f} on {os.cpu_count()} cores.",
        f"One patient with {ENCOUNTERS} encounters and {OBSERVATIONS:,} observations (plus 40 "
        "conditions, 30 medication requests, 25 immunizations, 200 notes, 5 allergies); "
        f"{args.requests} requests per page after 3 warm-up requests, whole request in-process "
        "over ASGI (session, access policy, searches, SVG trends, template, audit entry to a "
        "memory trail), signed in as a clinician.",
        "",
        "| store | page | median ms | p95 ms | floor | met |",
        "|---|---|---:|---:|---|---|",
    ]
    for store, pages in results.items():
        for name, samples in pages.items():
            median = statistics.median(samples)
            p95 = sorted(samples)[max(int(len(samples) * 0.95) - 1, 0)]
            if name == "chart":
                met = "yes" if median < FLOOR_MS else "**no**"
                lines.append(f"| {store} | {name} | {median:.1f} | {p95:.1f} | < 300 ms | {met} |")
            else:
                lines.append(f"| {store} | {name} | {median:.1f} | {p95:.1f} | | |")
    text = "\n".join(lines)
    print(text)
    if not args.no_docs:
        write_section("web", text)


if __name__ == "__main__":
    main()
