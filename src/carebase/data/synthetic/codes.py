"""The clinical vocabulary of the synthetic population: ICD-10-CM, SNOMED CT, LOINC, RxNorm,
CVX and UCUM codes, each used the way real records use them (checked against Synthea R4 data)."""

from __future__ import annotations

from dataclasses import dataclass

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
UCUM = "http://unitsofmeasure.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
DISCHARGE_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
ADMIT_SOURCE = "http://terminology.hl7.org/CodeSystem/admit-source"
IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
NPI = "http://hl7.org/fhir/sid/us-npi"
# The MRN system of the synthetic population: stable across runs, seeds and versions.
MRN_SYSTEM = "urn:carebase:synthetic:mrn"


@dataclass(frozen=True, slots=True)
class Problem:
    """A diagnosis with both its billing (ICD-10-CM) and clinical (SNOMED CT) codes."""

    key: str
    icd10: str
    icd10_display: str
    snomed: str
    snomed_display: str


PROBLEMS: dict[str, Problem] = {
    p.key: p
    for p in (
        Problem("prediabetes", "R73.03", "Prediabetes", "15777000", "Prediabetes"),
        Problem(
            "t2d",
            "E11.9",
            "Type 2 diabetes mellitus without complications",
            "44054006",
            "Diabetes mellitus type 2",
        ),
        Problem(
            "hypertension",
            "I10",
            "Essential (primary) hypertension",
            "59621000",
            "Essential hypertension",
        ),
        Problem(
            "ckd",
            "N18.30",
            "Chronic kidney disease, stage 3 unspecified",
            "433144002",
            "Chronic kidney disease stage 3",
        ),
        Problem(
            "hyperlipidemia", "E78.5", "Hyperlipidemia, unspecified", "55822004", "Hyperlipidemia"
        ),
        Problem("obesity", "E66.9", "Obesity, unspecified", "414916001", "Obesity"),
        Problem(
            "family_history_diabetes",
            "Z83.3",
            "Family history of diabetes mellitus",
            "160303001",
            "Family history: Diabetes mellitus",
        ),
        # Reasons for emergency visits and admissions.
        Problem("pneumonia", "J18.9", "Pneumonia, unspecified organism", "233604007", "Pneumonia"),
        Problem(
            "heart_failure", "I50.9", "Heart failure, unspecified", "84114007", "Heart failure"
        ),
        Problem(
            "copd_exacerbation",
            "J44.1",
            "Chronic obstructive pulmonary disease with (acute) exacerbation",
            "195951007",
            "Acute exacerbation of chronic obstructive airways disease",
        ),
        Problem(
            "uti",
            "N39.0",
            "Urinary tract infection, site not specified",
            "68566005",
            "Urinary tract infectious disease",
        ),
        Problem("chest_pain", "R07.9", "Chest pain, unspecified", "29857009", "Chest pain"),
        Problem(
            "ankle_fracture",
            "S82.899A",
            "Other fracture of lower leg, initial encounter",
            "16114001",
            "Fracture of ankle",
        ),
        Problem(
            "bronchitis", "J20.9", "Acute bronchitis, unspecified", "10509002", "Acute bronchitis"
        ),
    )
}

# Acute reasons for an emergency visit or admission, with relative weights.
ACUTE_REASONS: tuple[tuple[str, int], ...] = (
    ("pneumonia", 5),
    ("heart_failure", 3),
    ("copd_exacerbation", 3),
    ("uti", 4),
    ("chest_pain", 5),
    ("ankle_fracture", 2),
    ("bronchitis", 3),
)


@dataclass(frozen=True, slots=True)
class Measure:
    """An Observation kind: LOINC code, UCUM unit, normal range and decimals to round to."""

    loinc: str
    display: str
    unit: str
    ucum: str
    low: float | None
    high: float | None
    decimals: int
    category: str  # "vital-signs" or "laboratory"


MEASURES: dict[str, Measure] = {
    "sbp": Measure(
        "8480-6", "Systolic blood pressure", "mm[Hg]", "mm[Hg]", 90, 130, 0, "vital-signs"
    ),
    "dbp": Measure(
        "8462-4", "Diastolic blood pressure", "mm[Hg]", "mm[Hg]", 60, 80, 0, "vital-signs"
    ),
    "heart_rate": Measure("8867-4", "Heart rate", "/min", "/min", 60, 100, 0, "vital-signs"),
    "weight": Measure("29463-7", "Body weight", "kg", "kg", None, None, 1, "vital-signs"),
    "height": Measure("8302-2", "Body height", "cm", "cm", None, None, 1, "vital-signs"),
    "bmi": Measure(
        "39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", "kg/m2", 18.5, 25, 1, "vital-signs"
    ),
    "hba1c": Measure(
        "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", "%", 4.0, 5.6, 1, "laboratory"
    ),
    "glucose": Measure(
        "1558-6",
        "Fasting glucose [Mass/volume] in Serum or Plasma",
        "mg/dL",
        "mg/dL",
        70,
        99,
        0,
        "laboratory",
    ),
    "creatinine": Measure(
        "2160-0",
        "Creatinine [Mass/volume] in Serum or Plasma",
        "mg/dL",
        "mg/dL",
        0.6,
        1.2,
        2,
        "laboratory",
    ),
    "egfr": Measure(
        "98979-8",
        "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, Plasma or "
        "Blood by Creatinine-based formula (CKD-EPI 2021)",
        "mL/min/{1.73_m2}",
        "mL/min/{1.73_m2}",
        60,
        None,
        0,
        "laboratory",
    ),
    "ldl": Measure(
        "13457-7",
        "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
        "mg/dL",
        "mg/dL",
        None,
        130,
        0,
        "laboratory",
    ),
    "hdl": Measure(
        "2085-9",
        "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
        "mg/dL",
        "mg/dL",
        40,
        None,
        0,
        "laboratory",
    ),
    "cholesterol": Measure(
        "2093-3",
        "Cholesterol [Mass/volume] in Serum or Plasma",
        "mg/dL",
        "mg/dL",
        None,
        200,
        0,
        "laboratory",
    ),
}
BP_PANEL = ("85354-9", "Blood pressure panel with all children optional")
SMOKING_STATUS = ("72166-2", "Tobacco smoking status")
SMOKING_ANSWERS = {
    "never": ("266919005", "Never smoked tobacco"),
    "former": ("8517006", "Ex-smoker"),
    "current": ("449868002", "Smokes tobacco daily"),
}


@dataclass(frozen=True, slots=True)
class Drug:
    """A prescribable product (RxNorm clinical drug) and how it is taken."""

    key: str
    rxnorm: str
    display: str
    dosage: str


DRUGS: dict[str, Drug] = {
    d.key: d
    for d in (
        Drug(
            "metformin",
            "860975",
            "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet",
            "Take 1 tablet by mouth twice daily with meals",
        ),
        Drug(
            "lisinopril",
            "314076",
            "lisinopril 10 MG Oral Tablet",
            "Take 1 tablet by mouth once daily",
        ),
        Drug(
            "amlodipine",
            "197361",
            "Amlodipine 5 MG Oral Tablet",
            "Take 1 tablet by mouth once daily",
        ),
        Drug(
            "hydrochlorothiazide",
            "310798",
            "Hydrochlorothiazide 25 MG Oral Tablet",
            "Take 1 tablet by mouth once daily in the morning",
        ),
        Drug(
            "simvastatin",
            "312961",
            "Simvastatin 20 MG Oral Tablet",
            "Take 1 tablet by mouth once daily at bedtime",
        ),
        Drug(
            "amoxicillin",
            "308182",
            "Amoxicillin 500 MG Oral Capsule",
            "Take 1 capsule by mouth three times daily for 7 days",
        ),
    )
}

VACCINES = {
    "influenza": ("140", "Influenza, seasonal, injectable, preservative free"),
    "tdap": ("115", "Tdap"),
    "ppsv23": ("33", "pneumococcal polysaccharide vaccine, 23 valent"),
    "pcv13": ("133", "Pneumococcal conjugate PCV 13"),
}

PROCEDURES = {
    "colonoscopy": ("73761001", "Colonoscopy"),
    "ecg": ("29303009", "Electrocardiographic procedure"),
    "chest_xray": ("399208008", "Plain chest X-ray"),
    "fracture_care": ("385691007", "Fracture care"),
}

# Allergies (SNOMED CT findings) with the share of people who have them.
ALLERGIES: tuple[tuple[str, str, str, float], ...] = (
    ("91936005", "Allergy to penicillin", "medication", 0.08),
    ("91935009", "Allergy to peanuts", "food", 0.02),
    ("300913006", "Shellfish allergy", "food", 0.02),
    ("418689008", "Allergy to grass pollen", "environment", 0.06),
    ("424213003", "Allergy to bee venom", "environment", 0.01),
)

ENCOUNTER_TYPES = {
    "checkup": ("185349003", "Encounter for check up"),
    "followup": ("390906007", "Follow-up encounter"),
    "emergency": ("50849002", "Emergency room admission"),
    "inpatient": ("32485007", "Hospital admission"),
}
NOTE_TYPES = {
    "progress": ("11506-3", "Progress note"),
    "discharge": ("18842-5", "Discharge summary"),
    "emergency": ("34111-5", "Emergency department note"),
}
