"""The compiled search expressions agree with fhirpathpy on real data, and cover R4 natively."""

from __future__ import annotations

import copy
import gzip
import tarfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from carebase.fhir.definitions.loader import get_definitions
from carebase.fhir.search_expression import (
    compile_expression,
    compile_for,
    coverage,
    plain,
)
from carebase.fhir.search_expression_parser import UnsupportedExpression, parse
from carebase.fhir.search_expression_steps import reference_is, reference_type
from fhirpath_oracle import compiled

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "r4-examples.ndjson.gz"


def _canon(values: list[Any]) -> set[bytes]:
    return {orjson.dumps(plain(v), option=orjson.OPT_SORT_KEYS) for v in values if v is not None}


class _Oracle:
    """fhirpathpy on the official expression (with `resolve() is X` rewritten).

    fhirpathpy applies FHIRPath's rule that `x as T` needs a single x strictly, and raises
    where R4's own expressions (`(Observation.component.value as Quantity)`) meet several;
    the search spec means a filter there, so we then ask for `x.ofType(T)`.
    """

    def __call__(self, expr: str, resource: dict[str, Any]) -> set[bytes] | None:
        fns = compiled(expr)
        try:
            try:
                return _canon(fns[0](copy.deepcopy(resource)))
            except Exception as exc:
                if "singleton" not in str(exc):
                    raise
                return _canon(fns[1](copy.deepcopy(resource)))
        except Exception as exc:  # fhirpathpy's own limits (e.g. 64-bit integers)
            if "64-bit" in str(exc):
                return None
            raise


def _compare(resources: list[dict[str, Any]]) -> tuple[int, list[str]]:
    defs = get_definitions()
    oracle = _Oracle()
    checked = 0
    mismatches: list[str] = []
    for resource in resources:
        rtype = resource["resourceType"]
        for code, sp in defs.search_params(rtype).items():
            if not sp.expression or sp.type == "special":
                continue
            mine = _canon(compile_for(sp.expression, rtype)(resource))
            theirs = oracle(sp.expression, resource)
            if theirs is None:
                continue
            checked += 1
            if mine != theirs:
                mismatches.append(f"{rtype}/{resource.get('id')} {code}: {mine} != {theirs}")
    return checked, mismatches


def _examples() -> list[dict[str, Any]]:
    if not EXAMPLES.exists():
        pytest.skip(f"official examples not found at {EXAMPLES}")
    return [orjson.loads(line) for line in gzip.decompress(EXAMPLES.read_bytes()).splitlines()]


def synthea_sample(tar_path: Path, per_type: int) -> Iterator[dict[str, Any]]:
    """Up to `per_type` resources of each type, in archive order (deterministic)."""
    seen: dict[str, int] = defaultdict(int)
    with tarfile.open(tar_path) as tar:
        for member in tar:
            if not (member.isfile() and member.name.endswith(".json")):
                continue
            data = tar.extractfile(member)
            assert data is not None
            for entry in orjson.loads(data.read()).get("entry", ()):
                resource = entry.get("resource")
                if resource and seen[resource["resourceType"]] < per_type:
                    seen[resource["resourceType"]] += 1
                    yield resource


@pytest.mark.slow
def test_native_matches_fhirpathpy_on_official_examples() -> None:
    checked, mismatches = _compare(_examples())
    assert checked > 10_000
    assert mismatches == []


@pytest.mark.slow
def test_native_matches_fhirpathpy_on_synthea(synthea_tar: Path) -> None:
    checked, mismatches = _compare(list(synthea_sample(synthea_tar, 60)))
    assert checked > 5_000
    assert mismatches == []


def test_almost_every_r4_parameter_compiles_natively() -> None:
    native, fallback, misses = coverage()
    print(f"\nsearch expressions: {native} native, {fallback} fhirpathpy fallback: {misses}")
    assert native / (native + fallback) > 0.95


def test_choice_types_become_typed_branches() -> None:
    compiled = compile_for("Observation.effective", "Observation")
    assert {b.type for b in compiled.branches} == {"dateTime", "Period", "Timing", "instant"}
    obs = {"resourceType": "Observation", "effectivePeriod": {"start": "2020"}}
    assert compiled(obs) == [{"start": "2020"}]
    assert compiled.typed(obs) == [({"start": "2020"}, "Period")]


def test_as_and_of_type_follow_specialisation() -> None:
    # canonical is a uri; Age is a Quantity
    cm = {"resourceType": "ConceptMap", "sourceCanonical": "http://x/ValueSet/a"}
    assert compile_for("(ConceptMap.source as uri)", "ConceptMap")(cm) == ["http://x/ValueSet/a"]
    cond = {"resourceType": "Condition", "onsetAge": {"value": 3}}
    assert compile_for("Condition.onset.as(Quantity)", "Condition")(cond) == [{"value": 3}]
    assert compile_for("Condition.onset.as(Period)", "Condition")(cond) == []


def test_where_filters_and_extensions() -> None:
    patient = {
        "resourceType": "Patient",
        "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}],
        "extension": [{"url": "u1", "valueString": "x"}, {"url": "u2", "valueString": "y"}],
        "deceasedDateTime": "2020-01-01",
    }
    email = compile_for("Patient.telecom.where(system='email')", "Patient")
    assert email(patient) == [{"system": "email", "value": "a@b"}]
    ext = compile_for("Patient.extension('u2')", "Patient")
    assert ext(patient) == [{"url": "u2", "valueString": "y"}]
    deceased = compile_for("Patient.deceased.exists() and Patient.deceased != false", "Patient")
    assert deceased(patient) == [True]
    assert deceased({"resourceType": "Patient", "deceasedBoolean": False}) == [False]
    assert deceased({"resourceType": "Patient"}) == [False]


def test_resolve_is_reads_the_reference() -> None:
    assert reference_type("Patient/1") == "Patient"
    assert reference_type("Patient/1/_history/2") == "Patient"
    assert reference_type("http://x/fhir/Patient/a.b-c") == "Patient"
    assert reference_type("urn:uuid:0b1c") is None
    assert reference_type("#contained") is None
    assert reference_is({"type": "Patient", "identifier": {"value": "1"}}, "Patient")
    assert not reference_is({"reference": "Group/1", "type": "Patient"}, "Patient")
    patient = compile_for("Observation.subject.where(resolve() is Patient)", "Observation")
    assert patient({"resourceType": "Observation", "subject": {"reference": "Group/1"}}) == []


def test_primitive_array_nulls_are_dropped() -> None:
    name = {"given": ["a", None, "b"], "_given": [None, {"id": "x"}, None]}
    compiled = compile_for("Patient.name.given", "Patient")
    assert compiled({"resourceType": "Patient", "name": [name]}) == ["a", "b"]


def test_relative_and_percent_resource_expressions() -> None:
    seq: dict[str, Any] = {
        "resourceType": "MolecularSequence",
        "referenceSeq": {"chromosome": {"text": "1"}},
        "variant": [{"start": 5}],
    }
    compiled = compile_for("%resource.referenceSeq.chromosome", "MolecularSequence",
                           "MolecularSequence.variant")  # fmt: skip
    assert compiled.evaluate(seq["variant"], seq) == [{"text": "1"}]


def test_multi_base_expressions_compile_per_type() -> None:
    compiled = compile_expression("Patient.gender | Practitioner.gender")
    assert compiled({"resourceType": "Practitioner", "gender": "female"}) == ["female"]
    assert compiled({"resourceType": "Patient", "gender": "male"}) == ["male"]


def test_unsupported_syntax_falls_back_to_fhirpathpy() -> None:
    with pytest.raises(UnsupportedExpression):
        parse("Patient.name.given + 'x'")
    compiled = compile_for("Patient.name.select(given)", "Patient")
    assert not compiled.native
    resource = {"resourceType": "Patient", "name": [{"given": ["Ann", "Bo"]}]}
    assert compiled(resource) == ["Ann", "Bo"]
    assert [b.type for b in compiled.branches] == ["*"]


def test_unknown_element_falls_back_rather_than_guessing() -> None:
    assert not compile_for("Patient.nonsense", "Patient").native
