"""Shared ML fixtures: a small synthetic population generated once per session, its
feature tables, and models trained on them once."""

from __future__ import annotations

from typing import Any

import pytest
from ml_helpers import Resources

from carebase.data.synthetic.population import Population
from carebase.ml.features import Dataset, build_dataset
from carebase.ml.tasks import load_task
from carebase.ml.training import TrainedModel, train

SEED = 11
PATIENTS = 150


@pytest.fixture(scope="session")
def population() -> Resources:
    """(patient id, resources) of PATIENTS synthetic patients (about 15 s to generate)."""
    return [(r[0]["id"], r) for _, r in Population(SEED).patients(PATIENTS)]


@pytest.fixture(scope="session")
def readmission(population: Resources) -> Dataset:
    """The readmission_30d table of the session population."""
    return build_dataset(load_task("readmission_30d"), population)


@pytest.fixture(scope="session")
def hba1c(population: Resources) -> Dataset:
    """The next_hba1c table of the session population."""
    return build_dataset(load_task("next_hba1c"), population)


@pytest.fixture(scope="session")
def trained(readmission: Dataset, hba1c: Dataset) -> dict[str, TrainedModel]:
    """Models trained once per session (3 folds and 30 bootstrap rounds keep it short)."""
    opts: dict[str, Any] = {"folds": 3, "bootstrap_rounds": 30}
    return {
        "logistic": train(load_task("readmission_30d"), readmission, "logistic", **opts),
        "hgb": train(load_task("readmission_30d"), readmission, "hgb", **opts),
        "linear": train(load_task("next_hba1c"), hba1c, "linear", **opts),
    }
