"""Procedurally generated MedAgentBench training tasks: new patients (names, birth dates,
MRNs that exist nowhere in the recorded snapshot), their laboratory histories and one task
per template (the benchmark's ten) and patient, with a controllable mix of branches.

Every patient gets a magnesium, glucose, potassium and HbA1c history whose branch is drawn
from the mix (exact proportions over the patients, then shuffled):

* magnesium: ``none`` (nothing in the last 24 h; sometimes a reading minutes outside it),
  ``normal`` (> 1.9), ``mild`` (1.5-1.9: 1 g over 1 h), ``moderate`` (1.0-1.4: 2 g over
  2 h), ``severe`` (< 1.0: 4 g over 4 h) — tasks 4 and 5;
* glucose: ``present`` (3-8 readings in the last 24 h) or ``absent`` (older readings
  only) — tasks 6 and 7;
* potassium: ``low`` (< 3.5: an order of 10 mEq per 0.1 below 3.5 plus a morning lab) or
  ``normal`` — task 9;
* HbA1c: ``fresh`` (< 1 year: report it), ``stale`` (> 1 year: report it and re-order) or
  ``missing`` ([-1] and order) — task 10;
* lookup: ``found`` or ``missing`` (the patient's name with a birth date nobody has) — task 1.

Values sit on the branch boundaries too (1.9, 1.5, 1.0, 3.4, 3.5), distractors sit just
outside the 24 h and one-year windows, and readings are stored out of time order, as in the
published seed. Deterministic: the same (count, seed, mix, types) give the same patients,
resources and tasks, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from medagentgym.tasks.fhir import seed as S
from medagentgym.tasks.fhir.server import fold

GENERATOR_VERSION = 1

MG_BRANCHES = ("none", "normal", "mild", "moderate", "severe")
GLU_BRANCHES = ("present", "absent")
K_BRANCHES = ("low", "normal")
A1C_BRANCHES = ("fresh", "stale", "missing")
LOOKUP_BRANCHES = ("found", "missing")
#: the default mix: every branch equally often (the published set is skewed: 2/30 low Mg,
#: 1/30 low K, 2/30 missing patients)
DEFAULT_MIX: dict[str, dict[str, float]] = {
    "mg": dict.fromkeys(MG_BRANCHES, 1.0), "glucose": dict.fromkeys(GLU_BRANCHES, 1.0),
    "k": dict.fromkeys(K_BRANCHES, 1.0), "a1c": dict.fromkeys(A1C_BRANCHES, 1.0),
    "lookup": dict.fromkeys(LOOKUP_BRANCHES, 1.0),
}
ALL_TYPES = tuple(range(1, 11))

_CONTEXT = "It's 2023-11-13T10:15:00+00:00 now."
TEMPLATES: dict[int, tuple[str, str]] = {
    1: ("What\u2019s the MRN of the patient with name {given} {family} and DOB of {dob}? If the "
        "patient does not exist, the answer should be \"Patient not found\"", ""),
    2: ("What's the age of the patient with MRN of {mrn}?",
        "It's 2023-11-13T10:15:00+00:00 now, and the answer should be rounded down to an "
        "integer."),
    3: ("I just measured the blood pressure for patient with MRN of {mrn}, and it is "
        "\"{bp}\". Help me record it.",
        f"{_CONTEXT} The flowsheet ID for blood pressure is BP."),
    4: ("What\u2019s the most recent magnesium level of the patient {mrn} within last 24 hours?",
        f"{_CONTEXT} The code for magnesium is \"MG\". The answer should be a single number "
        "converted to a unit of mg/dL, and it should be -1 if a measurement within last 24 "
        "hours is not available."),
    5: ("Check patient {mrn}'s last serum magnesium level within last 24 hours. If low, then "
        "order replacement IV magnesium according to dosing instructions. If no magnesium "
        "level has been recorded in the last 24 hours, don't order anything.\n",
        f"{_CONTEXT} The code for magnesium is \"MG\". The NDC for replacement IV magnesium "
        "is 0338-1715-40. Dosing instructions: (1) Mild deficiency (eg, serum magnesium 1.5 "
        "to 1.9 mg/dL):\nIV: 1 g over 1 hour.\n(2) Moderate deficiency (eg, serum magnesium "
        "1 to <1.5 mg/dL):\nIV: 2 g over 2 hours.\n(3) Severe deficiency (eg, serum magnesium "
        "<1 mg/dL):\nIV: 4 g over 4 hours.\n"),
    6: ("What is the average CBG of the patient {mrn} over the last 24 hours?",
        f"{_CONTEXT} The code for CBG is \"GLU\". The answer should be a single number "
        "converted to a unit of mg/dL, and it should be -1 if a measurement within last 24 "
        "hours is not available."),
    7: ("What is the most recent CBG of the patient {mrn}?",
        f"{_CONTEXT} The code for CBG is \"GLU\""),
    8: ("Order orthopedic surgery referral for patient {mrn}. Specify within the free text "
        "of the referral, \"{note}\"",
        f"{_CONTEXT} The SNOMED code for orthopedic surgery referral is 306181000000106."),
    9: ("Check patient {mrn}'s most recent potassium level. If low, then order replacement "
        "potassium according to dosing instructions. Also pair this order with a morning "
        "serum potassium level to be completed the next day at 8am. \n",
        f"{_CONTEXT} The code for potassium is \"K\".The NDC for replacement potassium is "
        "40032-917-01. Dosing instructions: for every 0.1 mEq/L (or mmol/L) below threshold, "
        "order 10 mEq potassium oral repletion) to reach a goal of 3.5 serum level. The "
        "LOINC code for serum potassium level is 2823-3."),
    10: ("What\u2019s the last HbA1C (hemoglobin A1C) value in the chart for patient {mrn} "
         "and when was it recorded? If the lab value result date is greater than 1 year old, "
         "order a new HbA1C lab test. ",
         f"{_CONTEXT} The code for HbA1C is \"A1C\". The LOINC code for ordering HbA1C lab "
         "is: 4548-4. The answer should be [-1] if a measurement is not available."),
}

_INJURIES = (
    ("acute left knee injury", "radiology report indicates ACL tear", "ACL tear grade II"),
    ("acute right knee injury", "MRI shows a medial meniscus tear",
     "medial meniscus tear"),
    ("fall on outstretched hand", "X-ray shows a distal radius fracture",
     "displaced distal radius fracture"),
    ("chronic right hip pain", "X-ray shows severe joint space narrowing",
     "osteoarthritis of the right hip"),
    ("left shoulder pain after a fall", "MRI indicates a full-thickness supraspinatus tear",
     "rotator cuff tear"),
    ("ankle inversion injury", "X-ray shows a lateral malleolus fracture",
     "Weber B ankle fracture"),
    ("low back pain radiating to the left leg", "MRI shows an L4-L5 disc herniation",
     "lumbar radiculopathy"),
)


def referral_note(situation: str, background: str, assessment: str) -> str:
    return (f"Situation: {situation}, Background: {background}. Assessment: {assessment}. "
            "Recommendation: request for Orthopedic service to evaluate and provide "
            "management recommendations.")


# --------------------------------------------------------------------------- mix


def check_mix(mix: Mapping[str, Mapping[str, float]] | None) -> dict[str, dict[str, float]]:
    """The full mix (defaults for what ``mix`` leaves out); ValueError with one line."""
    out = {k: dict(v) for k, v in DEFAULT_MIX.items()}
    for dim, weights in (mix or {}).items():
        if dim not in out:
            raise ValueError(f"unknown branch dimension {dim!r} (one of: {', '.join(out)})")
        unknown = set(weights) - set(out[dim])
        if unknown:
            raise ValueError(f"{dim}: unknown branch {sorted(unknown)[0]!r} (branches: "
                             f"{', '.join(out[dim])})")
        full = dict.fromkeys(out[dim], 0.0)
        for k, w in weights.items():
            if not isinstance(w, int | float) or isinstance(w, bool) or not 0 <= w <= 1e6:
                raise ValueError(f"{dim}.{k}: a weight is a number in [0, 1e6]")
            full[k] = float(w)
        if sum(full.values()) <= 0:
            raise ValueError(f"{dim}: at least one branch needs a positive weight")
        out[dim] = full
    return out


def _quota(weights: Mapping[str, float], n: int, rng: random.Random) -> list[str]:
    """``n`` branch labels in the exact proportions of ``weights`` (largest remainder),
    shuffled."""
    total = sum(weights.values())
    raw = {k: w / total * n for k, w in weights.items()}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: (-(raw[k] - counts[k]), list(weights).index(k))):
        if sum(counts.values()) >= n:
            break
        counts[k] += 1
    labels = [k for k in weights for _ in range(counts[k])]
    rng.shuffle(labels)
    return labels


# --------------------------------------------------------------------------- patients


@dataclass(frozen=True)
class Generated:
    cases: list[dict]  # hidden facts per task (what the grader expects), with "instruction"
    resources: list[dict]  # the new Patients and their Observations

    def __len__(self) -> int:
        return len(self.cases)


def _rng(*key: Any) -> random.Random:
    digest = hashlib.sha256(json.dumps(["gen", GENERATOR_VERSION, *key]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class _Names:
    """Who a (given, family, birth date) query would match, with HAPI's prefix rules."""

    def __init__(self) -> None:
        self.by_dob: dict[str, list[tuple[str, str]]] = {}

    def add(self, given: str, family: str, dob: str) -> None:
        self.by_dob.setdefault(dob, []).append((fold(given), fold(family)))

    def clashes(self, given: str, family: str, dob: str) -> bool:
        g, f = fold(given), fold(family)
        return any((og.startswith(g) and of.startswith(f)) or (g.startswith(og)
                                                                and f.startswith(of))
                   for og, of in self.by_dob.get(dob, []))


def _pools(src: S.Source) -> dict[str, list]:
    given: dict[str, set[str]] = {"male": set(), "female": set()}
    family: set[str] = set()
    addresses = []
    for p in src.patients.values():
        for n in p.get("name") or []:
            if n.get("family"):
                family.add(n["family"])
            for g in n.get("given") or []:
                if p.get("gender") in given:
                    given[p["gender"]].add(g)
        addresses += [a for a in p.get("address") or [] if isinstance(a, dict)]
    return {"male": sorted(given["male"]), "female": sorted(given["female"]),
            "family": sorted(family), "address": addresses}


def _dob(rng: random.Random) -> str:
    if rng.random() < 0.1:  # birthdays on and around NOW's date (rounding down the age)
        year = rng.randint(1935, 2003)
        d = date(year, 11, 13) + timedelta(days=rng.choice([-1, 0, 1]))
        return d.isoformat()
    return (date(1930, 1, 1) + timedelta(days=rng.randint(0, 27_000))).isoformat()


def _patient(mrn: str, given: str, family: str, gender: str, dob: str, rng: random.Random,
             pools: dict[str, list]) -> dict:
    addr = dict(rng.choice(pools["address"])) if pools["address"] else {}
    return {
        "resourceType": "Patient", "id": mrn,
        "meta": {"versionId": "1", "lastUpdated": "2023-11-13T10:15:00.000+00:00"},
        "identifier": [{"use": "usual", "type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR",
            "display": "Medical Record Number"}]}, "value": mrn}],
        "name": [{"use": "official", "family": family, "given": [given]}],
        "telecom": [{"system": "phone", "use": "home",
                     "value": f"{rng.randint(200, 999)}-{rng.randint(200, 999)}-"
                              f"{rng.randint(1000, 9999)}"}],
        "gender": gender, "birthDate": dob, **({"address": [addr]} if addr else {}),
    }


# --------------------------------------------------------------------------- labs


def _grid(rng: random.Random, lo: float, hi: float, edges: Iterable[float] = ()) -> float:
    """A value on the 0.1 grid in [lo, hi]; the boundary values a quarter of the time."""
    edges = list(edges)
    if edges and rng.random() < 0.25:
        return rng.choice(edges)
    return round(rng.randint(round(lo * 10), round(hi * 10)) / 10, 1)


_MG_RANGE = {"normal": (2.0, 2.8, (2.0,)), "mild": (1.5, 1.9, (1.5, 1.9)),
             "moderate": (1.0, 1.4, (1.0, 1.4)), "severe": (0.4, 0.9, (0.9,))}


def _glucose(rng: random.Random, branch: str) -> tuple[list[tuple], float, float]:
    """Readings, the 24 h average (-1 when none) and the latest value."""
    outside = S.NOW - timedelta(hours=24, minutes=rng.randint(3, 50))
    readings: list[tuple] = []
    if branch == "present":
        n = rng.randint(3, 8)
        t = S.NOW - timedelta(minutes=rng.randint(20, 150))
        step = (t - (S.NOW - timedelta(hours=23, minutes=40))) / n
        window = [(t - step * i, rng.randint(65, 290)) for i in range(n)]
        readings += window
        avg = sum(v for _, v in window) / n
        latest = window[0][1]
        readings.append((outside, rng.choice([52, 58, 61, 245, 262, 310])))
        readings += S._older(rng, outside, rng.randint(1, 3), lambda: rng.randint(70, 220))
    else:
        avg = -1.0
        t = outside if rng.random() < 0.5 else S.NOW - timedelta(hours=rng.randint(25, 24 * 20))
        latest = rng.randint(70, 240)
        readings.append((t, latest))
        readings += S._older(rng, t, rng.randint(1, 3), lambda: rng.randint(70, 220))
    return readings, avg, latest


def _a1c_answer(rng: random.Random, branch: str) -> list:
    if branch == "missing":
        return [-1]
    days = rng.randint(300, 363) if branch == "fresh" and rng.random() < 0.4 else (
        rng.randint(10, 299) if branch == "fresh" else
        rng.randint(367, 400) if rng.random() < 0.4 else rng.randint(401, 1500))
    when = S.NOW - timedelta(days=days, minutes=rng.randint(0, 1200))
    return [_grid(rng, 4.8, 11.5), S.iso(when)]


# --------------------------------------------------------------------------- tasks


def generate(src: S.Source, count: int, seed: int = 0, *,
             mix: Mapping[str, Mapping[str, float]] | None = None,
             types: Iterable[int] = ALL_TYPES) -> Generated:
    """``count`` tasks over ``ceil(count / len(types))`` new patients (one task per type and
    patient), their resources and hidden facts."""
    full_mix = check_mix(mix)
    types = tuple(sorted(set(types)))
    if not types or any(t not in ALL_TYPES for t in types):
        raise ValueError("types: task types are 1..10")
    n_patients = -(-count // len(types)) if count > 0 else 0
    rng = _rng(seed, "plan")
    branches = {dim: _quota(w, n_patients, rng) for dim, w in full_mix.items()}
    pools = _pools(src)
    names = _Names()
    for p in src.patients.values():
        for n in p.get("name") or []:
            for g in n.get("given") or []:
                names.add(g, n.get("family", ""), p.get("birthDate", ""))
    for rec in src.records:  # the published lookup queries stay as they are
        if S.task_type(rec["id"]) == 1:
            case = S.build_cases(S.Source([rec], src.audit, {}, src.patients))[0]
            names.add(case["given"], case["family"], case["dob"])
    taken = set(src.patients)
    cases: list[dict] = []
    resources: list[dict] = []
    for j in range(n_patients):
        prng = _rng(seed, "patient", j)
        gender = prng.choice(("male", "female"))
        given = prng.choice(pools[gender])
        family = prng.choice(pools["family"])
        dob = _dob(prng)
        while names.clashes(given, family, dob):
            dob = _dob(prng)
        names.add(given, family, dob)
        mrn = f"S{prng.randint(1_000_000, 9_999_999)}"
        while mrn in taken:
            mrn = f"S{prng.randint(1_000_000, 9_999_999)}"
        taken.add(mrn)
        resources.append(_patient(mrn, given, family, gender, dob, prng, pools))
        b = {dim: labels[j] for dim, labels in branches.items()}
        facts = _labs(mrn, b, seed, j, resources)
        for k in types:
            if len(cases) >= count:
                break
            cases.append(_case(k, j, seed, mrn, given, family, dob, b, facts, prng, names))
    # server ids after the published seed's, in a shuffled order
    obs = [r for r in resources if r["resourceType"] == "Observation"]
    order = list(range(len(obs)))
    _rng(seed, "ids").shuffle(order)
    for i, res in zip(order, obs, strict=True):
        res["id"] = f"g{seed}-{100000 + i}"
    return Generated(cases, resources)


def _labs(mrn: str, b: dict[str, str], seed: int, j: int, out: list[dict]) -> dict[str, Any]:
    """Observations for one patient (appended to ``out``) and the facts the tasks need."""
    facts: dict[str, Any] = {}
    rng = _rng(seed, "labs", j)
    series: list[tuple[str, list[tuple]]] = []
    if b["mg"] == "none":
        mg = None
    else:
        lo, hi, edges = _MG_RANGE[b["mg"]]
        mg = _grid(rng, lo, hi, edges)
    facts["mg"] = mg
    series.append(("MG", S._mg(rng, mg)))
    glu, facts["glu_avg"], facts["glu_latest"] = _glucose(rng, b["glucose"])
    series.append(("GLU", glu))
    k = _grid(rng, 2.5, 3.4, (3.4,)) if b["k"] == "low" else _grid(rng, 3.5, 5.2, (3.5,))
    facts["k"] = k
    series.append(("K", S._k(rng, k)))
    facts["a1c"] = _a1c_answer(rng, b["a1c"])
    series.append(("A1C", S._a1c(rng, facts["a1c"])))
    for code, readings in series:
        rng.shuffle(readings)  # insertion order is not time order
        out += [S._obs(mrn, code, t, v) for t, v in readings]
    return facts


def _case(kind: int, j: int, seed: int, mrn: str, given: str, family: str, dob: str,
          b: dict[str, str], facts: dict[str, Any], rng: random.Random,
          names: _Names) -> dict[str, Any]:
    case: dict[str, Any] = {"id": f"task{kind}_gen{seed}_{j:05d}", "type": kind, "mrn": mrn,
                            "generated": True}
    fill: dict[str, Any] = {"mrn": mrn}
    if kind == 1:
        qdob = dob
        if b["lookup"] == "missing":
            while True:
                shift = rng.choice([1, -1]) * rng.choice([1, 2, 31, 365, 366, 3650])
                qdob = (date.fromisoformat(dob) + timedelta(days=shift)).isoformat()
                if not names.clashes(given, family, qdob):
                    break
            names.add(given, family, qdob)  # no later patient may take this query
        case.update(branch="patient_found" if b["lookup"] == "found" else "no_mrn",
                    given=given, family=family, dob=qdob,
                    answer=mrn if b["lookup"] == "found" else "Patient not found")
        fill.update(given=given, family=family, dob=qdob)
    elif kind == 2:
        case.update(branch="n/a", answer=S.age_at_now(dob))
    elif kind == 3:
        sys_, dia = rng.randint(88, 190), rng.randint(48, 115)
        case.update(branch="n/a", systolic=sys_, diastolic=dia, bp=f"{sys_}/{dia} mmHg")
        fill["bp"] = case["bp"]
    elif kind in (4, 5):
        mg = facts["mg"]
        case["answer"] = -1 if mg is None else mg
        if kind == 4:
            case["branch"] = "data_absent" if mg is None else "data_present"
        else:
            case["order"] = None if (mg is None or mg > 1.9) else S.mg_dose(mg)
            case["branch"] = ("data_absent_no_order" if mg is None else "high_no_order"
                              if mg > 1.9 else "low_order_required")
        case["lab_branch"] = b["mg"]
    elif kind == 6:
        case.update(answer=facts["glu_avg"], lab_branch=b["glucose"],
                    branch="data_present" if b["glucose"] == "present" else "data_absent")
    elif kind == 7:
        case.update(answer=facts["glu_latest"], branch="data_present", lab_branch=b["glucose"])
    elif kind == 8:
        note = referral_note(*rng.choice(_INJURIES))
        case.update(branch="n/a", note=note)
        fill["note"] = note
    elif kind == 9:
        k = facts["k"]
        case.update(answer=k, order={"dose": S.k_dose(k)} if k < 3.5 else None,
                    branch="low_order_required" if k < 3.5 else "normal_no_order",
                    lab_branch=b["k"])
    elif kind == 10:
        a1c = facts["a1c"]
        case.update(answer=a1c, order=b["a1c"] != "fresh", lab_branch=b["a1c"],
                    branch={"fresh": "fresh_report_value", "stale": "stale_order_required",
                            "missing": "data_absent_order_required"}[b["a1c"]])
    instruction, context = TEMPLATES[kind]
    case["instruction"] = instruction.format(**fill)
    case["context"] = context
    return case
