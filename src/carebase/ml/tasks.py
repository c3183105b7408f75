"""Prediction tasks: declarative JSON/YAML definitions (cohort, index time, label, features,
exclusions) parsed into a validated, frozen `Task`; errors name the path of the bad element."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from carebase.errors import InvalidResource, Issue, NotFound
from carebase.ml.timeutil import parse_time

#: short names for code systems in code sets ("icd10:E11*")
SYSTEM_ALIASES = {
    "icd10": "http://hl7.org/fhir/sid/icd-10-cm",
    "snomed": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "carebase-ml": "https://carebase.dev/fhir/CodeSystem/ml-baseline",
}
STATS = ("latest", "mean", "min", "max", "count")
INDEX_TYPES = ("fixed", "encounter_end", "observation")
LABEL_TYPES = ("condition", "encounter", "observation_value")
SELECTS = ("all", "first", "last")


@dataclass(frozen=True)
class Code:
    """One entry of a code set: a system and a code, or a code prefix when it ends in `*`."""

    system: str
    code: str
    prefix: bool = False

    def matches(self, system: str | None, code: str | None) -> bool:
        """Whether (system, code) is in this entry."""
        if system != self.system or code is None:
            return False
        return code.startswith(self.code) if self.prefix else code == self.code


@dataclass(frozen=True)
class ObservationFeature:
    """Statistics of one observation code's values in a look-back window before the index."""

    name: str
    codes: tuple[Code, ...]
    lookback_days: int | None
    stats: tuple[str, ...]


@dataclass(frozen=True)
class CodeFlagFeature:
    """1 when a condition (or medication request) of the code set is known by the index."""

    name: str
    codes: tuple[Code, ...]
    lookback_days: int | None


@dataclass(frozen=True)
class EncounterFeature:
    """Number of encounters of the given classes that ended in the look-back window."""

    name: str
    classes: tuple[str, ...]
    lookback_days: int | None


@dataclass(frozen=True)
class IndexSpec:
    """When predictions are made: a fixed instant, each discharge, or each observation."""

    type: str
    date: datetime | None = None
    classes: tuple[str, ...] = ()
    codes: tuple[Code, ...] = ()
    select: str = "all"
    not_after: datetime | None = None


@dataclass(frozen=True)
class LabelSpec:
    """What is predicted, always strictly after the index time and within `within_days`."""

    type: str
    within_days: int
    codes: tuple[Code, ...] = ()
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Exclusion:
    """Rows left out: a condition known or begun by the index, or death by the index."""

    type: Literal["condition", "deceased"]
    codes: tuple[Code, ...] = ()


@dataclass(frozen=True)
class Task:
    """A validated prediction task."""

    name: str
    kind: Literal["classification", "regression"]
    description: str
    index: IndexSpec
    label: LabelSpec
    min_age: float | None = None
    max_age: float | None = None
    require_encounter_days: int | None = None
    demographics: tuple[str, ...] = ("age", "sex")
    observations: tuple[ObservationFeature, ...] = ()
    conditions: tuple[CodeFlagFeature, ...] = ()
    medications: tuple[CodeFlagFeature, ...] = ()
    encounters: tuple[EncounterFeature, ...] = ()
    index_encounter: tuple[str, ...] = ()  # length_of_stay_days (encounter_end tasks)
    exclusions: tuple[Exclusion, ...] = ()
    class_weight: Literal["balanced", "none"] = "none"
    threshold: float = 0.5
    source: str = field(default="", compare=False)

    def feature_names(self) -> list[str]:
        """The columns of this task's feature table, in order."""
        names = [d for d in self.demographics]
        for obs in self.observations:
            names.extend(f"{obs.name}_{stat}" for stat in obs.stats)
        names.extend(c.name for c in self.conditions)
        names.extend(m.name for m in self.medications)
        names.extend(e.name for e in self.encounters)
        names.extend(self.index_encounter)
        return names

    def categorical_features(self) -> list[str]:
        """Feature columns holding strings (one-hot encoded)."""
        return ["sex"] if "sex" in self.demographics else []


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Reader:
    """Reads a task document, collecting every problem with its path before raising."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.issues: list[Issue] = []

    def fail(self, path: str, message: str) -> None:
        self.issues.append(Issue("error", "invalid", f"{self.source}: {path}: {message}", [path]))

    def obj(self, data: Any, path: str, known: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fail(path or "task", f"expected an object, got {type(data).__name__}")
            return {}
        for key in data:
            if key not in known:
                self.fail(_at(path, key), f"unknown key; known keys: {', '.join(known)}")
        return data

    def text(self, data: dict[str, Any], key: str, path: str, required: bool = True) -> str:
        value = data.get(key)
        if value is None:
            if required:
                self.fail(_at(path, key), "required")
            return ""
        if not isinstance(value, str) or not value:
            self.fail(_at(path, key), "expected a non-empty string")
            return ""
        return value

    def choice(self, data: dict[str, Any], key: str, path: str, options: tuple[str, ...]) -> str:
        value = self.text(data, key, path)
        if value and value not in options:
            self.fail(_at(path, key), f"{value!r} is not one of {', '.join(options)}")
        return value

    def number(
        self, data: dict[str, Any], key: str, path: str, *, required: bool = False
    ) -> float | None:
        value = data.get(key)
        if value is None:
            if required:
                self.fail(_at(path, key), "required")
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            self.fail(_at(path, key), f"expected a non-negative number, got {value!r}")
            return None
        return float(value)

    def days(self, data: dict[str, Any], key: str, path: str, required: bool = False) -> int | None:
        value = self.number(data, key, path, required=required)
        return None if value is None else int(value)

    def instant(self, data: dict[str, Any], key: str, path: str) -> datetime | None:
        value = data.get(key)
        if value is None:
            return None
        try:
            return parse_time(str(value))
        except ValueError:
            self.fail(_at(path, key), f"not a FHIR date or dateTime: {value!r}")
            return None

    def strings(self, data: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(_at(path, key), "expected a list of non-empty strings")
            return ()
        return tuple(value)

    def codes(self, data: dict[str, Any], key: str, path: str) -> tuple[Code, ...]:
        out: list[Code] = []
        entries = self.strings(data, key, path)
        if key in data and not entries:
            self.fail(_at(path, key), "a code set needs at least one code")
        for i, entry in enumerate(entries):
            system, sep, code = entry.rpartition(":") if "|" not in entry else entry.partition("|")
            if not sep or not system or not code:
                self.fail(f"{path}.{key}[{i}]", f"{entry!r}: write 'alias:code' or 'system|code'")
                continue
            system = SYSTEM_ALIASES.get(system, system) if "|" not in entry else system
            if "|" not in entry and system not in SYSTEM_ALIASES.values():
                self.fail(
                    f"{path}.{key}[{i}]",
                    f"unknown system alias in {entry!r}; known: {', '.join(SYSTEM_ALIASES)}",
                )
                continue
            prefix = code.endswith("*")
            out.append(Code(system, code.rstrip("*"), prefix))
        return tuple(out)


def _index(r: _Reader, data: Any, kind: str) -> IndexSpec:
    path = "index"
    d = r.obj(data, path, ("type", "date", "classes", "codes", "select", "not_after"))
    type_ = r.choice(d, "type", path, INDEX_TYPES)
    date = r.instant(d, "date", path)
    if type_ == "fixed" and date is None:
        r.fail(f"{path}.date", "required when index.type is fixed")
    classes = r.strings(d, "classes", path)
    if type_ == "encounter_end" and not classes:
        r.fail(f"{path}.classes", "required when index.type is encounter_end")
    codes = r.codes(d, "codes", path)
    if type_ == "observation" and not codes:
        r.fail(f"{path}.codes", "required when index.type is observation")
    select = d.get("select", "all")
    if select not in SELECTS:
        r.fail(f"{path}.select", f"{select!r} is not one of {', '.join(SELECTS)}")
    not_after = r.instant(d, "not_after", path)
    return IndexSpec(type_, date, classes, codes, str(select), not_after)


def _label(r: _Reader, data: Any, kind: str) -> LabelSpec:
    path = "label"
    d = r.obj(data, path, ("type", "within_days", "codes", "classes"))
    type_ = r.choice(d, "type", path, LABEL_TYPES)
    within = r.days(d, "within_days", path, required=True) or 0
    codes = r.codes(d, "codes", path)
    classes = r.strings(d, "classes", path)
    if type_ in ("condition", "observation_value") and not codes:
        r.fail(f"{path}.codes", f"required when label.type is {type_}")
    if type_ == "encounter" and not classes:
        r.fail(f"{path}.classes", "required when label.type is encounter")
    if type_ == "observation_value" and kind != "regression":
        r.fail(f"{path}.type", "observation_value labels need kind: regression")
    if type_ in ("condition", "encounter") and kind != "classification":
        r.fail(f"{path}.type", f"{type_} labels need kind: classification")
    return LabelSpec(type_, within, codes, classes)


def _features(r: _Reader, data: Any) -> dict[str, Any]:
    path = "features"
    known = ("demographics", "observations", "conditions", "medications", "encounters")
    d = r.obj(data, path, (*known, "index_encounter"))
    demographics = r.strings(d, "demographics", path) if "demographics" in d else ("age", "sex")
    for i, name in enumerate(demographics):
        if name not in ("age", "sex"):
            r.fail(f"{path}.demographics[{i}]", f"{name!r}: known demographics are age, sex")
    observations: list[ObservationFeature] = []
    conditions: list[CodeFlagFeature] = []
    medications: list[CodeFlagFeature] = []
    encounters: list[EncounterFeature] = []
    for i, item in enumerate(d.get("observations", []) or []):
        p = f"{path}.observations[{i}]"
        o = r.obj(item, p, ("name", "codes", "lookback_days", "stats"))
        stats = r.strings(o, "stats", p) if "stats" in o else STATS
        for j, stat in enumerate(stats):
            if stat not in STATS:
                r.fail(f"{p}.stats[{j}]", f"{stat!r} is not one of {', '.join(STATS)}")
        codes = r.codes(o, "codes", p)
        if not codes:
            r.fail(f"{p}.codes", "required")
        observations.append(
            ObservationFeature(r.text(o, "name", p), codes, r.days(o, "lookback_days", p), stats)
        )
    for key, target in (("conditions", conditions), ("medications", medications)):
        for i, item in enumerate(d.get(key, []) or []):
            p = f"{path}.{key}[{i}]"
            c = r.obj(item, p, ("name", "codes", "lookback_days"))
            codes = r.codes(c, "codes", p)
            if not codes:
                r.fail(f"{p}.codes", "required")
            target.append(
                CodeFlagFeature(r.text(c, "name", p), codes, r.days(c, "lookback_days", p))
            )
    for i, item in enumerate(d.get("encounters", []) or []):
        p = f"{path}.encounters[{i}]"
        e = r.obj(item, p, ("name", "classes", "lookback_days"))
        encounters.append(
            EncounterFeature(
                r.text(e, "name", p), r.strings(e, "classes", p), r.days(e, "lookback_days", p)
            )
        )
    index_encounter = r.strings(d, "index_encounter", path)
    for i, name in enumerate(index_encounter):
        if name != "length_of_stay_days":
            r.fail(f"{path}.index_encounter[{i}]", f"{name!r}: known: length_of_stay_days")
    return {
        "demographics": tuple(demographics),
        "observations": tuple(observations),
        "conditions": tuple(conditions),
        "medications": tuple(medications),
        "encounters": tuple(encounters),
        "index_encounter": index_encounter,
    }


def parse_task(data: Any, source: str = "task") -> Task:
    """A Task from its parsed JSON/YAML document; InvalidResource listing every problem, each
    with its path (e.g. `features.observations[2].stats[0]`), otherwise."""
    r = _Reader(source)
    top = ("name", "kind", "description", "cohort", "index", "label", "features")
    d = r.obj(data, "", (*top, "exclusions", "model"))
    kind = r.choice(d, "kind", "", ("classification", "regression"))
    name = r.text(d, "name", "")
    for key in ("index", "label", "features"):
        if key not in d:
            r.fail(key, "required")
    index = _index(r, d.get("index", {}), kind)
    label = _label(r, d.get("label", {}), kind)
    if label.type != "observation_value" and index.type == "observation" and kind == "regression":
        r.fail("label.type", "regression tasks need label.type observation_value")
    cohort = r.obj(d.get("cohort", {}), "cohort", ("min_age", "max_age", "require_encounter_days"))
    features = _features(r, d.get("features", {}))
    if "length_of_stay_days" in features["index_encounter"] and index.type != "encounter_end":
        r.fail("features.index_encounter", "needs index.type encounter_end")
    exclusions: list[Exclusion] = []
    for i, item in enumerate(d.get("exclusions", []) or []):
        p = f"exclusions[{i}]"
        e = r.obj(item, p, ("type", "codes"))
        type_ = r.choice(e, "type", p, ("condition", "deceased"))
        codes = r.codes(e, "codes", p)
        if type_ == "condition" and not codes:
            r.fail(f"{p}.codes", "required for a condition exclusion")
        exclusions.append(Exclusion(type_, codes))  # type: ignore[arg-type]
    model = r.obj(d.get("model", {}), "model", ("class_weight", "threshold"))
    class_weight = model.get("class_weight", "none")
    if class_weight not in ("balanced", "none"):
        r.fail("model.class_weight", f"{class_weight!r} is not one of balanced, none")
    threshold = r.number(model, "threshold", "model")
    if threshold is not None and not 0 < threshold < 1:
        r.fail("model.threshold", "must be between 0 and 1")
    names = [
        n
        for group in ("observations", "conditions", "medications", "encounters")
        for n in (f.name for f in features[group])
    ]
    seen: set[str] = set()
    for n in names:
        if n in seen:
            r.fail("features", f"feature name {n!r} is used twice")
        seen.add(n)
    if r.issues:
        raise InvalidResource(issues=r.issues)
    return Task(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        description=str(d.get("description", "")),
        index=index,
        label=label,
        min_age=r.number(cohort, "min_age", "cohort"),
        max_age=r.number(cohort, "max_age", "cohort"),
        require_encounter_days=r.days(cohort, "require_encounter_days", "cohort"),
        exclusions=tuple(exclusions),
        class_weight=class_weight,
        threshold=0.5 if threshold is None else threshold,
        source=source,
        **features,
    )


@functools.cache
def _shipped() -> tuple[str, ...]:
    files = resources.files("carebase.ml").joinpath("tasks").iterdir()
    return tuple(
        sorted(f.name.rsplit(".", 1)[0] for f in files if f.name.endswith((".json", ".yaml")))
    )


def task_names() -> list[str]:
    """Names of the shipped tasks (files in the `carebase/ml/tasks/` data folder), sorted."""
    return list(_shipped())


def _parse_text(text: str, source: str) -> Any:
    try:
        return json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidResource(f"{source}: not valid JSON/YAML: {exc}", location=source) from exc


def load_task(name_or_path: str | Path) -> Task:
    """A shipped task by name, or a task file (.json, .yaml, .yml) by path."""
    text = str(name_or_path)
    if text in task_names():
        folder = resources.files("carebase.ml").joinpath("tasks")
        for suffix in (".yaml", ".json"):
            entry = folder.joinpath(text + suffix)
            if entry.is_file():
                source = f"carebase/ml/tasks/{text}{suffix}"
                return parse_task(_parse_text(entry.read_text("utf-8"), source), source)
    path = Path(text)
    if not path.is_file():
        raise NotFound(
            f"no task named {text!r} and no such file; shipped tasks: {', '.join(task_names())}",
            location="task",
        )
    return parse_task(_parse_text(path.read_text("utf-8"), str(path)), str(path))
