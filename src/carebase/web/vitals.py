"""The vital signs the web app records and charts: LOINC codes, UCUM units, plausible ranges.

Plausibility limits reject values no living patient has (a typo, a wrong unit), not
abnormal ones: abnormal values are recorded and flagged against their normal range.
"""

from __future__ import annotations

from dataclasses import dataclass

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
VITAL_SIGNS_CATEGORY = "vital-signs"
LABORATORY_CATEGORY = "laboratory"
#: The blood pressure panel (its components are systolic and diastolic).
BP_PANEL = ("85354-9", "Blood pressure panel with all children optional")


@dataclass(frozen=True, slots=True)
class Vital:
    """One vital sign: form field, LOINC code and display, UCUM unit (code and display),
    the plausible range and the adult normal range (None: no range)."""

    field: str
    loinc: str
    display: str
    unit: str
    unit_display: str
    plausible: tuple[float, float]
    normal: tuple[float | None, float | None]
    decimals: int


VITALS: tuple[Vital, ...] = (
    Vital(
        "systolic", "8480-6", "Systolic blood pressure", "mm[Hg]", "mmHg", (40, 300), (90, 130), 0
    ),
    Vital(
        "diastolic", "8462-4", "Diastolic blood pressure", "mm[Hg]", "mmHg", (20, 200), (60, 80), 0
    ),
    Vital("heart_rate", "8867-4", "Heart rate", "/min", "/min", (20, 300), (60, 100), 0),
    Vital("respiratory_rate", "9279-1", "Respiratory rate", "/min", "/min", (4, 80), (12, 20), 0),
    Vital("temperature", "8310-5", "Body temperature", "Cel", "°C", (25, 45), (36.1, 37.5), 1),
    Vital(
        "oxygen_saturation",
        "59408-5",
        "Oxygen saturation in Arterial blood by Pulse oximetry",
        "%",
        "%",
        (50, 100),
        (94, None),
        0,
    ),
    Vital("weight", "29463-7", "Body weight", "kg", "kg", (0.3, 500), (None, None), 1),
    Vital("height", "8302-2", "Body height", "cm", "cm", (20, 272), (None, None), 1),
)
BY_FIELD = {v.field: v for v in VITALS}
BY_LOINC = {v.loinc: v for v in VITALS}
