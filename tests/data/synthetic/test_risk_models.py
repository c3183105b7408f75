"""The risk models and physiology of the synthetic population against their published
anchors: score bands, calibration points, equations and check digits."""

from __future__ import annotations

import pytest

from carebase.data.synthetic import risk_models as risk
from carebase.data.synthetic.demographics import clinicians, npi_check_digit
from carebase.data.synthetic.physiology import creatinine_from_egfr, egfr_from_creatinine


def _state(**changes: object) -> risk.RiskState:
    base = risk.RiskState(
        age=40, female=True, bmi=23, sbp=118, dbp=74, hba1c=5.2, egfr=100, smoker=False,
        physically_active=True, eats_vegetables_daily=True, family_history_diabetes=False,
        parental_hypertension=0,
    )  # fmt: skip
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_findrisc_scores_as_published() -> None:
    assert risk.findrisc(_state()) == 0
    worst = _state(age=70, bmi=35, physically_active=False, eats_vegetables_daily=False,
                   hypertension=True, prediabetes=True, family_history_diabetes=True)  # fmt: skip
    assert risk.findrisc(worst) == 4 + 3 + 4 + 2 + 1 + 2 + 5 + 5


def test_findrisc_mapping_follows_the_published_band_risks() -> None:
    ten_year = {
        s: risk.sigmoid(risk.FINDRISC_INTERCEPT + risk.FINDRISC_SLOPE * s)
        for s in (3, 9, 13, 18, 22)
    }
    assert ten_year[3] < 0.02 and 0.02 < ten_year[9] < 0.06
    assert 0.08 < ten_year[13] < 0.20 and 0.25 < ten_year[18] < 0.45 and ten_year[22] > 0.45


def test_risks_rise_with_their_risk_factors() -> None:
    assert risk.prediabetes_onset(_state(bmi=33, age=60)) > risk.prediabetes_onset(_state())
    assert risk.diabetes_progression(_state(hba1c=6.3)) > risk.diabetes_progression(
        _state(hba1c=5.8)
    )
    assert 0.04 < risk.diabetes_progression(_state(hba1c=6.0, bmi=30, age=55)) < 0.10
    assert risk.hypertension_onset(_state(sbp=135, dbp=85, age=60)) > risk.hypertension_onset(
        _state()
    )
    assert risk.hypertension_onset(_state(sbp=150)) == 0.5
    assert risk.egfr_decline(_state(diabetes=True, hypertension=True)) > risk.egfr_decline(_state())
    assert risk.death(_state(age=80)) > risk.death(_state(age=50)) > risk.death(_state(age=30))
    assert risk.death(_state(diabetes=True)) == pytest.approx(1.8 * risk.death(_state()))
    assert risk.emergency_rate(_state(ckd=True, age=75)) > risk.emergency_rate(_state())


def test_framingham_hypertension_four_year_risk_is_plausible() -> None:
    # A 50-year-old man with high-normal BP: around 15 % over 4 years (Parikh 2008, Table 4).
    annual = risk.hypertension_onset(_state(age=50, female=False, bmi=27, sbp=125, dbp=80))
    four_year = 1 - (1 - annual) ** 4
    assert 0.08 < four_year < 0.25


def test_lace_points_and_readmission_calibration() -> None:
    assert risk.lace(0, False, 0, 0) == 0
    assert risk.lace(2, True, 1, 1) == 2 + 3 + 1 + 1
    assert risk.lace(20, True, 6, 9) == 7 + 3 + 5 + 4 == 19
    assert risk.readmission_risk(0) == pytest.approx(0.02, abs=0.005)
    assert risk.readmission_risk(10) == pytest.approx(0.13, abs=0.02)
    assert risk.readmission_risk(19) == pytest.approx(0.45, abs=0.03)


@pytest.mark.parametrize("female", [True, False])
@pytest.mark.parametrize("egfr", [15.0, 45.0, 75.0, 110.0])
def test_creatinine_inverts_ckd_epi_2021(female: bool, egfr: float) -> None:
    scr = creatinine_from_egfr(egfr, 60, female)
    assert egfr_from_creatinine(scr, 60, female) == pytest.approx(egfr, rel=1e-6)


def test_npis_carry_a_valid_luhn_check_digit() -> None:
    assert npi_check_digit("123456789") == "3"  # CMS's example NPI 1234567893
    staff = clinicians(1)
    assert len({c.npi for c in staff}) == len(staff) == 20
    assert all(c.npi[-1] == npi_check_digit(c.npi[:9]) for c in staff)
