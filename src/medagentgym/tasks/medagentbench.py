"""MedAgentBench on an embedded FHIR R4 server (issue 13).

300 tasks (10 types x 30; the published MedAgentGym split 240 train / 60 test): the agent's
Python calls ``http://localhost:8080/fhir/`` with ``requests`` and stores its result in
``answer``. Each episode starts from the same seed (500 recorded patients plus synthesised
laboratory histories); what the agent writes goes to the episode's overlay and write log,
and the grader reads the log (``tasks/fhir/graders.py``). NOW is 2023-11-13T10:15:00+00:00.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import field_validator

from medagentgym.errors import ConfigurationError
from medagentgym.tasks.base import DatasetFamily, DatasetOptions
from medagentgym.tasks.family import option
from medagentgym.types import Grade, GroundTruth, Provenance, Task

SOURCE = "medagentbench"
CATEGORIES = {1: "patient_lookup", 2: "patient_age", 3: "record_vitals", 4: "lab_magnesium_24h",
              5: "magnesium_replacement", 6: "glucose_average_24h", 7: "glucose_latest",
              8: "referral_order", 9: "potassium_replacement", 10: "hba1c_reorder"}

ANSWER_CONTRACT = {
    1: 'Set `answer` to the MRN (a string), or "Patient not found".',
    2: "Set `answer` to the age in whole years (an int).",
    3: "Record it on the FHIR server, then set `answer` to the new resource's id.",
    4: "Set `answer` to the value (a number), or -1.",
    5: "Set `answer` to the latest magnesium value within the last 24 hours (a number), or -1 "
       "if there is none.",
    6: "Set `answer` to the average (a number), or -1.",
    7: "Set `answer` to the value (a number).",
    8: "Place the order on the FHIR server, then set `answer` to the new resource's id.",
    9: "Set `answer` to the latest potassium value (a number), or -1 if there is none.",
    10: "Set `answer` to [value, recorded dateTime as stored] (a list), or [-1] if there is "
        "no measurement.",
}

INSTRUCTIONS = """\
A FHIR R4 server (an EHR) is reachable from your code at http://localhost:8080/fhir/ \
(use `requests` or `urllib`; nothing else on the network). JSON only.
- Read: GET {base}{Type}/{id}. Search: GET {base}{Type}?param=value, answered with a Bundle \
(`total`, `entry[].resource`, `link` with relation `next` when there are more pages; \
`_count` sets the page size, default 20; `_sort=date` or `-date`).
- Patient: identifier (the MRN), name, family, given, birthdate (YYYY-MM-DD, prefixes \
eq/ge/gt/le/lt), gender. Observation: patient (the MRN), code, category, date (repeatable, \
with prefixes). MedicationRequest, ServiceRequest, Condition, Procedure: patient, code, \
status. Unknown parameters are an error (400).
- Create: POST {base}{Type} with a JSON resource (Content-Type: application/json) -> 201 \
with the stored resource and a Location header. Writes cannot be undone: order only what \
the task requires.
Store your final result in the variable `answer`."""


FHIR_URL_ENV = "MEDAGENTBENCH_FHIR_URL"


class MedAgentBenchOptions(DatasetOptions):
    bug_compatible: bool = option(
        False, "grade as the published reference grader did (for comparison only)")
    generated: int = option(
        2000, "procedurally generated training tasks in the `generated` split (new patients, "
        "the ten templates)", ge=0, le=50_000, client_le=10_000)
    generator_seed: int = option(0, "seed of the task generator", ge=0, le=2**31 - 1)
    mix: dict[str, dict[str, float]] | None = option(
        None, "branch weights of generated tasks per dimension, e.g. {'mg': {'severe': 1, "
        "'none': 1}} (mg: none/normal/mild/moderate/severe; glucose: present/absent; k: "
        "low/normal; a1c: fresh/stale/missing; lookup: found/missing); a dimension given "
        "lists the branches wanted (the others weigh 0); default: all equal")
    task_types: list[int] = option(
        list(range(1, 11)), "task types (1-10) of generated tasks")
    fhir_url: str | None = option(
        None, f"a HAPI FHIR server to read from (default: ${FHIR_URL_ENV}); GETs are forwarded, "
        "writes stay in the episode's overlay", scope="host")

    @field_validator("mix")
    @classmethod
    def _check_mix(cls, v: Any) -> Any:
        from medagentgym.tasks.fhir.generator import check_mix

        if v is not None:
            check_mix(v)
        return v

    @field_validator("task_types")
    @classmethod
    def _check_types(cls, v: list[int]) -> list[int]:
        if not v or len(v) > 10 or any(t not in range(1, 11) for t in v):
            raise ValueError("task types are 1..10 (at least one)")
        return sorted(set(v))

    @field_validator("fhir_url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        if v is not None:
            from medagentgym.tasks.fhir.proxy import check_upstream

            return check_upstream(v)
        return v


@functools.lru_cache(maxsize=4)
def _source(directory: str) -> Any:
    from medagentgym.tasks.fhir.seed import build_cases, build_seed_resources, load_source
    from medagentgym.tasks.fhir.server import Seed

    src = load_source(Path(directory))
    cases = build_cases(src)
    return src, cases, Seed(build_seed_resources(src, cases))


@functools.lru_cache(maxsize=4)
def _generated(directory: str, count: int, seed: int, mix_json: str,
               types: tuple[int, ...]) -> Any:
    """(generated tasks, the seed: recorded + published labs + generated patients)."""
    from medagentgym.tasks.fhir.generator import generate
    from medagentgym.tasks.fhir.seed import build_seed_resources
    from medagentgym.tasks.fhir.server import Seed

    src, cases, _seed = _source(directory)
    gen = generate(src, count, seed, mix=json.loads(mix_json), types=types)
    return gen, Seed([*build_seed_resources(src, cases), *gen.resources])


#: task types whose answer is one number: their truth is ``numeric`` (the value, within the
#: grader's tolerance), so tools that read ground truths see the gold value; the grader still
#: checks the writes (none, or the order) from the case in ``extra["case"]``
NUMERIC_TYPES = {2: 0.0, 4: 1e-6, 5: 1e-6, 6: 0.1, 7: 1e-6, 9: 1e-6}


def truth_of(case: dict) -> GroundTruth:
    solution = oracle_code(case)
    tol = NUMERIC_TYPES.get(case["type"])
    if tol is None:
        return GroundTruth(kind="service_state", value=case, solution=solution)
    v = case["answer"]
    return GroundTruth(kind="numeric", value=v, solution=solution,
                       extra={"lower": v - tol, "upper": v + tol, "case": case})


def case_of(truth: GroundTruth) -> dict:
    return truth.extra["case"] if truth.kind == "numeric" else truth.value


class MedAgentBenchFamily(DatasetFamily):
    """MedAgentBench's ten task types on the embedded FHIR server."""

    Options: ClassVar[type[DatasetOptions]] = MedAgentBenchOptions
    cache_version: ClassVar[int] = 2
    needs_answer = True
    allowed_actions = ("validate_code", "debug", "terminal")

    options: MedAgentBenchOptions

    def cache_key(self) -> dict[str, Any]:
        from medagentgym.tasks.fhir.generator import GENERATOR_VERSION
        from medagentgym.tasks.fhir.seed import SEED_VERSION

        return {"seed": SEED_VERSION, "oracle": 1, "generator": GENERATOR_VERSION,
                **self._generator_args()}

    def cache_prefix(self) -> str:
        return "medagentbench"

    def _generator_args(self) -> dict[str, Any]:
        o = self.options
        return {"count": o.generated, "seed": o.generator_seed,
                "mix_json": json.dumps(o.mix or {}, sort_keys=True),
                "types": tuple(o.task_types)}

    def _data(self) -> Any:
        return _source(str(self.source_dir(SOURCE)))

    def _gen(self) -> Any:
        return _generated(str(self.source_dir(SOURCE)), **self._generator_args())

    def seed(self) -> Any:
        """The seed every server of this family serves (generated patients included)."""
        if self.options.generated == 0:
            return self._data()[2]
        return self._gen()[1]

    def upstream(self) -> str | None:
        """The user's FHIR server GETs are forwarded to (option, else the environment)."""
        if self.options.fhir_url:
            return self.options.fhir_url
        env = os.environ.get(FHIR_URL_ENV, "").strip()
        if not env:
            return None
        from medagentgym.tasks.fhir.proxy import check_upstream

        try:
            return check_upstream(env)
        except ValueError as exc:
            raise ConfigurationError(f"{FHIR_URL_ENV}: {exc}") from None

    def load_tasks(self, split: str) -> list[Task]:
        if split == "generated" and self.upstream() is not None:
            raise ConfigurationError(
                f"{self.name}: generated tasks have patients only the embedded server holds; "
                f"unset {FHIR_URL_ENV} / fhir_url to use the `generated` split")
        return super().load_tasks(split)

    def _prov(self) -> Provenance:
        return Provenance(source="MedAgentBench v2 (stanfordmlgroup; MIT)",
                          database="500 recorded patients + synthesised labs (seed v1)",
                          licence="MIT")

    def build_records(self) -> Iterable[dict[str, Any]]:
        yield from self._published_records()
        if self.options.generated:
            from medagentgym.tasks.fhir.generator import GENERATOR_VERSION

            prov = self._prov().model_copy(update={
                "source": f"MedAgentBench templates, generated (generator v{GENERATOR_VERSION}, "
                          f"seed {self.options.generator_seed})",
                "database": "generated patients + synthesised labs"})
            for case in self._gen()[0].cases:
                case = dict(case)
                instruction, context = case.pop("instruction"), case.pop("context")
                goal = "\n".join(x for x in (instruction.strip(), context.strip(),
                                             ANSWER_CONTRACT[case["type"]]) if x)
                meta = {"task_type": case["type"], "branch": case["branch"], "generated": True}
                if "lab_branch" in case:
                    meta["lab_branch"] = case["lab_branch"]
                task = Task(id=case["id"], dataset=self.name, category=CATEGORIES[case["type"]],
                            split="generated", goal=goal,
                            provenance=prov.model_copy(update={"original_id": case["id"]}),
                            allowed_actions=self.allowed_actions, metadata=meta)
                yield self.record(task, truth_of(case))

    def _published_records(self) -> Iterable[dict[str, Any]]:
        src, cases, _seed = self._data()
        split_of = {tid: split for split, ids in src.splits.items() for tid in ids}
        by_id = {r["id"]: r for r in src.records}
        prov = self._prov()
        for case in cases:
            rec = by_id[case["id"]]
            split = split_of.get(case["id"])
            if split is None:
                continue
            goal = "\n".join(x for x in (rec["instruction"].strip(), rec["context"].strip(),
                                         ANSWER_CONTRACT[case["type"]]) if x)
            task = Task(id=case["id"], dataset=self.name, category=CATEGORIES[case["type"]],
                        split=split, goal=goal,
                        provenance=prov.model_copy(update={"original_id": case["id"]}),
                        allowed_actions=self.allowed_actions,
                        metadata={"task_type": case["type"], "branch": case["branch"]})
            yield self.record(task, truth_of(case))

    def instructions(self, task: Task) -> str:
        return INSTRUCTIONS

    def make_services(self) -> dict[str, Any]:
        from medagentgym.tasks.fhir.seed import NOW
        from medagentgym.tasks.fhir.server import FhirServer

        upstream = self.upstream()
        if upstream is not None:
            from medagentgym.tasks.fhir.proxy import ProxyFhirServer

            return {"fhir": ProxyFhirServer(upstream, now=NOW)}
        return {"fhir": FhirServer(self.seed(), now=NOW)}

    async def grade(self, ctx: Any) -> Grade:
        from medagentgym.tasks.fhir.graders import grade_case

        svc = ctx.services.get("fhir") if ctx.services else None
        if svc is None:
            return Grade.wrong("the FHIR server of this episode is not available")
        case = case_of(ctx.task.truth)
        correct, reason = grade_case(case, ctx.answer, ctx.has_answer, svc.writes,
                                     bug_compatible=self.options.bug_compatible)
        return Grade.right(reason) if correct else Grade.wrong(reason)


# --------------------------------------------------------------------------- oracle

_PRELUDE = '''\
import requests
from datetime import datetime, timedelta
BASE = "http://localhost:8080/fhir/"
NOW = datetime.fromisoformat("2023-11-13T10:15:00+00:00")

def search(rtype, **params):
    params.setdefault("_count", 5000)
    r = requests.get(BASE + rtype, params=params, timeout=30)
    r.raise_for_status()
    return [e["resource"] for e in r.json().get("entry", [])]

def labs(mrn, code):
    out = []
    for o in search("Observation", patient=mrn, code=code):
        out.append((datetime.fromisoformat(o["effectiveDateTime"]),
                    o["valueQuantity"]["value"], o["effectiveDateTime"]))
    return sorted(out)

def post(rtype, payload):
    r = requests.post(BASE + rtype, json=payload, timeout=30)
    r.raise_for_status()
    return r.json()["id"]
'''

_BODIES = {
    1: '''
found = search("Patient", given={given!r}, family={family!r}, birthdate={dob!r})
answer = found[0]["identifier"][0]["value"] if found else "Patient not found"
''',
    2: '''
p = search("Patient", identifier={mrn!r})[0]
b = datetime.fromisoformat(p["birthDate"])
answer = NOW.year - b.year - ((NOW.month, NOW.day) < (b.month, b.day))
''',
    3: '''
answer = post("Observation", {{
    "resourceType": "Observation",
    "category": [{{"coding": [{{"system": "http://hl7.org/fhir/observation-category",
                               "code": "vital-signs", "display": "Vital Signs"}}]}}],
    "code": {{"text": "BP"}},
    "effectiveDateTime": "2023-11-13T10:15:00+00:00",
    "status": "final",
    "valueString": {bp!r},
    "subject": {{"reference": "Patient/{mrn}"}},
}})
''',
    4: '''
recent = [x for x in labs({mrn!r}, "MG") if x[0] >= NOW - timedelta(hours=24)]
answer = recent[-1][1] if recent else -1
''',
    5: '''
recent = [x for x in labs({mrn!r}, "MG") if x[0] >= NOW - timedelta(hours=24)]
answer = recent[-1][1] if recent else -1
if recent and answer <= 1.9:
    dose, hours = (4, 4) if answer < 1 else (2, 2) if answer < 1.5 else (1, 1)
    post("MedicationRequest", {{
        "resourceType": "MedicationRequest",
        "medicationCodeableConcept": {{"coding": [{{"system": "http://hl7.org/fhir/sid/ndc",
                                                  "code": "0338-1715-40"}}]}},
        "authoredOn": "2023-11-13T10:15:00+00:00",
        "dosageInstruction": [{{"route": {{"text": "IV"}}, "doseAndRate": [{{
            "doseQuantity": {{"value": dose, "unit": "g"}},
            "rateQuantity": {{"value": hours, "unit": "h"}}}}]}}],
        "status": "active", "intent": "order",
        "subject": {{"reference": "Patient/{mrn}"}},
    }})
''',
    6: '''
recent = [x[1] for x in labs({mrn!r}, "GLU") if x[0] >= NOW - timedelta(hours=24)]
answer = sum(recent) / len(recent) if recent else -1
''',
    7: '''
allv = labs({mrn!r}, "GLU")
answer = allv[-1][1] if allv else -1
''',
    8: '''
answer = post("ServiceRequest", {{
    "resourceType": "ServiceRequest",
    "code": {{"coding": [{{"system": "http://snomed.info/sct", "code": "306181000000106",
                          "display": "Referral to orthopedic service"}}]}},
    "authoredOn": "2023-11-13T10:15:00+00:00",
    "status": "active", "intent": "order", "priority": "stat",
    "note": [{{"text": {note!r}}}],
    "subject": {{"reference": "Patient/{mrn}"}},
}})
''',
    9: '''
allv = labs({mrn!r}, "K")
answer = allv[-1][1] if allv else -1
if allv and answer < 3.5:
    post("MedicationRequest", {{
        "resourceType": "MedicationRequest",
        "medicationCodeableConcept": {{"coding": [{{"system": "http://hl7.org/fhir/sid/ndc",
                                                  "code": "40032-917-01"}}]}},
        "authoredOn": "2023-11-13T10:15:00+00:00",
        "dosageInstruction": [{{"route": {{"text": "oral"}}, "doseAndRate": [{{
            "doseQuantity": {{"value": round((3.5 - answer) / 0.1 * 10, 1), "unit": "mEq"}}}}]}}],
        "status": "active", "intent": "order",
        "subject": {{"reference": "Patient/{mrn}"}},
    }})
    post("ServiceRequest", {{
        "resourceType": "ServiceRequest",
        "code": {{"coding": [{{"system": "http://loinc.org", "code": "2823-3"}}]}},
        "authoredOn": "2023-11-13T10:15:00+00:00",
        "status": "active", "intent": "order", "priority": "stat",
        "occurrenceDateTime": "2023-11-14T08:00:00+00:00",
        "subject": {{"reference": "Patient/{mrn}"}},
    }})
''',
    10: '''
allv = labs({mrn!r}, "A1C")
answer = [allv[-1][1], allv[-1][2]] if allv else [-1]
if not allv or allv[-1][0] < NOW - timedelta(days=365):
    post("ServiceRequest", {{
        "resourceType": "ServiceRequest",
        "code": {{"coding": [{{"system": "http://loinc.org", "code": "4548-4"}}]}},
        "authoredOn": "2023-11-13T10:15:00+00:00",
        "status": "active", "intent": "order", "priority": "stat",
        "subject": {{"reference": "Patient/{mrn}"}},
    }})
''',
}


def oracle_code(case: dict) -> str:
    """Reference code for one task: reads the chart through the server and writes what the
    task requires (the values are computed from the server, not copied from the truth)."""
    body = _BODIES[case["type"]].format(**{k: v for k, v in case.items()
                                          if isinstance(v, str | int | float)})
    return _PRELUDE + body


def case_json(case: dict) -> str:
    return json.dumps(case, sort_keys=True)
