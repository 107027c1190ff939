"""MedAgentBench's seed: the 500 recorded patients plus laboratory histories synthesised so
that each of the 300 tasks reproduces its original branch and reference value
(``reference_values_audit_per_row.json``), with distractor readings just outside the 24 h and
1-year windows and older readings of the other branch (so that "the first entry" is wrong).

Deterministic: every random choice is seeded by the patient and the lab code.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

NOW = datetime(2023, 11, 13, 10, 15, tzinfo=UTC)
NOW_TEXT = "2023-11-13T10:15:00+00:00"
SNAPSHOT = "fhir_snapshot_partial.jsonl.gz"
TASKS_FILE = "test_data_v2.json"
AUDIT_FILE = "reference_values_audit_per_row.json"
SPLIT_FILE = "medagentgym_split_ids.json"
LAB_SYSTEM = "urn:medagentbench:lab-code"
LABS = {"MG": ("MAGNESIUM", "mg/dL"), "GLU": ("GLUCOSE", "mg/dL"), "K": ("POTASSIUM", "mmol/L"),
        "A1C": ("HEMOGLOBIN A1C", "%")}
#: the lab each task type reads
TASK_LAB = {4: "MG", 5: "MG", 6: "GLU", 7: "GLU", 9: "K", 10: "A1C"}
SEED_VERSION = 1


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds")


def _rng(*key: Any) -> random.Random:
    digest = hashlib.sha256(json.dumps([SEED_VERSION, *key]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    records: list[dict]  # test_data_v2 rows
    audit: dict[str, dict]  # id -> audit row
    splits: dict[str, list[str]]
    patients: dict[str, dict]  # id -> Patient resource


def load_source(directory: Path) -> Source:
    records = json.loads((directory / TASKS_FILE).read_text())
    audit = {row["id"]: row for row in json.loads((directory / AUDIT_FILE).read_text())}
    splits = json.loads((directory / SPLIT_FILE).read_text())
    patients: dict[str, dict] = {}
    with gzip.open(directory / SNAPSHOT, "rt") as fh:
        for line in fh:
            row = json.loads(line)
            for entry in (row.get("data") or {}).get("entry") or []:
                res = entry.get("resource") or {}
                if res.get("resourceType") == "Patient":
                    patients[res["id"]] = res
    return Source(records, audit, splits, patients)


def task_type(task_id: str) -> int:
    return int(task_id.split("_")[0].removeprefix("task"))


def age_at_now(birth_date: str) -> int:
    y, m, d = (int(x) for x in birth_date.split("-"))
    return NOW.year - y - ((NOW.month, NOW.day) < (m, d))


# --------------------------------------------------------------------------- cases


def build_cases(src: Source) -> list[dict]:
    """Each task's hidden facts (what its grader expects), from the audit and the seed."""
    out = []
    for rec in src.records:
        tid = rec["id"]
        kind = task_type(tid)
        audit = src.audit[tid]
        mrn = rec.get("eval_MRN")
        case: dict[str, Any] = {"id": tid, "type": kind, "mrn": mrn, "branch": audit["branch"]}
        text = rec["instruction"]
        if kind == 1:
            m = re.search(r"name (.+?) and DOB of (\d{4}-\d{2}-\d{2})", text)
            assert m is not None, tid
            given, _, family = m.group(1).rpartition(" ")
            case.update(given=given, family=family, dob=m.group(2), answer=rec["sol"][0])
        elif kind == 2:
            case["answer"] = age_at_now(src.patients[mrn]["birthDate"])
        elif kind == 3:
            m = re.search(r'"(\d+)/(\d+) mmHg"', text)
            assert m is not None, tid
            case.update(systolic=int(m.group(1)), diastolic=int(m.group(2)),
                        bp=f"{m.group(1)}/{m.group(2)} mmHg")
        elif kind == 4:
            case["answer"] = audit["live_ref_sol"][0]
        elif kind == 5:
            v = audit["live_latest_24h"]
            case["answer"] = -1 if v is None else v
            case["order"] = None if (v is None or v > 1.9) else mg_dose(v)
        elif kind in (6, 7):
            case["answer"] = audit["live_ref_sol_approx"][0]
        elif kind == 8:
            m = re.search(r'referral, "(.*)"', text)
            assert m is not None, tid
            case["note"] = m.group(1)
        elif kind == 9:
            v = audit["live_latest_K"]
            case["answer"] = -1 if v is None else v
            case["order"] = None if (v is None or v >= 3.5) else {"dose": k_dose(v)}
        elif kind == 10:
            ref = audit["live_ref_sol"]
            case["answer"] = ref
            case["order"] = audit["branch"] != "fresh_report_value"
        out.append(case)
    return out


def mg_dose(value: float) -> dict[str, float]:
    """IV magnesium: grams and hours from the serum level (the task's instructions)."""
    if value < 1:
        return {"dose": 4, "hours": 4}
    if value < 1.5:
        return {"dose": 2, "hours": 2}
    return {"dose": 1, "hours": 1}


def k_dose(value: float) -> float:
    """Oral potassium: 10 mEq per 0.1 below 3.5."""
    return round((3.5 - value) / 0.1 * 10, 6)


# --------------------------------------------------------------------------- labs


def _obs(mrn: str, code: str, when: datetime, value: float | int) -> dict:
    display, unit = LABS[code]
    return {
        "resourceType": "Observation",
        "meta": {"versionId": "1", "lastUpdated": "2023-11-13T10:15:00.000+00:00"},
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory", "display": "Laboratory"}]}],
        "code": {"coding": [{"system": LAB_SYSTEM, "code": code, "display": display}],
                 "text": display},
        "subject": {"reference": f"Patient/{mrn}"},
        "effectiveDateTime": iso(when),
        "issued": iso(when + timedelta(hours=1)),
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                          "code": unit},
    }


def _older(rng: random.Random, before: datetime, n: int, make: Any) -> list[tuple]:
    out = []
    t = before
    for _ in range(n):
        t = t - timedelta(days=rng.randint(3, 120), minutes=rng.randint(0, 600))
        out.append((t, make()))
    return out


def _mg(rng: random.Random, latest: float | None) -> list[tuple[datetime, float]]:
    def other(v: float | None) -> float:
        if v is not None and v <= 1.9:
            return round(rng.uniform(2.0, 2.5), 1)
        return round(rng.uniform(1.1, 1.7), 1)

    readings: list[tuple[datetime, float]] = []
    outside = NOW - timedelta(hours=24, minutes=rng.randint(3, 50))
    if latest is None:
        if rng.random() < 0.4:
            return []
        readings.append((outside, other(None)))
    else:
        t_latest = NOW - timedelta(hours=rng.randint(1, 8), minutes=rng.randint(0, 59))
        readings.append((t_latest, latest))
        earlier = t_latest - timedelta(hours=rng.randint(3, 9))
        if earlier > NOW - timedelta(hours=23):
            readings.append((earlier, other(latest)))
        readings.append((outside, other(latest)))
    readings += _older(rng, outside, rng.randint(1, 3), lambda: round(rng.uniform(1.2, 2.6), 1))
    return readings


def _glu(rng: random.Random, avg: float | None, avg_known: bool,
         latest: float | None) -> list[tuple[datetime, float]]:
    readings: list[tuple[datetime, float]] = []
    outside = NOW - timedelta(hours=24, minutes=rng.randint(3, 50))
    if avg_known and avg is not None and avg != -1:
        frac = Fraction(avg).limit_denominator(60)
        assert abs(float(frac) - avg) < 1e-9, avg
        n = frac.denominator * math.ceil(3 / frac.denominator)
        total = int(frac * n)
        last = int(latest) if latest is not None else round(avg) + rng.randint(-15, 15)
        rest = total - last
        k = n - 1
        values = [rest // k + (1 if i < rest % k else 0) for i in range(k)]
        for i in range(0, k - 1, 2):  # keep the sum, spread the values
            j = rng.randint(3, 25)
            if values[i + 1] - j > 45:
                values[i] += j
                values[i + 1] -= j
        rng.shuffle(values)
        t = NOW - timedelta(minutes=rng.randint(30, 150))
        readings.append((t, last))
        span = (t - (NOW - timedelta(hours=23, minutes=30))) / (k + 1)
        for i, v in enumerate(values):
            readings.append((t - span * (i + 1), v))
        readings.append((outside, rng.choice([58, 61, 245, 262, 310])))
        readings += _older(rng, outside, rng.randint(1, 3), lambda: rng.randint(70, 220))
        return readings
    if latest is not None:  # latest known, no 24 h window asked for
        t = NOW - timedelta(hours=rng.randint(26, 24 * 20))
        readings.append((t, int(latest) if float(latest).is_integer() else latest))
        readings += _older(rng, t, rng.randint(1, 3), lambda: rng.randint(70, 220))
        return readings
    # no reading in the last 24 h
    if rng.random() < 0.3:
        return []
    readings.append((outside, rng.randint(70, 220)))
    readings += _older(rng, outside, rng.randint(0, 2), lambda: rng.randint(70, 220))
    return readings


def _k(rng: random.Random, latest: float) -> list[tuple[datetime, float]]:
    t = NOW - timedelta(hours=rng.randint(2, 24 * 5), minutes=rng.randint(0, 59))
    other = (round(rng.uniform(3.0, 3.3), 1) if latest >= 3.5 else round(rng.uniform(3.8, 4.6), 1))
    readings = [(t, latest)]
    older = _older(rng, t, rng.randint(1, 3), lambda: round(rng.uniform(3.4, 4.8), 1))
    older[0] = (older[0][0], other)
    return readings + older


def _a1c(rng: random.Random, answer: list) -> list[tuple[datetime, float]]:
    if answer == [-1]:
        return []
    value, when = answer
    t = datetime.fromisoformat(when)
    readings = [(t, value)]
    for _ in range(rng.randint(1, 3)):
        t = t - timedelta(days=rng.randint(100, 300))
        readings.append((t, round(max(4.5, value + rng.choice([-1, 1]) * rng.uniform(0.3, 1.2)), 1)))
    return readings


def synthesise_labs(cases: list[dict]) -> list[dict]:
    """Observations for every (patient, lab) a task reads, consistent across tasks."""
    want: dict[tuple[str, str], dict[str, Any]] = {}
    for c in cases:
        code = TASK_LAB.get(c["type"])
        if code is None:
            continue
        w = want.setdefault((c["mrn"], code), {})
        if c["type"] in (4, 5):
            v = None if c["answer"] == -1 else c["answer"]
            if "latest24" in w and w["latest24"] != v:
                raise ValueError(f"inconsistent MG for {c['mrn']}")
            w["latest24"] = v
        elif c["type"] == 6:
            w["avg"] = c["answer"]
        elif c["type"] == 7 or c["type"] == 9:
            w["latest"] = c["answer"]
        elif c["type"] == 10:
            w["a1c"] = c["answer"]
    out: list[dict] = []
    for (mrn, code), w in sorted(want.items()):
        rng = _rng(mrn, code)
        if code == "MG":
            readings = _mg(rng, w.get("latest24"))
        elif code == "GLU":
            readings = _glu(rng, w.get("avg"), "avg" in w, w.get("latest"))
        elif code == "K":
            readings = _k(rng, w["latest"])
        else:
            readings = _a1c(rng, w["a1c"])
        rng.shuffle(readings)  # insertion order is not time order
        out += [_obs(mrn, code, t, v) for t, v in readings]
    # server ids in a shuffled order over all patients
    order = list(range(len(out)))
    _rng("ids").shuffle(order)
    for i, res in zip(order, out, strict=True):
        res["id"] = str(20000 + i)
    return out


def build_seed_resources(src: Source, cases: list[dict]) -> list[dict]:
    return [*src.patients.values(), *synthesise_labs(cases)]
