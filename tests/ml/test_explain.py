"""Explanations: additive contributions that add up, mapped back to the original features."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from carebase.ml.explain import (
    column_groups,
    explain,
    global_importance,
    predict_and_explain,
    sampled_shapley,
)
from carebase.ml.features import Dataset
from carebase.ml.training import TrainedModel


@pytest.fixture
def data(readmission: Dataset) -> Dataset:
    return readmission


@pytest.fixture
def models(trained: dict[str, TrainedModel]) -> dict[str, TrainedModel]:
    return trained


def raw(trained: TrainedModel, Z: np.ndarray) -> np.ndarray:
    return np.asarray(trained.pipeline.named_steps["model"].decision_function(Z))


def reference_row(trained: TrainedModel) -> np.ndarray:
    names = trained.pipeline.named_steps["preprocess"].get_feature_names_out()
    return np.array([[trained.reference[str(n)] for n in names]])


def transformed(trained: TrainedModel, row: object) -> np.ndarray:
    return np.asarray(trained.pipeline.named_steps["preprocess"].transform(row))


def test_linear_contributions_are_exact_and_add_up(
    models: dict[str, TrainedModel], data: Dataset
) -> None:
    model = models["logistic"]
    for i in (0, 5, 17):
        row = data.X.iloc[[i]]
        out = explain(model, row)
        assert [c.feature for c in out] and sorted(c.feature for c in out) == sorted(
            data.feature_names
        )
        assert [abs(c.contribution) for c in out] == sorted(
            (abs(c.contribution) for c in out), reverse=True
        )
        total = sum(c.contribution for c in out)
        expected = raw(model, transformed(model, row))[0] - raw(model, reference_row(model))[0]
        assert total == pytest.approx(expected, abs=1e-9)
        by_name = {c.feature: c for c in out}
        assert by_name["sex"].value == row.iloc[0]["sex"]


def test_one_hot_and_missing_indicator_columns_map_back(models: dict[str, TrainedModel]) -> None:
    groups = column_groups(models["logistic"])
    names = list(models["logistic"].pipeline.named_steps["preprocess"].get_feature_names_out())
    assert sorted(names[i] for i in groups["sex"]) == ["sex_female", "sex_male"]
    if "missingindicator_egfr_latest" in names:
        assert names.index("missingindicator_egfr_latest") in groups["egfr_latest"]
    assert sorted(i for g in groups.values() for i in g) == list(range(len(names)))


def test_hgb_with_shap_adds_up_to_the_expected_value(
    models: dict[str, TrainedModel], data: Dataset
) -> None:
    shap = pytest.importorskip("shap", reason="optional extra ml-shap not installed")
    model = models["hgb"]
    row = data.X.iloc[[3]]
    out = explain(model, row, method="shap")
    explainer = shap.TreeExplainer(model.pipeline.named_steps["model"])
    expected = raw(model, transformed(model, row))[0] - float(np.ravel(explainer.expected_value)[0])
    assert sum(c.contribution for c in out) == pytest.approx(expected, abs=1e-4)


def test_hgb_fallback_adds_up_to_the_reference(
    models: dict[str, TrainedModel], data: Dataset
) -> None:
    model = models["hgb"]
    row = data.X.iloc[[3]]
    out = explain(model, row, method="sampling")
    expected = raw(model, transformed(model, row))[0] - raw(model, reference_row(model))[0]
    assert sum(c.contribution for c in out) == pytest.approx(expected, abs=1e-9)


def test_auto_falls_back_to_sampling_without_shap(
    models: dict[str, TrainedModel], data: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "shap" else real_find_spec(name)
    )
    model = models["hgb"]
    row = data.X.iloc[[4]]
    assert explain(model, row) == explain(model, row, method="sampling")


def test_sampled_shapley_of_a_linear_model_is_the_exact_contribution(
    models: dict[str, TrainedModel], data: Dataset
) -> None:
    """For an additive model every ordering gives the same marginal effects, so the sampling
    estimator must reproduce coef x (z - reference) per feature."""
    model = models["logistic"]
    row = data.X.iloc[[8]]
    z, ref = transformed(model, row)[0], reference_row(model)[0]
    groups = column_groups(model)
    phi = sampled_shapley(
        model.pipeline.named_steps["model"], z, ref, list(groups.values()), orderings=4
    )
    exact = {c.feature: c.contribution for c in explain(model, row)}
    assert dict(zip(groups, phi, strict=True)) == pytest.approx(exact, abs=1e-9)


def test_global_importance_sorted(models: dict[str, TrainedModel], data: Dataset) -> None:
    for model in models.values():
        importance = global_importance(model)
        assert sorted(n for n, _ in importance) == sorted(model.feature_names)
        assert [abs(v) for _, v in importance] == sorted(
            (abs(v) for _, v in importance), reverse=True
        )


def test_explain_refuses_several_rows(models: dict[str, TrainedModel], data: Dataset) -> None:
    from carebase.errors import BadRequest

    with pytest.raises(BadRequest, match="one row"):
        explain(models["logistic"], data.X.iloc[:2])
    with pytest.raises(BadRequest, match="lacks features"):
        explain(models["logistic"], data.X.iloc[[0]].drop(columns=["age"]))


@pytest.mark.parametrize("model_type", ["logistic", "hgb"])
def test_predict_and_explain_gives_the_pipelines_prediction(
    models: dict[str, TrainedModel], data: Dataset, model_type: str
) -> None:
    model = models[model_type]
    for i in (0, 9):
        row = data.X.iloc[[i]]
        value, factors = predict_and_explain(model, row)
        assert value == pytest.approx(float(model.predict(row)[0]), abs=1e-12)
        assert factors == explain(model, row)
