"""One-row preprocessing with numpy equals the fitted ColumnTransformer's, column for column."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import StandardScaler

from carebase.ml.features import Dataset
from carebase.ml.row_transform import RowTransform, row_transform
from carebase.ml.tasks import load_task
from carebase.ml.training import TrainedModel, build_pipeline


def _check(pre: ColumnTransformer, rows: pd.DataFrame) -> None:
    fast = row_transform(pre)
    assert isinstance(fast, RowTransform)
    for i in range(len(rows)):
        row = rows.iloc[[i]]
        expected = np.asarray(pre.transform(row), dtype=float)
        got = fast(row)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["logistic", "hgb", "linear"])
def test_equals_column_transformer_on_every_row(
    name: str, trained: dict[str, TrainedModel], readmission: Dataset, hba1c: Dataset
) -> None:
    model = trained[name]
    data = hba1c if name == "linear" else readmission
    pre = model.pipeline.named_steps["preprocess"]
    _check(pre, data.X[model.feature_names])
    # every value missing, and a sex the training rows never had
    empty = data.X[model.feature_names].iloc[[0]].copy()
    for column in empty.columns:
        empty[column] = "other" if column == "sex" else math.nan
    _check(pre, empty)


def test_training_column_never_observed_and_missing_indicators() -> None:
    task = load_task("readmission_30d")
    names = task.feature_names()
    rng = np.random.default_rng(3)
    X = pd.DataFrame({n: rng.normal(size=40) for n in names})
    X["sex"] = rng.choice(["female", "male"], size=40)
    X["egfr_latest"] = math.nan  # never observed: imputed with 0, kept (keep_empty_features)
    X.loc[::3, "egfr_min"] = math.nan  # sometimes missing: gets a missing-indicator
    y = np.arange(40) % 2
    pipeline = build_pipeline(task, names, "logistic").fit(X, y)
    pre = pipeline.named_steps["preprocess"]
    _check(pre, X)
    assert row_transform(pre) is row_transform(pre)  # built once per fitted transformer


def test_other_shapes_use_the_column_transformer() -> None:
    X = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [3.0, 5.0, 9.0]})
    pre = ColumnTransformer([("num", StandardScaler(), ["a"])], remainder="passthrough").fit(X)
    fallback = row_transform(pre)
    assert not isinstance(fallback, RowTransform)
    np.testing.assert_allclose(fallback(X.iloc[[1]]), pre.transform(X.iloc[[1]]))
