"""A real trained model and real patients for the ML tests (importable by any test module).

The model is trained once per test session, by mlcore's own code, on synthetic patients
(`data.synthetic`): no stand-in models anywhere.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from carebase.data.synthetic.population import Population, load_into_store
from carebase.store.base import Store

TASK = "readmission_30d"
#: Patients generated for training (the synthetic population's seed 5).
TRAINING_PATIENTS = 250
SEED = 5


@cache
def population() -> Population:
    return Population(SEED)


@cache
def patients(count: int = TRAINING_PATIENTS) -> tuple[tuple[str, list[dict[str, Any]]], ...]:
    """(id, resources) of the first `count` patients of the population."""
    return tuple((res[0]["id"], res) for _, res in population().patients(count))


@cache
def trained_model(model: str = "logistic") -> Any:
    """A model of TASK trained on the population (once per session and model type)."""
    from carebase.ml.features import build_dataset
    from carebase.ml.tasks import load_task
    from carebase.ml.training import train

    task = load_task(TASK)
    return train(task, build_dataset(task, list(patients())), model, seed=0)  # type: ignore[arg-type]


def load_patients(store: Store, count: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """Store the first `count` patients of the population (and the staff they reference)."""
    load_into_store(population(), count, store)
    return list(patients()[:count])
