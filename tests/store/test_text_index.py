"""What full-text search indexes: the narrative (`_text`) and all readable text (`_content`)."""

from __future__ import annotations

from typing import Any

import pytest

from carebase.store.text_index import (
    MAX_WORD_CHARS,
    MAX_WORDS,
    text_document,
    tsvector_literal,
    words,
    xhtml_text,
)

DIV = '<div xmlns="http://www.w3.org/1999/xhtml">{}</div>'


def content(resource: dict[str, Any]) -> list[str]:
    document = text_document(resource)
    return list(document.content) if document else []


def test_words_fold_case_and_accents_and_split_on_punctuation() -> None:
    assert words(["Ménière's Disease", "São-Paulo_x", "ÆON 1.5mg"]) == [
        "meniere", "s", "disease", "sao", "paulo", "x", "æon", "1", "5mg",
    ]  # fmt: skip


def test_words_drop_overlong_tokens() -> None:
    assert words(["a" * (MAX_WORD_CHARS + 1) + " ok " + "b" * MAX_WORD_CHARS]) == [
        "ok",
        "b" * MAX_WORD_CHARS,
    ]


def test_narrative_plain_text_drops_tags_and_decodes_entities() -> None:
    div = DIV.format(
        "<p>Blood&#160;pressure <b>high</b>er than&amp;usual</p><table><tr><td>sys</td>"
        "<td>140</td></tr></table><br/>caf&eacute;"
    )
    assert words([xhtml_text(div)]) == [
        "blood", "pressure", "higher", "than", "usual", "sys", "140", "cafe",
    ]  # fmt: skip
    assert xhtml_text(DIV.format("plain words")) == "plain words"


def test_narrative_goes_to_both_columns() -> None:
    resource = {
        "resourceType": "Condition",
        "text": {"status": "generated", "div": DIV.format("Walking <i>pneumonia</i>")},
        "code": {"text": "Asthma"},
    }
    document = text_document(resource)
    assert document is not None
    assert document.narrative == ("walking", "pneumonia")
    assert document.content == ("walking", "pneumonia", "asthma")


def test_content_takes_strings_and_leaves_out_ids_codes_urls_dates_meta() -> None:
    patient = {
        "resourceType": "Patient",
        "id": "idword",
        "meta": {"versionId": "1", "tag": [{"system": "http://t", "display": "metaword"}]},
        "identifier": [{"system": "http://mrn", "value": "mrnword", "type": {"text": "MRN"}}],
        "name": [{"family": "Chalmers", "given": ["Peter", "James"], "use": "official"}],
        "gender": "male",
        "birthDate": "1974-12-25",
        "address": [{"line": ["534 Erewhon St"], "city": "PleasantVille", "state": "Vic"}],
        "telecom": [{"system": "phone", "value": "(03) 5555 6473"}],
        "maritalStatus": {"coding": [{"system": "http://s", "code": "M", "display": "Married"}]},
        "photo": [{"data": "YmFzZTY0d29yZA==", "title": "Portrait"}],
        "generalPractitioner": [{"reference": "Practitioner/refword", "display": "Dr Adam"}],
        "extension": [
            {"url": "http://ext/maiden", "valueString": "Maidenname"},
            {"url": "http://ext/code", "valueCode": "codeword"},
        ],
        "_birthDate": {"extension": [{"url": "http://x", "valueString": "primitiveext"}]},
    }
    assert content(patient) == [
        "mrn", "chalmers", "peter", "james", "534", "erewhon", "st", "pleasantville", "vic",
        "03", "5555", "6473", "married", "portrait", "dr", "adam", "maidenname",
    ]  # fmt: skip


def test_content_of_markdown_annotations_and_contained_resources() -> None:
    resource = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "contained": [
            {
                "resourceType": "Medication",
                "id": "med",
                "code": {"coding": [{"code": "123", "display": "Amoxicillin 500 MG"}]},
                "text": {"status": "generated", "div": DIV.format("Contained narrative")},
            }
        ],
        "medicationReference": {"reference": "#med"},
        "subject": {"reference": "Patient/p"},
        "note": [{"text": "Take *with* food"}],
    }
    document = text_document(resource)
    assert document is not None
    assert document.narrative == ()  # a contained resource's narrative is not this one's
    assert document.content == (
        "amoxicillin", "500", "mg", "contained", "narrative", "take", "with", "food",
    )  # fmt: skip


def test_no_text_at_all_gives_no_document() -> None:
    assert text_document({"resourceType": "Observation", "status": "final"}) is None


def test_word_count_is_capped() -> None:
    resource = {"resourceType": "Basic", "code": {"text": "w " * (MAX_WORDS + 10)}}
    assert len(content(resource)) == MAX_WORDS


@pytest.mark.parametrize(
    ("found", "literal"),
    [
        (("a", "b", "a"), "'a':1,3 'b':2"),
        (("été",), "'été':1"),
        ((), ""),
    ],
)
def test_tsvector_literal(found: tuple[str, ...], literal: str) -> None:
    assert tsvector_literal(found) == literal
