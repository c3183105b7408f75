"""Evaluation: splits keep patients apart, metrics agree with their definitions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from carebase.errors import Unprocessable
from carebase.ml import evaluation as ev


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-x)))


@pytest.fixture
def calibrated() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    p = sigmoid(rng.normal(0, 1.5, 20000))
    y = (rng.uniform(size=p.size) < p).astype(int)
    return y, p


def test_splits_keep_each_patient_on_one_side_and_stratify() -> None:
    rng = np.random.default_rng(0)
    groups = [f"p{i // 3}" for i in range(300)]  # three rows per patient
    y = np.repeat((rng.uniform(size=100) < 0.2).astype(int), 3)
    splits = ev.cv_splits("classification", y, groups, 5, seed=0)
    seen_test: set[str] = set()
    for train, test in splits:
        train_p, test_p = {groups[i] for i in train}, {groups[i] for i in test}
        assert not train_p & test_p
        assert not test_p & seen_test
        seen_test |= test_p
        assert abs(y[test].mean() - y.mean()) < 0.1
    assert seen_test == set(groups)
    train, test = ev.holdout_split("regression", y.astype(float), groups, 0.2, seed=0)
    assert not {groups[i] for i in train} & {groups[i] for i in test}


def test_too_few_positives_for_the_folds_is_an_error() -> None:
    y = np.array([1, 1] + [0] * 20)
    with pytest.raises(Unprocessable, match="rarer class"):
        ev.cv_splits("classification", y, [str(i) for i in range(22)], 5, 0)


def test_auroc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 500)
    p = np.round(rng.uniform(size=500) + 0.3 * y, 1)  # many ties
    assert ev.auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert math.isnan(ev.auroc(np.zeros(5), np.ones(5)))


def test_calibration_slope_and_intercept(calibrated: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = calibrated
    slope, intercept = ev.calibration_slope_intercept(y, p)
    assert slope == pytest.approx(1.0, abs=0.05) and intercept == pytest.approx(0.0, abs=0.05)
    logit = np.log(p / (1 - p))
    over = sigmoid(2 * logit)  # too extreme: slope 1/2
    assert ev.calibration_slope_intercept(y, over)[0] == pytest.approx(0.5, abs=0.03)
    high = sigmoid(logit + 1)  # too high: intercept about -1
    assert ev.calibration_slope_intercept(y, high)[1] == pytest.approx(-1.0, abs=0.06)
    points = ev.calibration_points(y, p)
    assert len(points) == 10
    assert all(abs(pt["predicted"] - pt["observed"]) < 0.05 for pt in points)


def test_threshold_metrics_by_hand() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.1, 0.3, 0.2])
    m = ev.classification_metrics(y, p, 0.5)
    assert (m["sensitivity"], m["specificity"], m["ppv"], m["npv"]) == (2 / 3, 4 / 5, 2 / 3, 4 / 5)
    assert m["errors"] == 2 and m["brier"] == pytest.approx(np.mean((p - y) ** 2))


def test_decision_curve_net_benefit() -> None:
    y = np.array([1, 0, 0, 1, 0])
    p = np.array([0.8, 0.6, 0.1, 0.3, 0.05])
    curve = {row["threshold"]: row for row in ev.decision_curve(y, p, [0.04, 0.5])}
    assert curve[0.5]["net_benefit"] == pytest.approx(1 / 5 - 1 / 5 * 1.0)
    # at a threshold below every prediction the model treats everyone: equals treat-all
    assert curve[0.04]["net_benefit"] == pytest.approx(curve[0.04]["treat_all"])
    assert curve[0.04]["treat_all"] == pytest.approx(0.4 - 0.6 * 0.04 / 0.96)


def test_regression_metrics() -> None:
    y, pred = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.5, 4.0])
    m = ev.regression_metrics(y, pred)
    assert m["mae"] == 0.25 and m["rmse"] == pytest.approx(math.sqrt(0.125))
    assert m["r2"] == pytest.approx(1 - 0.5 / 5.0)


def test_bootstrap_intervals_bracket_the_estimate(
    calibrated: tuple[np.ndarray, np.ndarray],
) -> None:
    y, p = calibrated[0][:2000], calibrated[1][:2000]
    groups = [f"p{i // 2}" for i in range(2000)]
    ci = ev.bootstrap_intervals("classification", y, p, groups, rounds=100, seed=0)
    point = ev.classification_metrics(y, p)
    for key in ("auroc", "brier", "sensitivity"):
        low, high = ci[key]
        assert low < point[key] < high and high - low < 0.1


def test_subgroups_by_sex_and_age_band_with_gaps() -> None:
    X = pd.DataFrame(
        {"sex": ["female", "female", "male", "male"] * 5, "age": [30.0, 70.0, 50.0, 70.0] * 5}
    )
    y = np.array([1, 0, 1, 0] * 5)
    pred = np.array([0.9, 0.1, 0.4, 0.6] * 5)  # perfect for women, inverted for men
    out = ev.subgroup_metrics("classification", y, pred, X)
    sex = out["sex"]
    assert sex["by_group"]["female"]["auroc"] == 1.0 and sex["by_group"]["male"]["auroc"] == 0.0
    assert sex["largest_gap"]["auroc"] == 1.0
    assert set(out["age_band"]["by_group"]) == {"0-39", "40-64", "65+"}
    assert out["age_band"]["by_group"]["65+"]["count"] == 10
    assert math.isnan(out["age_band"]["by_group"]["0-39"]["auroc"])  # one class only
