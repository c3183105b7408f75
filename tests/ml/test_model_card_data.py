"""Model card data read from a registered real model's metrics (SQLite and PostgreSQL)."""

from __future__ import annotations

from carebase.ml import registry
from carebase.ml.model_card import plots, render_markdown
from carebase.ml.model_card_data import card_data
from carebase.store.base import Store
from ml_serving_data import TASK, trained_model


def test_card_of_a_registered_model(store: Store) -> None:
    record = registry.register(store, trained_model())
    data = card_data(record)
    assert (data.model_id, data.task, data.kind) == (record.id, TASK, "classification")
    auroc = next(m for m in data.metrics if m.name == "auroc" and m.split == "held-out")
    assert auroc.low is not None and auroc.high is not None and auroc.low <= auroc.high
    assert any("fold CV mean" in m.split for m in data.metrics)
    assert data.calibration and all(0 <= p <= 1 for p, _ in data.calibration)
    assert data.roc is not None
    fpr, tpr = data.roc
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert {row.attribute for row in data.subgroups} == {"sex", "age_band"}
    assert data.largest_gap() is not None
    assert data.features and data.features[0][0] in trained_model().feature_names
    assert sorted(plots(data)) == ["calibration.png", "roc.png"]
    text = render_markdown(data)
    assert record.sha256 in text and record.data_fingerprint in text
    assert f"{record.metrics['n_patients']} patients" in text
