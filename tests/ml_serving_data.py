"""Real patients, feature tables and trained models for the ML tests (importable by any test
module), each made once per test session and shared by the ml, api and cli tests.

The models are trained by the ml package's own code on synthetic patients
(`data.synthetic`): no stand-in models anywhere.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson

from carebase.data.loader import Origin, ResourceLoader
from carebase.data.synthetic.population import Population
from carebase.store.base import Store

TASK = "readmission_30d"
#: Patients generated (the synthetic population's seed 11); generating one costs ~10-90 ms
#: depending on the machine's load, so every ML test draws on these.
TRAINING_PATIENTS = 150
SEED = 11


@cache
def population() -> Population:
    return Population(SEED)


@cache
def patients(count: int = TRAINING_PATIENTS) -> tuple[tuple[str, list[dict[str, Any]]], ...]:
    """(id, resources) of the first `count` patients of the population."""
    if count < TRAINING_PATIENTS:  # a prefix: patient n is the same whatever the count
        return patients()[:count]
    return tuple((res[0]["id"], res) for _, res in population().patients(count))


@cache
def dataset(task: str = TASK) -> Any:
    """The feature table of a shipped task over the patients (per-patient path)."""
    from carebase.ml.features import build_dataset
    from carebase.ml.tasks import load_task

    return build_dataset(load_task(task), list(patients()))


@cache
def trained_model(model: str = "logistic", task: str = TASK) -> Any:
    """A model of `task` trained on the patients (once per session, task and model type).
    3 folds and 30 bootstrap rounds: every metric and interval is there, at a fraction of
    the default cost."""
    from carebase.ml.tasks import load_task
    from carebase.ml.training import train

    return train(load_task(task), dataset(task), model, seed=0, folds=3, bootstrap_rounds=30)  # type: ignore[arg-type]


@cache
def baseline_report() -> dict[str, Any]:
    """`run_baselines()` once per session (the ml tests and the CLI's `--json` share it)."""
    from carebase.ml.baselines import run_baselines

    return run_baselines()


def load_patients(store: Store, count: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """Store the first `count` patients (copies) and the staff they reference."""
    loader = ResourceLoader(store)
    for resource in population().shared():
        loader.add(resource, Origin("generated", "organisations and practitioners"))
    chosen = list(patients()[:count])
    for number, (_pid, resources) in enumerate(chosen):
        for resource in orjson.loads(orjson.dumps(resources)):
            loader.add(resource, Origin("generated", f"patient {number}"))
    loader.finish()
    return chosen
