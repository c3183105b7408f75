"""Real-data baselines through FHIR meet their floors and equal a direct scikit-learn run on
the original tables."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from carebase.ml import baselines
from carebase.ml.evaluation import auroc
from ml_serving_data import baseline_report


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return baseline_report()


def test_floors(results: dict[str, Any]) -> None:
    assert results["breast_cancer"]["auroc"] >= 0.99 and results["breast_cancer"]["cv_folds"] == 10
    assert results["diabetes"]["r2"] >= 0.47 and results["diabetes"]["n"] == 442
    pima = results["pima"]
    assert pima["auroc"] >= 0.85 and pima["errors"] <= 70 and pima["n_test"] == 332
    assert all(r["meets_floor"] for r in results.values())
    assert pima["intervals"]["auroc"][0] < pima["auroc"] < pima["intervals"]["auroc"][1]


@pytest.mark.parametrize("make", [baselines.breast_cancer_table, baselines.diabetes_table])
def test_fhir_round_trip_gives_back_the_table(make: Any) -> None:
    table = make()
    _, data = baselines.fhir_dataset(table)
    columns = list(table.codes)
    assert np.array_equal(
        data.X[[f"{c}_latest" for c in columns]].to_numpy(), table.frame[columns].to_numpy()
    )
    assert np.array_equal(data.y, table.frame["target"].to_numpy())


def direct_logistic() -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))


def test_breast_cancer_equals_direct_sklearn(results: dict[str, Any]) -> None:
    table = baselines.breast_cancer_table()
    X, y = table.frame.drop(columns="target").to_numpy(), table.frame["target"].to_numpy()
    groups = [f"breast-cancer-{i:04d}" for i in range(len(y))]
    folds = StratifiedGroupKFold(10, shuffle=True, random_state=baselines.SEED)
    direct = [
        auroc(y[te], direct_logistic().fit(X[tr], y[tr]).predict_proba(X[te])[:, 1])
        for tr, te in folds.split(X, y, groups)
    ]
    assert results["breast_cancer"]["per_fold"] == pytest.approx(direct, abs=1e-9)


def test_diabetes_equals_direct_sklearn(results: dict[str, Any]) -> None:
    table = baselines.diabetes_table()
    X, y = table.frame.drop(columns="target").to_numpy(), table.frame["target"].to_numpy()
    groups = [f"diabetes-{i:04d}" for i in range(len(y))]
    folds = GroupKFold(10, shuffle=True, random_state=baselines.SEED)
    direct = [
        r2_score(y[te], LinearRegression().fit(X[tr], y[tr]).predict(X[te]))
        for tr, te in folds.split(X, y, groups)
    ]
    assert results["diabetes"]["per_fold"] == pytest.approx(direct, abs=1e-9)
    assert results["diabetes"]["r2"] == pytest.approx(np.mean(direct), abs=1e-9)


def test_pima_equals_direct_sklearn(results: dict[str, Any]) -> None:
    train, test = baselines.pima_tables()
    assert (len(train.frame), len(test.frame)) == (200, 332)  # read offline from the wheel
    fit = direct_logistic().fit(train.frame.drop(columns="target"), train.frame["target"])
    p = fit.predict_proba(test.frame.drop(columns="target"))[:, 1]
    y = test.frame["target"].to_numpy()
    assert results["pima"]["auroc"] == pytest.approx(auroc(y, p), abs=1e-9)
    assert results["pima"]["errors"] == int(np.sum((p >= 0.5) != y))
