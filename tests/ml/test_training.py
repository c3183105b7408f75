"""Training: pipelines fitted on training rows only, imbalance handled, metrics complete."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from carebase.errors import BadRequest
from carebase.ml import evaluation
from carebase.ml.features import Dataset
from carebase.ml.tasks import load_task
from carebase.ml.training import TrainedModel, build_pipeline, fingerprint, train


def test_classifier_metrics_are_complete(trained: dict[str, TrainedModel]) -> None:
    m = trained["logistic"].metrics
    assert m["n_train"] + m["n_test"] == m["n_rows"] and m["class_weight"] == "balanced"
    assert len(m["cv"]["per_fold"]) == 3 and 0 <= m["cv"]["mean"]["auroc"] <= 1
    held = m["held_out"]
    for key in (
        "auroc",
        "auprc",
        "brier",
        "calibration_slope",
        "calibration_intercept",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
    ):
        assert key in held["metrics"]
    low, high = held["intervals"]["auroc"]
    assert low <= held["metrics"]["auroc"] <= high
    assert held["calibration"] and held["decision_curve"][0]["threshold"] == 0.05
    assert {"sex", "age_band"} <= set(held["subgroups"])
    assert "auroc" in held["subgroups"]["sex"]["largest_gap"]


def test_regression_metrics_and_learnable_target(trained: dict[str, TrainedModel]) -> None:
    held = trained["linear"].metrics["held_out"]["metrics"]
    assert set(held) >= {"r2", "mae", "rmse"}
    # the next HbA1c follows the current one closely in the synthetic physiology
    assert held["r2"] > 0.5


def test_imbalance_handled_by_class_weight(trained: dict[str, TrainedModel]) -> None:
    assert trained["logistic"].pipeline.named_steps["model"].class_weight == "balanced"
    assert trained["hgb"].pipeline.named_steps["model"].class_weight == "balanced"
    task = replace(load_task("readmission_30d"), class_weight="none")
    assert (
        build_pipeline(task, task.feature_names(), "logistic").named_steps["model"].class_weight
        is None
    )


def test_preprocessing_fitted_on_training_rows_only(
    trained: dict[str, TrainedModel], readmission: Dataset
) -> None:
    train_rows, test_rows = evaluation.holdout_split(
        "classification", readmission.y, readmission.patient_ids, 0.2, 0
    )
    numbers = trained["logistic"].pipeline.named_steps["preprocess"].named_transformers_["num"]
    numeric = [f for f in readmission.feature_names if f != "sex"]
    X_train = readmission.X.iloc[train_rows][numeric]
    assert np.allclose(numbers.named_steps["impute"].statistics_, X_train.median().to_numpy())
    assert not np.allclose(X_train.median(), readmission.X[numeric].median()) or len(test_rows) == 0
    patients_train = {readmission.patient_ids[i] for i in train_rows}
    assert not patients_train & {readmission.patient_ids[i] for i in test_rows}


def test_predict_and_reference(trained: dict[str, TrainedModel], readmission: Dataset) -> None:
    model = trained["hgb"]
    p = model.predict(readmission.X)
    assert p.shape == (len(readmission.y),) and ((p >= 0) & (p <= 1)).all()
    # columns in another order are put back in the trained order
    shuffled = readmission.X[list(reversed(readmission.feature_names))]
    assert np.array_equal(model.predict(shuffled), p)
    assert model.reference["sex_female"] + model.reference["sex_male"] == pytest.approx(1.0)


def test_missing_values_get_indicators_and_training_medians() -> None:
    task = load_task("next_hba1c")
    names = task.feature_names()
    X = pd.DataFrame([{n: float(i) for n in names} for i in range(6)]).assign(sex="female")
    X.loc[0, "glucose_latest"] = np.nan
    pipeline = build_pipeline(task, names, "linear").fit(X, np.arange(6.0))
    pre = pipeline.named_steps["preprocess"]
    out = list(pre.get_feature_names_out())
    assert "missingindicator_glucose_latest" in out and "missingindicator_bmi_latest" not in out
    Z = pre.transform(X.iloc[[0]])
    median = np.median(np.arange(1.0, 6.0))
    scale = pre.named_transformers_["num"].named_steps["scale"]
    col = out.index("glucose_latest")
    assert Z[0, col] == pytest.approx((median - scale.mean_[col]) / scale.scale_[col])


def test_fingerprint_is_deterministic_and_data_sensitive(readmission: Dataset) -> None:
    assert fingerprint(readmission) == fingerprint(readmission)
    changed = replace(readmission, y=1 - readmission.y)
    assert fingerprint(changed) != fingerprint(readmission)


def test_model_kind_mismatch_is_refused(readmission: Dataset) -> None:
    with pytest.raises(BadRequest, match="classification"):
        train(load_task("readmission_30d"), readmission, "linear")
    empty = replace(
        readmission, X=readmission.X.iloc[:0], y=readmission.y[:0], patient_ids=[], index_times=[]
    )
    with pytest.raises(BadRequest, match="no rows"):
        train(load_task("readmission_30d"), empty, "logistic")
