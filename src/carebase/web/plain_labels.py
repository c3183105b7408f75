"""Plain-language names of common lab tests for the patient portal (LOINC code -> label).

Labels are English source texts marked with `N_` so the catalogue test finds them; pages
translate them with `_`. A test without a plain label shows its own name.
"""

from __future__ import annotations

from carebase.web.i18n import N_

PLAIN_LABELS: dict[str, str] = {
    "4548-4": N_("Average blood sugar over 3 months (HbA1c)"),
    "1558-6": N_("Blood sugar after fasting"),
    "2345-7": N_("Blood sugar"),
    "2160-0": N_("Kidney function (creatinine)"),
    "98979-8": N_("Kidney filtering rate (eGFR)"),
    "33914-3": N_("Kidney filtering rate (eGFR)"),
    "13457-7": N_('"Bad" cholesterol (LDL)'),
    "18262-6": N_('"Bad" cholesterol (LDL)'),
    "2085-9": N_('"Good" cholesterol (HDL)'),
    "2093-3": N_("Total cholesterol"),
    "2571-8": N_("Blood fats (triglycerides)"),
    "718-7": N_("Hemoglobin (oxygen-carrying protein)"),
    "6690-2": N_("White blood cells"),
    "777-3": N_("Platelets (clotting cells)"),
    "2951-2": N_("Sodium"),
    "2823-3": N_("Potassium"),
    "3016-3": N_("Thyroid hormone (TSH)"),
}
