"""Simulates one patient's records year by year: physiology drifts, risk models fire,
visits are made and measured. Pure: a seeded `random.Random` in, a `Timeline` out.

Latent values (the patient's true blood pressure, HbA1c, eGFR, LDL) evolve yearly; each
visit measures them with realistic noise, so labels are random draws from risk models fed by
what earlier visits recorded, never a copy of a recorded value.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from carebase.data.synthetic import risk_models as risk
from carebase.data.synthetic.codes import ACUTE_REASONS, ALLERGIES
from carebase.data.synthetic.demographics import SITES, Clinician, Person, draw_person
from carebase.data.synthetic.physiology import Physiology, measure_labs, measure_vitals

# The records cover these years; fixed dates (not "today") keep the output reproducible.
FIRST_YEAR = 2015
LAST_YEAR = 2025
RECORDS_START = date(FIRST_YEAR, 1, 1)
ADULT_FROM = 25  # the latent physiology starts at this age
CHRONIC = ("t2d", "hypertension", "ckd", "hyperlipidemia", "heart_failure", "copd")


@dataclass(slots=True)
class Visit:
    """One encounter and everything recorded at it."""

    kind: str  # checkup, followup, emergency, inpatient
    start: datetime
    end: datetime
    site: str
    clinician: str
    reason: str | None = None  # problem key
    vitals: dict[str, float] = field(default_factory=dict)
    labs: dict[str, float] = field(default_factory=dict)
    diagnoses: list[str] = field(default_factory=list)  # problems first recorded here
    prescriptions: list[tuple[str, str]] = field(default_factory=list)  # (drug, problem)
    procedures: list[str] = field(default_factory=list)
    vaccines: list[str] = field(default_factory=list)
    emergent: bool = False
    readmission: bool = False
    died: bool = False  # the patient died during this encounter


@dataclass(slots=True)
class Timeline:
    """A patient's whole record, ready to be turned into FHIR resources."""

    number: int
    person: Person
    smoking: str  # never, former, current
    home_site: str
    doctor: str  # clinician key of the patient's usual doctor
    allergies: list[int]  # indexes into codes.ALLERGIES
    onsets: dict[str, date]  # onset of conditions that began before the records
    family_history_diabetes: bool
    visits: list[Visit]
    death: datetime | None


def _at(rng: random.Random, day: date, first_hour: int = 8, last_hour: int = 17) -> datetime:
    return datetime(
        day.year,
        day.month,
        day.day,
        rng.randint(first_hour, last_hour),
        rng.choice((0, 15, 30, 45)),
    )


def _day_in(rng: random.Random, year: int, after: date | None = None) -> date:
    """A day of `year`, later than `after` when given (at the latest the day after it)."""
    first = date(year, 1, 1) if after is None else max(date(year, 1, 1), after + timedelta(days=1))
    span = (date(year, 12, 31) - first).days
    return first + timedelta(days=rng.randint(0, max(span, 0)))


def _poisson(rng: random.Random, rate: float) -> int:
    limit, k, p = math.exp(-rate), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class _Simulation:
    """The mutable state of one patient's simulation."""

    def __init__(self, rng: random.Random, number: int, staff: list[Clinician]) -> None:
        self.rng = rng
        self.person = draw_person(rng, number, RECORDS_START)
        self.number = number
        site = rng.choice([s for s in SITES if not s.hospital])
        self.home_site = site.key
        doctors = [c for c in staff if c.site == site.key and c.qualification == "MD"]
        self.doctor = rng.choice(doctors).key
        self.hospital_staff = [
            c.key for c in staff if c.site == SITES[0].key and c.qualification == "MD"
        ]
        self.smoking = rng.choices(("never", "former", "current"), (0.58, 0.25, 0.17))[0]
        self.body = Physiology.draw(rng, self.person.sex == "female")
        self.state = risk.RiskState(
            age=self._age(RECORDS_START),
            female=self.person.sex == "female",
            bmi=self.body.bmi,
            sbp=self.body.sbp,
            dbp=self.body.dbp,
            hba1c=self.body.hba1c,
            egfr=self.body.egfr,
            smoker=self.smoking == "current",
            physically_active=rng.random() < 0.45,
            eats_vegetables_daily=rng.random() < 0.4,
            family_history_diabetes=rng.random() < 0.25,
            parental_hypertension=rng.choices((0, 1, 2), (0.45, 0.38, 0.17))[0],
        )
        self.allergies = [i for i, a in enumerate(ALLERGIES) if rng.random() < a[3]]
        self.visits: list[Visit] = []
        self.drugs: set[str] = set()
        self.diagnosed: set[str] = set()
        self.death: datetime | None = None
        self.onsets: dict[str, date] = {}  # conditions that began before the records
        self.prevalent_drugs: dict[str, str] = {}
        # This year's latest recorded visit so far: the year's later visits come after it,
        # so nobody is followed up for a problem before the visit that records it.
        self.not_before: date | None = None

    def _age(self, day: date) -> float:
        return (day - self.person.birth_date).days / 365.25

    # --- visits -----------------------------------------------------------------------------
    def _visit(self, kind: str, day: date, reason: str | None = None) -> Visit:
        rng = self.rng
        if kind in ("emergency", "inpatient"):
            start = _at(rng, day, 0, 23)
            visit = Visit(
                kind,
                start,
                start + timedelta(hours=rng.randint(2, 7)),
                SITES[0].key,
                rng.choice(self.hospital_staff),
                reason,
                emergent=True,
            )
        else:
            start = _at(rng, day)
            visit = Visit(
                kind,
                start,
                start + timedelta(minutes=rng.choice((15, 20, 30))),
                self.home_site,
                self.doctor,
                reason,
            )
        self.state.age = self._age(day)
        visit.vitals = measure_vitals(rng, self.body, self.drugs)
        self.visits.append(visit)
        return visit

    def _diagnose(self, visit: Visit, problem: str, drug: str | None = None) -> None:
        if problem not in self.diagnosed:
            self.diagnosed.add(problem)
            visit.diagnoses.append(problem)
        if drug and drug not in self.drugs:
            self.drugs.add(drug)
            visit.prescriptions.append((drug, problem))

    def _labs(self, visit: Visit, panels: tuple[str, ...]) -> None:
        visit.labs.update(
            measure_labs(self.rng, self.body, self.drugs, self.state.age, self.state.female, panels)
        )

    def _checkup(self, year: int, first: bool) -> None:
        rng, s = self.rng, self.state
        chronic = any(p in self.diagnosed for p in CHRONIC)
        if not (chronic or first or rng.random() < 0.8):
            return
        visit = self._visit("checkup", _day_in(rng, year))
        self.not_before = visit.start.date()
        panels = ("glucose", "kidney", "lipids") if (chronic or rng.random() < 0.7) else ()
        self._labs(visit, panels)
        if first and s.family_history_diabetes:
            self._diagnose(visit, "family_history_diabetes")
        if first:
            self._record_history(visit)
        if visit.vitals["bmi"] >= 30 and "obesity" not in self.diagnosed:
            self._diagnose(visit, "obesity")
        hba1c = visit.labs.get("hba1c")
        if hba1c is not None and 5.7 <= hba1c < 6.5 and rng.random() < 0.6:
            self._diagnose(visit, "prediabetes")
        ldl = visit.labs.get("ldl")
        if ldl is not None and (ldl >= 160 or (s.diabetes and s.age >= 40 and ldl >= 100)):
            self._diagnose(visit, "hyperlipidemia", "simvastatin")
        egfr = visit.labs.get("egfr")
        if egfr is not None and egfr < 60 and self.body.egfr < 60:
            s.ckd = True
            self._diagnose(visit, "ckd", "lisinopril")
        if s.hypertension and visit.vitals["sbp"] >= 145 and "amlodipine" not in self.drugs:
            self._diagnose(visit, "hypertension", "amlodipine")
        visit.vaccines.extend(self._vaccines(year, first))
        if 50 <= s.age <= 75 and "colonoscopy_done" not in self.diagnosed and rng.random() < 0.08:
            self.diagnosed.add("colonoscopy_done")
            visit.procedures.append("colonoscopy")

    def _vaccines(self, year: int, first: bool) -> list[str]:
        rng, given = self.rng, []
        if rng.random() < 0.5:
            given.append("influenza")
        if (first or year % 10 == self.number % 10) and rng.random() < 0.3:
            given.append("tdap")
        if self.state.age >= 65 and "ppsv23_given" not in self.diagnosed and rng.random() < 0.6:
            self.diagnosed.add("ppsv23_given")
            given.append("ppsv23")
        return given

    def _followups(self, year: int) -> None:
        s, count = self.state, 0
        count += 2 if s.diabetes else 0
        count += 1 if s.hypertension else 0
        count += 1 if s.ckd else 0
        for _ in range(min(count, 3)):
            day = _day_in(self.rng, year, self.not_before)
            visit = self._visit("followup", day, self._main_problem())
            panels = ("glucose",) if s.diabetes else ()
            self._labs(visit, panels + (("kidney",) if s.ckd else ()))

    def _main_problem(self) -> str | None:
        for problem in ("t2d", "ckd", "hypertension"):
            if problem in self.diagnosed:
                return problem
        return None

    # --- acute care ---------------------------------------------------------------------------
    def _acute_reason(self) -> str:
        reasons = [(r, w) for r, w in ACUTE_REASONS if r != "heart_failure" or self.state.age >= 55]
        return self.rng.choices([r for r, _ in reasons], [w for _, w in reasons])[0]

    def _emergencies(self, year: int) -> None:
        rng = self.rng
        for _ in range(_poisson(rng, risk.emergency_rate(self.state))):
            reason = self._acute_reason()
            visit = self._visit("emergency", _day_in(rng, year), reason)
            self._treat_acute(visit, reason)
            if rng.random() < risk.admitted_from_emergency(self.state):
                self._admit(visit.end, reason, readmission=False)

    def _treat_acute(self, visit: Visit, reason: str) -> None:
        if reason in ("pneumonia", "bronchitis", "uti") and "91936005" not in [
            ALLERGIES[i][0] for i in self.allergies
        ]:
            visit.prescriptions.append(("amoxicillin", reason))
        visit.procedures.extend(
            {
                "chest_pain": ["ecg"],
                "heart_failure": ["ecg", "chest_xray"],
                "pneumonia": ["chest_xray"],
                "ankle_fracture": ["fracture_care"],
            }.get(reason, [])
        )
        visit.diagnoses.append(reason)
        if reason == "heart_failure":
            self.state.heart_failure = True
        if reason == "copd_exacerbation":
            self.state.copd = True

    def _admit(self, when: datetime, reason: str, *, readmission: bool, depth: int = 0) -> None:
        rng, s = self.rng, self.state
        visit = self._visit("inpatient", when.date(), reason)
        visit.start, visit.readmission = when, readmission
        mean_days = math.exp(1.1 + 0.012 * (s.age - 60) + 0.12 * risk.charlson(s))
        stay = max(1, round(rng.lognormvariate(math.log(mean_days), 0.5)))
        visit.end = when + timedelta(days=stay, hours=rng.randint(-4, 4))
        if readmission:
            self._treat_acute(visit, reason)
        self._labs(visit, ("glucose", "kidney"))
        if rng.random() < risk.in_hospital_death(s):
            self.death = visit.start + (visit.end - visit.start) * rng.uniform(0.2, 1.0)
            return
        six_months = visit.start - timedelta(days=183)
        ed_visits = sum(
            1 for v in self.visits if v.kind == "emergency" and six_months <= v.start <= visit.start
        )
        score = risk.lace(stay, visit.emergent, risk.charlson(s), ed_visits)
        if depth < 2 and rng.random() < risk.readmission_risk(score):
            back = visit.end + timedelta(
                days=min(30, 1 + int(rng.expovariate(1 / 9))), hours=rng.randint(1, 12)
            )
            again = reason if rng.random() < 0.5 else self._acute_reason()
            self._admit(back, again, readmission=True, depth=depth + 1)

    # --- the year loop ------------------------------------------------------------------------
    def _disease_onsets(self, year: int) -> None:
        """This year's new diabetes and hypertension. Before the records start (`history`)
        they only remember the year; the first check-up records them."""
        rng, s, body = self.rng, self.state, self.body
        history = year < FIRST_YEAR
        if not s.prediabetes and not s.diabetes and rng.random() < risk.prediabetes_onset(s):
            s.prediabetes = True
            body.hba1c = max(body.hba1c, rng.uniform(5.7, 5.95))
        elif s.prediabetes and not s.diabetes and rng.random() < risk.diabetes_progression(s):
            s.diabetes = True
            body.hba1c = max(body.hba1c + 0.3, rng.uniform(6.6, 8.2))
            if history:
                self.onsets["t2d"] = _day_in(rng, year)
            else:
                visit = self._visit("followup", _day_in(rng, year, self.not_before), "t2d")
                self.not_before = visit.start.date()
                self._labs(visit, ("glucose",))
                self._diagnose(visit, "t2d", "metformin")
        if not s.hypertension and rng.random() < risk.hypertension_onset(s):
            s.hypertension = True
            body.sbp = max(body.sbp, rng.uniform(140, 158))
            body.dbp = max(body.dbp, rng.uniform(84, 96))
            drug = "lisinopril" if rng.random() < 0.7 else "hydrochlorothiazide"
            if history:
                self.onsets["hypertension"] = _day_in(rng, year)
                self.prevalent_drugs["hypertension"] = drug
            else:
                self.not_before = _day_in(rng, year, self.not_before)
                visit = self._visit("followup", self.not_before, "hypertension")
                self._diagnose(visit, "hypertension", drug)
        if history and not s.ckd and body.egfr < 60:
            s.ckd = True
            self.onsets["ckd"] = _day_in(rng, year)

    def _record_history(self, visit: Visit) -> None:
        """The first check-up takes the history: conditions that began before the records."""
        if "t2d" in self.onsets:
            self._diagnose(visit, "t2d", "metformin")
        if "hypertension" in self.onsets:
            self._diagnose(visit, "hypertension", self.prevalent_drugs["hypertension"])
        if "ckd" in self.onsets:
            self._diagnose(visit, "ckd", "lisinopril")

    def _sync_state(self) -> None:
        s, body = self.state, self.body
        s.bmi, s.sbp, s.dbp, s.hba1c, s.egfr = body.bmi, body.sbp, body.dbp, body.hba1c, body.egfr

    def run(self) -> Timeline:
        """Live through the years before the records (from age 25: risk factors and chronic
        disease, nobody dies), then the recorded years with visits."""
        rng, s = self.rng, self.state
        for year in range(self.person.birth_date.year + ADULT_FROM, FIRST_YEAR):
            s.age = self._age(date(year, 1, 1))
            self.body.drift(rng, s)
            self._sync_state()
            self._disease_onsets(year)
        for year in range(FIRST_YEAR, LAST_YEAR + 1):
            s.age = self._age(date(year, 1, 1))
            self.not_before = None
            self.body.drift(rng, s)
            self._sync_state()
            self._checkup(year, year == FIRST_YEAR)
            self._disease_onsets(year)
            self._followups(year)
            self._emergencies(year)
            if self.death is None and rng.random() < risk.death(s):
                self.death = _at(rng, _day_in(rng, year), 0, 23)
            if self.death is not None:
                break
        return self._finish()

    def _finish(self) -> Timeline:
        visits = sorted(self.visits, key=lambda v: v.start)
        if self.death is not None:
            visits = [v for v in visits if v.start < self.death]
            inpatient = [v for v in visits if v.kind == "inpatient" and v.end >= self.death]
            if inpatient:  # died in hospital
                inpatient[-1].end, inpatient[-1].died = self.death, True
                self.death = inpatient[-1].end
            for v in visits:  # nothing ends after death
                v.end = min(v.end, self.death)
        end_of_records = datetime(LAST_YEAR, 12, 31, 23, 59)
        visits = [v for v in visits if v.start < end_of_records]
        for v in visits:
            v.end = min(v.end, end_of_records)
        return Timeline(
            number=self.number,
            person=self.person,
            smoking=self.smoking,
            home_site=self.home_site,
            doctor=self.doctor,
            allergies=self.allergies,
            onsets=self.onsets,
            family_history_diabetes=self.state.family_history_diabetes,
            visits=visits,
            death=self.death,
        )


def simulate(seed: int, number: int, staff: list[Clinician]) -> Timeline:
    """The records of patient `number` of the population of `seed` (independent of other
    patients, so any patient can be regenerated alone)."""
    rng = random.Random(f"carebase-patient:{seed}:{number}")
    return _Simulation(rng, number, staff).run()
