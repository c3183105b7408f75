"""The web package's pure parts: reading FHIR for display, flags, the SVG trend chart,
sanitising narrative, search criteria and the ICD-10-CM lookup."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime

import pytest

from carebase.web import fhir_view as fv
from carebase.web.icd10cm import package_titles
from carebase.web.narrative import attachment_text, narrative, sanitise
from carebase.web.patient_search import criteria
from carebase.web.svg_chart import Series, trend_svg


def _obs(value: float, low: float | None, high: float | None, **extra: object) -> dict[str, object]:
    reference = {}
    if low is not None:
        reference["low"] = {"value": low, "unit": "mg/dL"}
    if high is not None:
        reference["high"] = {"value": high, "unit": "mg/dL"}
    return {
        "valueQuantity": {"value": value, "unit": "mg/dL"},
        "referenceRange": [reference],
        **extra,
    }


def test_flags_come_from_the_interpretation_else_the_range() -> None:
    assert fv.flag(_obs(120, 70, 99)) == "H"
    assert fv.flag(_obs(60, 70, 99)) == "L"
    assert fv.flag(_obs(80, 70, 99)) is None
    assert fv.flag(_obs(35, 40, None)) == "L"
    system = fv.INTERPRETATION_SYSTEM
    normal = {"interpretation": [{"coding": [{"system": system, "code": "N"}]}]}
    assert fv.flag(_obs(120, 70, 99, **normal)) is None  # the lab said normal
    critical = {"interpretation": [{"coding": [{"system": system, "code": "HH"}]}]}
    assert fv.flag(_obs(80, 70, 99, **critical)) == "HH"
    assert fv.reference_range(_obs(1, 70, 99)) == (70.0, 99.0, "70-99 mg/dL")
    assert fv.reference_range(_obs(1, None, 130))[2] == "<= 130 mg/dL"


def test_display_helpers() -> None:
    assert fv.age("2000-03-01", date(2026, 2, 28)) == 25
    assert fv.age("2000-03-01", date(2026, 3, 1)) == 26
    assert fv.age("2000", date(2026, 3, 1)) is None
    patient = {
        "identifier": [
            {"value": "X1"},
            {"type": {"coding": [{"system": fv.MRN_TYPE[0], "code": "MR"}]}, "value": "M9"},
        ]
    }
    assert fv.mrn(patient) == "M9"
    assert fv.human_name({"name": [{"given": ["Ann", "B"], "family": "Lee"}]}) == "Ann B Lee"
    panel = {
        "component": [
            {"valueQuantity": {"value": 120, "unit": "mmHg"}},
            {"valueQuantity": {"value": 80.0, "unit": "mmHg"}},
        ]
    }
    assert fv.observation_value(panel) == "120/80 mmHg"
    assert fv.short_date("2026-03-04T10:05:09+00:00") == "2026-03-04 10:05"
    assert fv.parse_instant("2026-03") == datetime(2026, 3, 1)


def test_trend_svg_draws_points_band_and_escapes_labels() -> None:
    series = Series("<Sys>", [(datetime(2026, 1, d, tzinfo=UTC), 120.0 + d) for d in (3, 1, 2)])
    svg = trend_svg("t1", "BP & co", "mmHg", [series], band=(90, 130))
    assert svg.count("<circle") == 3 and '<rect class="band"' in svg
    assert "&lt;Sys&gt;" in svg and "BP &amp; co" in svg and "<Sys>" not in svg
    assert 'role="img"' in svg and 'aria-labelledby="t1-t t1-d"' in svg
    points = svg.split('<polyline points="', 1)[1].split('"', 1)[0].split()
    xs = [float(p.split(",")[0]) for p in points]
    assert xs == sorted(xs)  # drawn oldest first whatever the input order
    assert "style=" not in svg
    assert trend_svg("t2", "x", "u", [Series("empty")]) == ""


def test_sanitise_keeps_formatting_and_drops_active_content() -> None:
    dirty = (
        '<div><p onclick="x()">Hi <b>there</b></p><script>bad()</script>'
        '<a href="javascript:bad()">a</a><a href="https://ok.example/">b</a>'
        "<style>p{}</style><img src=x onerror=bad()></div>"
    )
    clean = str(sanitise(dirty))
    assert "<b>there</b>" in clean and 'href="https://ok.example/"' in clean
    for bad in ("script", "onclick", "javascript:", "<style", "<img", "onerror"):
        assert bad not in clean
    assert str(narrative({"text": {"div": "<div>ok<script>x</script></div>"}})) == "<div>ok</div>"
    html = base64.b64encode(b"<p>x</p><script>y</script>").decode()
    assert str(attachment_text({"contentType": "text/html", "data": html})) == "<p>x</p>"
    text = base64.b64encode(b"a < b & c").decode()
    assert str(attachment_text({"contentType": "text/plain", "data": text})) == "a &lt; b &amp; c"
    assert str(attachment_text({"contentType": "application/pdf", "data": text})) == ""
    assert str(attachment_text({"contentType": "text/plain", "data": "%%%"})) == ""


def test_search_criteria() -> None:
    assert criteria("smith 1970-05-01") == [("name", "smith"), ("birthdate", "1970-05-01")]
    assert criteria("1970") == [("birthdate", "1970")]
    assert criteria("  ") == []


@pytest.mark.parametrize(
    ("code", "title"),
    [
        ("E11.9", "Type 2 diabetes mellitus without complications"),
        ("I10", "Essential (primary) hypertension"),
    ],
)
def test_icd10cm_titles(code: str, title: str) -> None:
    assert package_titles()[code] == title
