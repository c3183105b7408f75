"""A generated population shared by the synthetic-data tests (generated once per session)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from carebase.data.synthetic.population import Population

SEED = 11
PATIENTS = 300  # enough incident diabetics and admissions for the coherence checks


@pytest.fixture(scope="session")
def population() -> Population:
    """The population of the tests' seed."""
    return Population(SEED)


@pytest.fixture(scope="session")
def records(population: Population) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Patient id -> resource type -> that patient's resources, for PATIENTS patients."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for _number, resources in population.patients(PATIENTS):
        by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for resource in resources:
            by_type[resource["resourceType"]].append(resource)
        out[by_type["Patient"][0]["id"]] = by_type
    return out
