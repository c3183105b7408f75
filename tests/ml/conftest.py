"""Shared ML fixtures: the session's synthetic patients, their feature tables and models
trained on them once (`ml_serving_data`, shared with the api and cli tests)."""

from __future__ import annotations

import pytest
from ml_helpers import Resources

import ml_serving_data
from carebase.ml.features import Dataset
from carebase.ml.training import TrainedModel


@pytest.fixture(scope="session")
def population() -> Resources:
    """(patient id, resources) of the session's synthetic patients."""
    return list(ml_serving_data.patients())


@pytest.fixture(scope="session")
def readmission() -> Dataset:
    """The readmission_30d table of the session population."""
    return ml_serving_data.dataset("readmission_30d")  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def hba1c() -> Dataset:
    """The next_hba1c table of the session population."""
    return ml_serving_data.dataset("next_hba1c")  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def trained() -> dict[str, TrainedModel]:
    """Models trained once per session (3 folds and 30 bootstrap rounds keep it short)."""
    return {
        "logistic": ml_serving_data.trained_model("logistic"),
        "hgb": ml_serving_data.trained_model("hgb"),
        "linear": ml_serving_data.trained_model("linear", "next_hba1c"),
    }
