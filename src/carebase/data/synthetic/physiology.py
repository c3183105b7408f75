"""A patient's latent physiology (true BMI, blood pressure, HbA1c, kidney function, lipids),
its yearly drift, and what a visit measures: the true value plus measurement noise, minus
the effect of the drugs the patient takes."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from carebase.data.synthetic.risk_models import RiskState, egfr_decline

# Mean effects of the drugs (placebo-corrected, from their meta-analyses; see the docs page).
METFORMIN_HBA1C = 1.1  # % points (Hirst et al., Diabetologia 2012)
BP_DRUG_SBP = {"lisinopril": 9.0, "hydrochlorothiazide": 9.0, "amlodipine": 10.0}  # Law 2009
BP_DRUG_DBP = {"lisinopril": 5.0, "hydrochlorothiazide": 4.0, "amlodipine": 5.5}
SIMVASTATIN_LDL = 0.35  # fraction lowered (CTT Collaboration)


@dataclass(slots=True)
class Physiology:
    """The true values of one patient at the current simulated year."""

    height_cm: float
    bmi: float
    sbp: float
    dbp: float
    hba1c: float
    egfr: float
    ldl: float
    hdl: float
    egfr_slope_offset: float  # this patient's own extra yearly eGFR loss

    @classmethod
    def draw(cls, rng: random.Random, female: bool) -> Physiology:
        """Values at age 25 (the simulation's start), from NHANES-like distributions."""
        age = 25.0
        height = rng.gauss(162.0 if female else 176.0, 7.0)
        bmi = min(max(rng.lognormvariate(math.log(25.0), 0.16), 16.5), 55.0)
        sbp = 104 + 0.45 * (age - 18) + 0.8 * (bmi - 25) + (0 if female else 5) + rng.gauss(0, 9)
        dbp = 68 + 0.15 * (age - 18) + 0.4 * (bmi - 25) + rng.gauss(0, 6)
        hba1c = 5.1 + 0.006 * (age - 18) + 0.015 * (bmi - 25) + rng.gauss(0, 0.2)
        egfr = min(135.0, 120 + rng.gauss(0, 11))
        ldl = 95 + 0.6 * min(age - 18, 40) + rng.gauss(0, 28)
        hdl = (58 if female else 47) - 0.6 * (bmi - 25) + rng.gauss(0, 9)
        return cls(
            height_cm=height,
            bmi=bmi,
            sbp=min(sbp, 139.0),  # hypertension starts by the risk model, not at baseline
            dbp=min(dbp, 89.0),
            hba1c=min(hba1c, 5.6),  # likewise dysglycaemia
            egfr=max(egfr, 80.0),
            ldl=max(ldl, 50.0),
            hdl=max(hdl, 25.0),
            egfr_slope_offset=abs(rng.gauss(0, 0.3)),
        )

    def drift(self, rng: random.Random, state: RiskState) -> None:
        """One year passes."""
        self.bmi = min(max(self.bmi + rng.gauss(0.1, 0.6), 16.5), 55.0)
        self.sbp += 0.6 + 0.1 * (self.bmi - 27) + rng.gauss(0, 2.0)
        self.dbp += 0.1 + 0.05 * (self.bmi - 27) + rng.gauss(0, 1.5)
        if state.diabetes:
            self.hba1c += rng.gauss(0.12, 0.15)  # progressive beta-cell loss (UKPDS)
        elif state.prediabetes:
            self.hba1c += rng.gauss(0.12, 0.05)
        else:
            self.hba1c = min(self.hba1c + rng.gauss(0.01, 0.03), 5.65)
        self.egfr -= egfr_decline(state) + self.egfr_slope_offset + rng.gauss(0, 0.8)
        self.egfr = max(self.egfr, 8.0)
        self.ldl = max(50.0, self.ldl + rng.gauss(0.5, 4))


def _flagged(value: float, decimals: int) -> float:
    return round(value, decimals) if decimals else float(round(value))


def measure_vitals(rng: random.Random, body: Physiology, drugs: set[str]) -> dict[str, float]:
    """Vital signs taken at a visit."""
    sbp = body.sbp - sum(BP_DRUG_SBP.get(d, 0.0) for d in drugs) + rng.gauss(0, 7)
    dbp = body.dbp - sum(BP_DRUG_DBP.get(d, 0.0) for d in drugs) + rng.gauss(0, 5)
    weight = body.bmi * (body.height_cm / 100) ** 2 + rng.gauss(0, 0.6)
    height = body.height_cm + rng.gauss(0, 0.4)
    return {
        "sbp": _flagged(sbp, 0),
        "dbp": _flagged(min(dbp, sbp - 20), 0),
        "heart_rate": _flagged(rng.gauss(74, 9), 0),
        "weight": round(weight, 1),
        "height": round(height, 1),
        "bmi": round(weight / (height / 100) ** 2, 1),
    }


def creatinine_from_egfr(egfr: float, age: float, female: bool) -> float:
    """Serum creatinine (mg/dL) giving `egfr` under the CKD-EPI 2021 equation (inverted)."""
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    base = 142 * 0.9938**age * (1.012 if female else 1.0)
    ratio = egfr / base
    # Above kappa the equation is base * (scr/kappa)^-1.2; below, base * (scr/kappa)^alpha.
    scr = kappa * ratio ** (-1 / 1.2)
    if scr < kappa:
        scr = kappa * ratio ** (1 / alpha)
    return scr


def egfr_from_creatinine(scr: float, age: float, female: bool) -> float:
    """The CKD-EPI 2021 race-free equation (Inker et al., NEJM 2021)."""
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    r = scr / kappa
    return (
        142 * min(r, 1.0) ** alpha * max(r, 1.0) ** -1.2 * 0.9938**age * (1.012 if female else 1.0)
    )


def measure_labs(
    rng: random.Random,
    body: Physiology,
    drugs: set[str],
    age: float,
    female: bool,
    panels: tuple[str, ...],
) -> dict[str, float]:
    """Laboratory results of the requested panels (glucose, kidney, lipids)."""
    out: dict[str, float] = {}
    if "glucose" in panels:
        hba1c = body.hba1c - (METFORMIN_HBA1C if "metformin" in drugs else 0.0)
        hba1c = max(4.3, hba1c + rng.gauss(0, 0.12))
        out["hba1c"] = round(hba1c, 1)
        # Fasting glucose follows HbA1c (ADAG: mean glucose = 28.7 * A1c - 46.7; fasting lower).
        out["glucose"] = float(round(max(60.0, 28.7 * hba1c - 62 + rng.gauss(0, 8))))
    if "kidney" in panels:
        scr = creatinine_from_egfr(max(body.egfr + rng.gauss(0, 3), 5.0), age, female)
        out["creatinine"] = round(scr, 2)
        out["egfr"] = float(round(egfr_from_creatinine(round(scr, 2), age, female)))
    if "lipids" in panels:
        ldl = body.ldl * (1 - SIMVASTATIN_LDL if "simvastatin" in drugs else 1.0) + rng.gauss(0, 9)
        hdl = body.hdl + rng.gauss(0, 4)
        triglycerides = max(50.0, rng.gauss(140, 45))
        out["ldl"] = float(round(max(ldl, 30)))
        out["hdl"] = float(round(hdl))
        out["cholesterol"] = float(round(out["ldl"] + out["hdl"] + triglycerides / 5))  # Friedewald
    return out
