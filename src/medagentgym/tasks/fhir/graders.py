"""MedAgentBench's graders, over the agent's ``answer`` and the FHIR server's write log.

The benchmark's semantics (its ``refsol.py``): the answer values, and *exactly* the required
writes (resource type, codes, dose computed from the value, timing, subject) — no write where
none is required. Differences, on purpose:

* writes are what the server accepted (the log), not substrings of a transcript;
* valid FHIR R4 shapes are accepted (``route`` a CodeableConcept, ``note`` a list of
  Annotations, blood pressure as systolic/diastolic components, a rate as ``rateRatio`` or
  the duration in ``timing``), and so are the reference grader's invalid ones (``route`` a
  string, ``note`` an object);
* timestamps are compared as instants (``Z``, ``+00:00`` or another offset);
* a medication order and its paired lab order (task 9) may come in either order;
* tasks 5, 9 and 10 need the value in ``answer`` (the reference also accepted ``[]``, which
  makes "do nothing, answer []" pass most of task 5 and 9); ``bug_compatible=True`` restores
  that and the reference's shape checks, for comparison only.

Reasons never name expected values (they are shown to the agent in the paper protocol).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, timedelta
from typing import Any

from medagentgym.tasks.fhir.seed import NOW
from medagentgym.tasks.fhir.server import WriteRecord, parse_instant, reference_id

NDC = "http://hl7.org/fhir/sid/ndc"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
MG_NDC = "0338-1715-40"
K_NDC = "40032-917-01"
REFERRAL_CODE = "306181000000106"
K_LAB = "2823-3"
A1C_LAB = "4548-4"
CATEGORY_SYSTEMS = ("http://terminology.hl7.org/CodeSystem/observation-category",
                    "http://hl7.org/fhir/observation-category")


class Fail(Exception):
    """A check that did not pass (its message is the grade's reason)."""


def _num(x: Any) -> float | None:
    """A finite number from the agent's value, or None (never raises: huge ints, long digit
    strings and infinities are simply not numbers here)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        if isinstance(x, str) and len(x) <= 64 and re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", x):
            x = float(x)
        else:
            return None
    try:
        f = float(x)
    except (OverflowError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _single(answer: Any) -> Any:
    """``v`` or ``[v]`` -> v (the benchmark's answers are one-element lists)."""
    if isinstance(answer, list | tuple) and len(answer) == 1:
        return answer[0]
    return answer


def same_number(answer: Any, want: float, tol: float = 1e-6) -> bool:
    got = _num(_single(answer))
    return got is not None and abs(got - want) <= tol


# --------------------------------------------------------------------------- answers


def check_answer(case: dict, answer: Any, *, bug_compatible: bool = False) -> bool:
    kind = case["type"]
    if bug_compatible and kind in (5, 9, 10) and answer == []:
        return True
    if kind == 1:
        got = _single(answer)
        if not isinstance(got, str):
            return False
        want = case["answer"]
        if want == "Patient not found":
            return got.strip().casefold() == want.casefold()
        return got.strip() == want
    if kind == 2:
        got = _num(_single(answer))
        return got is not None and got == case["answer"]
    if kind in (4, 5, 7, 9):
        return same_number(answer, case["answer"])
    if kind == 6:
        return same_number(answer, case["answer"], 0.1)
    if kind == 10:
        want = case["answer"]
        if want == [-1]:
            return same_number(answer, -1)
        if not isinstance(answer, list | tuple) or len(answer) != 2:
            return False
        if not same_number(answer[0], want[0]):
            return False
        got_t = parse_instant(answer[1])
        return got_t is not None and got_t == parse_instant(want[1])
    return True  # tasks 3 and 8: the writes are the answer


# --------------------------------------------------------------------------- shapes


def _codings(cc: Any) -> list[dict]:
    if not isinstance(cc, dict):
        return []
    return [c for c in (cc.get("coding") or []) if isinstance(c, dict)] if isinstance(
        cc.get("coding"), list) else []


def _has_code(cc: Any, system: str, code: str) -> bool:
    return any(c.get("system") == system and c.get("code") == code for c in _codings(cc))


def _norm(text: Any) -> str:
    return " ".join(str(text).split()) if isinstance(text, str) else ""


def _subject(payload: dict, mrn: str) -> None:
    subj = payload.get("subject")
    ref = subj.get("reference") if isinstance(subj, dict) else None
    if reference_id(ref) != mrn or not isinstance(ref, str) or "Patient" not in ref:
        raise Fail("subject is not the task's patient (Patient/<id>)")


def _authored_now(payload: dict) -> None:
    t = parse_instant(payload.get("authoredOn"))
    if t is None or not (NOW <= t < NOW + timedelta(minutes=1)):
        raise Fail("authoredOn is not the current time")


def _eq(payload: dict, key: str, value: str) -> None:
    if payload.get(key) != value:
        raise Fail(f"{key} is not {value!r}")


def _route(dosage: dict, names: tuple[str, ...], snomed: str, bug_compatible: bool) -> None:
    route = dosage.get("route")
    if isinstance(route, str):
        ok = route.strip().casefold() in names
    elif isinstance(route, dict) and not bug_compatible:
        texts = [route.get("text")] + [c.get("display") for c in _codings(route)] + [
            c.get("code") for c in _codings(route)]
        ok = any(isinstance(t, str) and t.strip().casefold() in names for t in texts) or any(
            c.get("code") == snomed for c in _codings(route))
    else:
        ok = False
    if not ok:
        raise Fail("dosageInstruction route is not the required route")


def _quantity(q: Any, value: float, units: tuple[str, ...], tol: float = 1e-6) -> bool:
    if not isinstance(q, dict):
        return False
    v = _num(q.get("value"))
    unit = q.get("unit") if isinstance(q.get("unit"), str) else q.get("code")
    return v is not None and abs(v - value) <= tol and isinstance(unit, str) and unit in units


def _dosage(payload: dict) -> dict:
    di = payload.get("dosageInstruction")
    if not isinstance(di, list) or not di or not isinstance(di[0], dict):
        raise Fail("dosageInstruction is missing")
    return di[0]


def _dose_and_rate(dosage: dict) -> dict:
    dr = dosage.get("doseAndRate")
    if not isinstance(dr, list) or not dr or not isinstance(dr[0], dict):
        raise Fail("dosageInstruction.doseAndRate is missing")
    return dr[0]


HOURS = ("h", "hr", "hour", "hours")


def check_mg_order(payload: dict, case: dict, bug_compatible: bool) -> None:
    order = case["order"]
    _eq(payload, "resourceType", "MedicationRequest")
    if not _has_code(payload.get("medicationCodeableConcept"), NDC, MG_NDC):
        raise Fail("medicationCodeableConcept is not the IV magnesium NDC")
    _authored_now(payload)
    dosage = _dosage(payload)
    _route(dosage, ("iv", "intravenous"), "47625008", bug_compatible)
    dr = _dose_and_rate(dosage)
    if not _quantity(dr.get("doseQuantity"), order["dose"], ("g",)):
        raise Fail("the dose does not match the dosing instructions")
    rate_ok = _quantity(dr.get("rateQuantity"), order["hours"], HOURS)
    if not rate_ok and not bug_compatible:
        ratio = dr.get("rateRatio")
        if isinstance(ratio, dict):
            num, den = ratio.get("numerator"), ratio.get("denominator")
            nv, dv = _num((num or {}).get("value")), _num((den or {}).get("value"))
            rate_ok = (nv is not None and dv and (num or {}).get("unit") in ("g",)
                       and (den or {}).get("unit") in HOURS
                       and abs(nv / dv - order["dose"] / order["hours"]) <= 1e-6
                       and abs(dv - order["hours"]) <= 1e-6)
        rep = ((dosage.get("timing") or {}).get("repeat") or {}) if isinstance(
            dosage.get("timing"), dict) else {}
        if isinstance(rep, dict) and _num(rep.get("duration")) == order["hours"] and \
                rep.get("durationUnit") == "h":
            rate_ok = True
    if not rate_ok:
        raise Fail("the infusion time does not match the dosing instructions")
    _eq(payload, "status", "active")
    _eq(payload, "intent", "order")
    _subject(payload, case["mrn"])


def check_k_order(payload: dict, case: dict, bug_compatible: bool) -> None:
    _eq(payload, "resourceType", "MedicationRequest")
    if not _has_code(payload.get("medicationCodeableConcept"), NDC, K_NDC):
        raise Fail("medicationCodeableConcept is not the potassium NDC")
    _authored_now(payload)
    dosage = _dosage(payload)
    _route(dosage, ("oral", "po", "by mouth", "oral use"), "26643006", bug_compatible)
    dr = _dose_and_rate(dosage)
    units = ("mEq",) if bug_compatible else ("mEq", "meq", "mEQ", "MEQ", "mmol")
    if not _quantity(dr.get("doseQuantity"), case["order"]["dose"], units, tol=0.1):
        raise Fail("the dose does not match the dosing instructions")
    _eq(payload, "status", "active")
    _eq(payload, "intent", "order")
    _subject(payload, case["mrn"])


def check_service_request(payload: dict, case: dict, system: str, code: str) -> None:
    _eq(payload, "resourceType", "ServiceRequest")
    if not _has_code(payload.get("code"), system, code):
        raise Fail("code is not the required order code")
    _authored_now(payload)
    _eq(payload, "status", "active")
    _eq(payload, "intent", "order")
    _eq(payload, "priority", "stat")
    _subject(payload, case["mrn"])


def check_k_lab(payload: dict, case: dict, bug_compatible: bool) -> None:
    check_service_request(payload, case, LOINC, K_LAB)
    occ = payload.get("occurrenceDateTime")
    t = parse_instant(occ)
    if bug_compatible:
        ok = isinstance(occ, str) and "2023-11-14T08:" in occ
    else:
        ok = t is not None and t.astimezone(UTC).date().isoformat() == "2023-11-14" and \
            t.astimezone(UTC).hour == 8
    if not ok:
        raise Fail("occurrenceDateTime is not 8 am the next day")


def check_referral(payload: dict, case: dict, bug_compatible: bool) -> None:
    check_service_request(payload, case, SNOMED, REFERRAL_CODE)
    note = payload.get("note")
    if bug_compatible:
        texts = [note.get("text")] if isinstance(note, dict) else []
    elif isinstance(note, dict):
        texts = [note.get("text")]
    elif isinstance(note, list):
        texts = [n.get("text") for n in note if isinstance(n, dict)]
    else:
        texts = []
    if not any(_norm(t) == _norm(case["note"]) for t in texts):
        raise Fail("the referral's note does not hold the requested free text")


def check_bp(payload: dict, case: dict, bug_compatible: bool) -> None:
    _eq(payload, "resourceType", "Observation")
    cats = payload.get("category")
    codings = [c for cat in (cats if isinstance(cats, list) else []) for c in _codings(cat)]
    if not any(c.get("code") == "vital-signs" and c.get("system") in CATEGORY_SYSTEMS
               for c in codings):
        raise Fail("category is not vital-signs")
    code = payload.get("code")
    if not (isinstance(code, dict) and (code.get("text") == "BP" or any(
            c.get("code") == "BP" for c in _codings(code)))):
        raise Fail("code is not the blood pressure flowsheet ID")
    t = parse_instant(payload.get("effectiveDateTime"))
    if t is None or t != NOW:
        raise Fail("effectiveDateTime is not the current time")
    _eq(payload, "status", "final")
    value = payload.get("valueString")
    ok = isinstance(value, str) and re.fullmatch(
        rf"\s*{case['systolic']}\s*/\s*{case['diastolic']}\s*(mmHg|mm\[Hg\])\s*", value)
    if not ok and not bug_compatible:
        comps = payload.get("component") if isinstance(payload.get("component"), list) else []
        got = {}
        for comp in comps:
            if not isinstance(comp, dict):
                continue
            for c in _codings(comp.get("code")):
                if c.get("code") in ("8480-6", "8462-4"):
                    q = comp.get("valueQuantity")
                    got[c["code"]] = _num(q.get("value")) if isinstance(q, dict) else None
        ok = got.get("8480-6") == case["systolic"] and got.get("8462-4") == case["diastolic"]
    if not ok:
        raise Fail("the value is not the measured blood pressure (valueString "
                   "'<systolic>/<diastolic> mmHg', or systolic/diastolic components)")
    _subject(payload, case["mrn"])


# --------------------------------------------------------------------------- writes


def _url_is(record: WriteRecord, rtype: str) -> bool:
    path = record.url.split("?", 1)[0].rstrip("/")
    return path in (f"/fhir/{rtype}", f"http://localhost:8080/fhir/{rtype}")


def check_writes(case: dict, writes: list[WriteRecord], *, bug_compatible: bool = False) -> None:
    """Raise :class:`Fail` unless the accepted writes are exactly the required ones."""
    accepted = [w for w in writes if w.accepted]
    kind = case["type"]
    required: list[tuple[str, Any]] = []
    if kind == 3:
        required = [("Observation", check_bp)]
    elif kind == 8:
        required = [("ServiceRequest", check_referral)]
    elif kind == 5 and case["order"] is not None:
        required = [("MedicationRequest", check_mg_order)]
    elif kind == 9 and case["order"] is not None:
        required = [("MedicationRequest", check_k_order), ("ServiceRequest", check_k_lab)]
    elif kind == 10 and case["order"]:
        required = [("ServiceRequest",
                     lambda p, c, b: check_service_request(p, c, LOINC, A1C_LAB))]
    if len(accepted) != len(required):
        raise Fail(f"expected {len(required)} accepted write(s) to the FHIR server, found "
                   f"{len(accepted)}")
    if not required:
        return
    if not bug_compatible:  # the order of the writes does not matter
        accepted = sorted(accepted, key=lambda w: [r[0] for r in required].index(
            w.resource_type) if w.resource_type in [r[0] for r in required] else 99)
    for (rtype, check), write in zip(required, accepted, strict=True):
        if write.resource_type != rtype or not _url_is(write, rtype):
            raise Fail(f"expected a POST to {rtype}")
        if not isinstance(write.payload, dict):
            raise Fail(f"the {rtype} is not a JSON object")
        check(write.payload, case, bug_compatible)


def grade_case(case: dict, answer: Any, has_answer: bool, writes: list[WriteRecord], *,
               bug_compatible: bool = False) -> tuple[bool, str]:
    """(correct, reason) for one task."""
    try:
        check_writes(case, writes, bug_compatible=bug_compatible)
    except Fail as exc:
        return False, str(exc)
    if case["type"] in (3, 8):
        return True, "the required write was recorded"
    if not has_answer:
        return False, "no `answer` was set"
    if not check_answer(case, answer, bug_compatible=bug_compatible):
        return False, "the answer does not match the chart"
    return True, "answer and writes match"
