"""The risk models that decide who falls ill, is admitted, is readmitted and dies.

Each is a plain function of a patient's current state returning an annual probability (or a
rate, or a score); the coefficients and their published sources are documented in
docs/data/synthetic-population.md. They make prediction tasks learnable from the same
risk factors clinicians use, while the events themselves stay random draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def sigmoid(x: float) -> float:
    """The logistic function."""
    return 1.0 / (1.0 + math.exp(-x))


def annual_from(risk: float, years: float) -> float:
    """The constant annual probability that gives cumulative `risk` over `years`."""
    return 1.0 - (1.0 - min(risk, 0.999)) ** (1.0 / years)


@dataclass(slots=True)
class RiskState:
    """What the models look at: risk factors and diagnoses at one point in time."""

    age: float
    female: bool
    bmi: float
    sbp: float
    dbp: float
    hba1c: float
    egfr: float
    smoker: bool
    physically_active: bool
    eats_vegetables_daily: bool
    family_history_diabetes: bool
    parental_hypertension: int  # number of parents with hypertension (0, 1, 2)
    prediabetes: bool = False
    diabetes: bool = False
    hypertension: bool = False
    ckd: bool = False
    heart_failure: bool = False
    copd: bool = False


# --- type 2 diabetes: FINDRISC (Lindström & Tuomilehto, Diabetes Care 2003) -------------------


def findrisc(state: RiskState) -> int:
    """The FINDRISC score (0-26). Waist circumference, which the population does not record,
    is taken from BMI (the two correlate at r~0.85); the other items are as published."""
    points = 0
    if state.age >= 65:
        points += 4
    elif state.age >= 55:
        points += 3
    elif state.age >= 45:
        points += 2
    if state.bmi > 30:
        points += 3
    elif state.bmi >= 25:
        points += 1
    if state.bmi > 32:  # stands in for the waist item (up to 4 points)
        points += 4
    elif state.bmi >= 27:
        points += 3
    if not state.physically_active:
        points += 2
    if not state.eats_vegetables_daily:
        points += 1
    if state.hypertension:  # "ever taken antihypertensive medication"
        points += 2
    if state.prediabetes or state.hba1c >= 5.7:  # "ever had high blood glucose"
        points += 5
    if state.family_history_diabetes:  # first-degree relative
        points += 5
    return points


# Logistic fit of the published 10-year risks per FINDRISC band (<7: 1 %, 7-11: 4 %,
# 12-14: 17 %, 15-20: 33 %, >20: 50 %) against the band midpoints.
FINDRISC_INTERCEPT = -5.8
FINDRISC_SLOPE = 0.28
# Impaired glycaemia is about 2.5 times as common as incident diabetes (CDC National Diabetes
# Statistics Report: 38 % vs 15 % of US adults), so people enter it faster than FINDRISC's
# diabetes risk; the diabetes itself then comes from the progression model below.
PREDIABETES_FACTOR = 2.5


def prediabetes_onset(state: RiskState) -> float:
    """Annual probability that normal glycaemia turns into prediabetes."""
    ten_year = sigmoid(FINDRISC_INTERCEPT + FINDRISC_SLOPE * findrisc(state))
    return min(0.5, PREDIABETES_FACTOR * annual_from(ten_year, 10))


def diabetes_progression(state: RiskState) -> float:
    """Annual probability that prediabetes becomes type 2 diabetes: 5-10 %/year on average
    (ADA Expert Panel; Tabák et al., Lancet 2012), higher with HbA1c, BMI and family history."""
    logit = (
        -2.6
        + 1.5 * (state.hba1c - 6.0)
        + 0.05 * (state.bmi - 30.0)
        + 0.4 * state.family_history_diabetes
        + 0.02 * (state.age - 55.0)
    )
    return sigmoid(logit)


# --- hypertension: Framingham Hypertension Risk Score (Parikh et al., Ann Intern Med 2008) ---
FRAMINGHAM_HTN = {
    "intercept": 22.949536,
    "age": -0.156412,
    "female": -0.202933,
    "bmi": -0.033881,
    "sbp": -0.05933,
    "dbp": -0.128468,
    "smoker": -0.190731,
    "parents_one": -0.166121,
    "parents_two": -0.420893,
    "age_x_dbp": 0.001624,
    "scale": 0.876925,
}


def hypertension_onset(state: RiskState) -> float:
    """Annual probability of a hypertension diagnosis: the Framingham 4-year Weibull risk
    turned into an annual one, or, with blood pressure already at 140/90 or above, the chance
    that this year's visits detect it (0.5)."""
    if state.sbp >= 140 or state.dbp >= 90:
        return 0.5
    c = FRAMINGHAM_HTN
    age = min(max(state.age, 20.0), 80.0)  # the model was fitted on ages 20-69
    mu = (
        c["intercept"]
        + c["age"] * age
        + c["female"] * state.female
        + c["bmi"] * state.bmi
        + c["sbp"] * state.sbp
        + c["dbp"] * state.dbp
        + c["smoker"] * state.smoker
        + (c["parents_one"] if state.parental_hypertension == 1 else 0.0)
        + (c["parents_two"] if state.parental_hypertension >= 2 else 0.0)
        + c["age_x_dbp"] * age * state.dbp
    )
    four_year = 1.0 - math.exp(-math.exp((math.log(4.0) - mu) / c["scale"]))
    return annual_from(four_year, 4)


# --- kidney function: eGFR decline per year (mL/min/1.73 m2) --------------------------------


def egfr_decline(state: RiskState) -> float:
    """Mean yearly loss of eGFR: about 0.7 after 40 with age (Lindeman et al., J Am Geriatr
    Soc 1985), faster with diabetes (+1.2, more when poorly controlled; Krolewski 2014) and
    hypertension (+0.7; Hemmelgarn 2006), and with uncontrolled blood pressure."""
    decline = 0.7 if state.age >= 40 else 0.2
    if state.diabetes:
        decline += 1.2 + max(0.0, state.hba1c - 7.0) * 0.4
    if state.hypertension:
        decline += 0.7
    if state.sbp >= 140:
        decline += 0.5
    return decline


# --- hospital use ---------------------------------------------------------------------------


def charlson(state: RiskState) -> int:
    """Charlson comorbidity index points of the conditions the population models."""
    return int(state.diabetes) + 2 * int(state.ckd) + int(state.heart_failure) + int(state.copd)


def emergency_rate(state: RiskState) -> float:
    """Expected emergency-department visits per year: rises with age, comorbidity and smoking
    (the strongest predictors in emergency-admission models; Wallace et al., BMJ Open 2014)."""
    log_rate = (
        -2.3
        + 0.025 * (state.age - 50.0)
        + 0.35 * charlson(state)
        + 0.2 * state.hypertension
        + 0.4 * state.smoker
    )
    return math.exp(log_rate)


def admitted_from_emergency(state: RiskState) -> float:
    """Probability that an emergency visit ends in an inpatient admission."""
    return sigmoid(-1.4 + 0.03 * (state.age - 60.0) + 0.35 * charlson(state))


def lace(length_of_stay: int, emergent: bool, charlson_points: int, ed_visits_6m: int) -> int:
    """The LACE index (van Walraven et al., CMAJ 2010), 0-19."""
    if length_of_stay < 1:
        los_points = 0
    elif length_of_stay <= 3:
        los_points = length_of_stay
    elif length_of_stay <= 6:
        los_points = 4
    elif length_of_stay <= 13:
        los_points = 5
    else:
        los_points = 7
    comorbidity = charlson_points if charlson_points < 4 else 5
    return los_points + (3 if emergent else 0) + comorbidity + min(ed_visits_6m, 4)


def readmission_risk(lace_score: int) -> float:
    """Probability of an unplanned readmission within 30 days: a logistic curve through the
    published LACE calibration (about 2 % at 0, 12 % at 10, 45 % at 19)."""
    return sigmoid(-3.9 + 0.2 * lace_score)


# --- death ------------------------------------------------------------------------------------
# Gompertz baseline below US period life tables (~0.15 % at 40, ~3 % at 80) because the
# comorbidity hazard ratios below add the rest for those who carry them.
GOMPERTZ_INTERCEPT = -9.8
GOMPERTZ_SLOPE = 0.077
MORTALITY_HAZARD_RATIOS = {
    "male": 1.25,  # vs 0.8 for women: the sex gap of the same life tables
    "female": 0.8,
    "diabetes": 1.8,  # Emerging Risk Factors Collaboration, NEJM 2011
    "ckd": 1.5,  # eGFR 30-59: Go et al., NEJM 2004
    "hypertension": 1.2,
    "heart_failure": 2.0,
    "copd": 1.6,
    "smoker": 2.2,  # Jha et al., NEJM 2013
}


def death(state: RiskState) -> float:
    """Annual probability of death: age/sex baseline times the hazard ratios of comorbidity."""
    h = MORTALITY_HAZARD_RATIOS
    hazard = math.exp(GOMPERTZ_INTERCEPT + GOMPERTZ_SLOPE * state.age)
    hazard *= h["female"] if state.female else h["male"]
    for flag in ("diabetes", "ckd", "hypertension", "heart_failure", "copd", "smoker"):
        if getattr(state, flag):
            hazard *= h[flag]
    return min(hazard, 0.9)


def in_hospital_death(state: RiskState) -> float:
    """Probability of dying during an admission: about 2 % overall (HCUP statistical briefs),
    rising with age and comorbidity."""
    return sigmoid(-4.6 + 0.05 * (state.age - 65.0) + 0.3 * charlson(state))
