"""Task definitions: the shipped ones load; mistakes are errors naming their path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from carebase.errors import InvalidResource, NotFound
from carebase.ml.tasks import load_task, parse_task, task_names


def minimal() -> dict[str, Any]:
    return {
        "name": "t",
        "kind": "classification",
        "index": {"type": "fixed", "date": "2019-01-01"},
        "label": {"type": "condition", "codes": ["icd10:E11*"], "within_days": 365},
        "features": {"observations": [{"name": "a1c", "codes": ["loinc:4548-4"]}]},
    }


def paths(exc: InvalidResource) -> list[str]:
    return [e for issue in exc.issues for e in issue.expression]


def test_shipped_tasks_load() -> None:
    assert task_names() == ["next_hba1c", "readmission_30d", "t2d_onset_3y"]
    t2d = load_task("t2d_onset_3y")
    assert t2d.kind == "classification" and t2d.class_weight == "balanced"
    assert t2d.label.within_days == 1095 and t2d.index.date is not None
    assert "hba1c_latest" in t2d.feature_names() and t2d.feature_names()[:2] == ["age", "sex"]
    assert load_task("readmission_30d").index.type == "encounter_end"
    assert load_task("next_hba1c").kind == "regression"


def test_codes_aliases_prefixes_and_full_systems() -> None:
    data = minimal()
    data["label"]["codes"] = ["icd10:E11*", "http://snomed.info/sct|44054006"]
    codes = parse_task(data).label.codes
    assert codes[0].matches("http://hl7.org/fhir/sid/icd-10-cm", "E11.9")
    assert not codes[0].matches("http://hl7.org/fhir/sid/icd-10-cm", "E10.9")
    assert codes[1].matches("http://snomed.info/sct", "44054006")
    assert not codes[1].matches("http://snomed.info/sct", "440540060")


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d.pop("index"), "index"),
        (lambda d: d["index"].pop("date"), "index.date"),
        (lambda d: d.update(kind="ranking"), "kind"),
        (lambda d: d["label"].update(within_days=-3), "label.within_days"),
        (lambda d: d["label"].update(codes=["icd9:250"]), "label.codes[0]"),
        (lambda d: d["label"].update(codes=["E11"]), "label.codes[0]"),
        (
            lambda d: d["features"]["observations"][0].update(stats=["median"]),
            "features.observations[0].stats[0]",
        ),
        (
            lambda d: d["features"]["observations"][0].update(colour="red"),
            "features.observations[0].colour",
        ),
        (lambda d: d["features"].update(demographics=["height"]), "features.demographics[0]"),
        (lambda d: d.update(exclusions=[{"type": "condition"}]), "exclusions[0].codes"),
        (lambda d: d.update(model={"threshold": 1.5}), "model.threshold"),
        (lambda d: d["label"].update(type="observation_value"), "label.type"),
        (lambda d: d["index"].update(date="yesterday"), "index.date"),
    ],
)
def test_mistakes_name_their_path(change: Any, path: str) -> None:
    data = minimal()
    change(data)
    with pytest.raises(InvalidResource) as info:
        parse_task(data, "my_task.yaml")
    assert path in paths(info.value)
    assert "my_task.yaml" in str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    data = minimal()
    data["kind"] = "x"
    data["features"]["observations"][0]["stats"] = ["p99"]
    with pytest.raises(InvalidResource) as info:
        parse_task(data)
    assert {"kind", "features.observations[0].stats[0]"} <= set(paths(info.value))


def test_unknown_top_level_key_and_non_object() -> None:
    data = minimal()
    data["colour"] = 1
    with pytest.raises(InvalidResource) as info:
        parse_task(data)
    assert "colour" in paths(info.value)
    with pytest.raises(InvalidResource, match="expected an object"):
        parse_task([1, 2])


def test_duplicate_feature_names_refused() -> None:
    data = minimal()
    data["features"]["conditions"] = [{"name": "a1c", "codes": ["icd10:E11*"]}]
    with pytest.raises(InvalidResource, match="used twice"):
        parse_task(data)


def test_load_from_yaml_and_json_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(minimal()))
    (tmp_path / "b.json").write_text(json.dumps(minimal()))
    assert load_task(tmp_path / "a.yaml") == load_task(tmp_path / "b.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidResource, match=r"bad\.json"):
        load_task(tmp_path / "bad.json")
    with pytest.raises(NotFound, match="t2d_onset_3y"):
        load_task("no_such_task")
