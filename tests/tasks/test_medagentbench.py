"""MedAgentBench on the embedded FHIR server (issue 13): the server over its unix socket with
real HTTP clients, the seeds, the graders per task type and branch, the oracle through the
real environment and sandbox, and cheats.

The oracle runs on a stratified sample (3 tasks per type) by default and on all 300 tasks
with ``MEDAGENTGYM_SLOW_TESTS=1``.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.tasks.fhir_helpers import SOURCE_DIR, Loop, client, run_code, start, tcp_bridge

from medagentgym.tasks.fhir import graders
from medagentgym.tasks.fhir.seed import NOW
from medagentgym.tasks.fhir.server import MAX_CREATED, FhirServer, WriteRecord

SLOW = os.environ.get("MEDAGENTGYM_SLOW_TESTS") == "1"
SPEC_NAME = "medagentbench"

pytestmark = pytest.mark.skipif(not SOURCE_DIR.is_dir(),
                                reason=f"MedAgentBench mirror not available at {SOURCE_DIR}")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data() -> tuple[Any, list[dict], Any]:
    from medagentgym.tasks.medagentbench import _source

    return _source(str(SOURCE_DIR))


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


def _start(loop: Loop, seed: Any) -> FhirServer:
    return start(loop, seed)


@pytest.fixture
def server(loop, data) -> Iterator[FhirServer]:
    svc = _start(loop, data[2])
    yield svc
    loop.run(svc.stop())


# --------------------------------------------------------------------------- the server


def test_metadata_read_and_404(server):
    with client(server) as c:
        cap = c.get("metadata").json()
        assert cap["resourceType"] == "CapabilityStatement" and cap["fhirVersion"] == "4.0.1"
        r = c.get("Patient/S6534835")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
        assert r.json()["name"][0]["family"] == "Stafford"
        r = c.get("Patient/NOPE")
        assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
        assert c.get("Basic?x=1").status_code == 404


def test_patient_search_rules(server):
    with client(server) as c:
        def total(q: str) -> int:
            r = c.get("Patient?" + q)
            assert r.status_code == 200, (q, r.text)
            b = r.json()
            assert b["resourceType"] == "Bundle" and b["type"] == "searchset"
            return b["total"]

        assert total("family=stafford&given=PET&birthdate=1932-12-29") == 1  # prefix, case
        assert total("identifier=S6534835") == 1
        assert total("_id=S6534835") == 1
        assert total("family:exact=stafford") == 0
        assert total("family:exact=Stafford") >= 1
        assert total("name=stafford") >= 1
        assert total("birthdate=1932&family=Stafford") == 1  # partial date
        assert total("birthdate=ge1932-12-29&birthdate=le1932-12-29&family=Stafford") == 1
        assert total("birthdate=gt1932-12-29&family=Stafford&given=Peter") == 0
        assert total("family=Dunn&given=Debra&birthdate=1969-05-15") == 0  # task1_29
        entry = c.get("Patient?identifier=S6534835").json()["entry"][0]
        assert entry["fullUrl"] == "http://localhost:8080/fhir/Patient/S6534835"
        assert entry["search"]["mode"] == "match"
        for bad in ("Patient?birthdate=1932-13-45", "Patient?foo=1", "Patient?family:sounds=x",
                    "Observation?date=yesterday", "Patient?_count=-1", "Observation?_sort=zzz"):
            r = c.get(bad)
            assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome", bad


def test_accents_fold():
    from medagentgym.tasks.fhir.server import fold

    assert fold("Ñúñez") == fold("nunez")


def test_paging_is_stateless_and_complete(server):
    with client(server) as c:
        b = c.get("Patient?_count=7").json()
        assert b["total"] == 500 and len(b["entry"]) == 7
        seen = [e["resource"]["id"] for e in b["entry"]]
        pages = 1
        while True:
            nxt = [lk["url"] for lk in b["link"] if lk["relation"] == "next"]
            if not nxt:
                break
            assert nxt[0].startswith("http://localhost:8080/fhir/Patient?")
            b = c.get(nxt[0].removeprefix("http://localhost:8080/fhir/")).json()
            seen += [e["resource"]["id"] for e in b.get("entry", [])]
            pages += 1
        assert pages == 72 and len(seen) == len(set(seen)) == 500
        assert len(c.get("Patient?_count=5000").json()["entry"]) == 500  # >= 5000 honoured
        assert "entry" not in c.get("Patient?_summary=count").json()


def test_observation_search_sort_and_dates(server):
    with client(server) as c:
        q = "Observation?patient=S6426560&code=GLU&_count=5000"
        b = c.get(q).json()
        times = [e["resource"]["effectiveDateTime"] for e in b["entry"]]
        assert b["total"] == len(times) >= 3
        desc = [e["resource"]["effectiveDateTime"]
                for e in c.get(q + "&_sort=-date").json()["entry"]]
        assert desc == sorted(times, reverse=True) and desc != times  # stored unsorted
        win = c.get(q + "&date=ge2023-11-12T10:15:00Z&date=le2023-11-13T10:15:00%2B00:00")
        assert win.status_code == 200 and 0 < win.json()["total"] < b["total"]
        sys_ = c.get("Observation?patient=Patient/S6426560&code=urn:medagentbench:lab-code|GLU")
        assert sys_.json()["total"] == b["total"]
        assert c.get("Observation?patient=S6426560&code=other|GLU").json()["total"] == 0
        assert c.get("Observation?subject=S6426560&category=laboratory").json()["total"] > 0


def test_create_location_overlay_and_reset(server, loop):
    with client(server) as c:
        body = {"resourceType": "Observation", "status": "final", "code": {"text": "BP"},
                "subject": {"reference": "Patient/S6534835"}, "valueString": "1/2 mmHg",
                "effectiveDateTime": "2023-11-13T10:15:00Z",
                "category": [{"coding": [{"code": "vital-signs"}]}]}
        r = c.post("Observation", json=body)
        assert r.status_code == 201
        rid = r.json()["id"]
        assert r.headers["location"] == f"http://localhost:8080/fhir/Observation/{rid}/_history/1"
        assert c.get(f"Observation/{rid}").json()["valueString"] == "1/2 mmHg"
        assert c.get("Observation?patient=S6534835&category=vital-signs").json()["total"] == 1
        # the raw body is logged verbatim, with the status
        w = server.writes[-1]
        assert w.status == 201 and json.loads(w.body) == body and w.id == rid
        # lenient validation: an invalid R4 shape is stored, with warnings
        bad = {**body, "note": {"text": "object, not a list"}}
        assert c.post("Observation", json=bad).status_code == 201
        assert server.writes[-1].warnings or not _has_fhir_resources()
        # rejected attempts are logged too
        assert c.post("Observation", content=b"{not json").status_code == 400
        assert c.post("MedicationRequest", json={"resourceType": "Patient"}).status_code == 400
        assert c.put(f"Observation/{rid}", json=body).status_code == 405
        assert [w.status for w in server.writes] == [201, 201, 400, 400, 405]
    t0 = time.perf_counter()
    loop.run(server.reset())
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.05, elapsed
    with client(server) as c:
        assert c.get(f"Observation/{rid}").status_code == 404
    assert server.writes == []


def _has_fhir_resources() -> bool:
    try:
        import fhir.resources  # noqa: F401
    except ImportError:
        return False
    return True


def test_bounds(server):
    with client(server) as c:
        big = {"resourceType": "Observation", "note": [{"text": "x" * 70_000}]}
        assert c.post("Observation", json=big).status_code == 413
        deep: Any = {}
        for _ in range(100):
            deep = {"a": deep}
        r = c.post("Observation", json={"resourceType": "Observation", "x": deep})
        assert r.status_code == 400 and "deeper" in r.text
        ok = {"resourceType": "Condition", "subject": {"reference": "Patient/S6534835"}}
        codes = [c.post("Condition", json=ok).status_code for _ in range(MAX_CREATED + 3)]
        assert codes.count(201) == MAX_CREATED and codes[-1] == 400
        q = "&".join(f"family=a{i}" for i in range(100))
        assert c.get("Patient?" + q).status_code == 400


def test_two_concurrent_episodes_are_isolated(loop, data):
    a, b = _start(loop, data[2]), _start(loop, data[2])
    try:
        body = {"resourceType": "ServiceRequest", "subject": {"reference": "Patient/S6534835"}}
        with client(a) as ca, client(b) as cb:
            ids = []
            for _ in range(5):  # interleaved writes on both servers
                ids.append(ca.post("ServiceRequest", json=body).json()["id"])
                assert cb.get("ServiceRequest?patient=S6534835").json()["total"] == 0
            assert ca.get("ServiceRequest?patient=S6534835").json()["total"] == 5
            assert cb.get(f"ServiceRequest/{ids[0]}").status_code == 404
        assert len(a.writes) == 5 and b.writes == []
        assert a.seed is b.seed  # one seed per process, shared
    finally:
        loop.run(a.stop())
        loop.run(b.stop())


def test_fhirclient_reads_and_creates(server, loop):
    fc = pytest.importorskip("fhirclient")
    from fhirclient import client as fhir_client
    from fhirclient.models.observation import Observation
    from fhirclient.models.patient import Patient

    srv, port = tcp_bridge(loop, server)
    try:
        smart = fhir_client.FHIRClient(settings={
            "app_id": "medagentgym-test", "api_base": f"http://127.0.0.1:{port}/fhir/"})
        pats = list(Patient.where(struct={"family": "Stafford", "given": "Peter",
                                          "birthdate": "1932-12-29"})
                    .perform_resources_iter(smart.server))
        assert [p.id for p in pats] == ["S6534835"]
        assert Patient.read("S6534835", smart.server).birthDate.isostring == "1932-12-29"
        obs = Observation({"status": "final", "code": {"text": "BP"},
                           "subject": {"reference": "Patient/S6534835"}})
        created = obs.create(smart.server)
        assert created is not None and server.writes[-1].status == 201
        assert fc is not None
    finally:
        loop.loop.call_soon_threadsafe(srv.close)


def test_fhirclient_paging_isolation_and_reset(loop, data):
    """With fhirclient: a search followed over its ``next`` links returns every patient once;
    a resource created on episode A's server is invisible to episode B's (same process, same
    seed, both live); after A's reset it is gone."""
    pytest.importorskip("fhirclient")
    from fhirclient import client as fhir_client
    from fhirclient.models.condition import Condition
    from fhirclient.models.patient import Patient

    servers, bridges, smart = [], [], []
    try:
        for _ in range(2):
            svc = _start(loop, data[2])
            srv, port = tcp_bridge(loop, svc)
            svc.base_url = f"http://127.0.0.1:{port}/fhir/"  # links the client can follow
            servers.append(svc)
            bridges.append(srv)
            smart.append(fhir_client.FHIRClient(settings={
                "app_id": "medagentgym-test", "api_base": svc.base_url}).server)
        a, b = servers
        assert b.seed is a.seed
        ids = [p.id for p in Patient.where(struct={"_count": "37"})
               .perform_resources_iter(smart[0])]
        assert len(ids) == len(set(ids)) == 500
        assert a.requests == 14  # ceil(500 / 37) pages
        cond = Condition({"subject": {"reference": "Patient/S6534835"},
                          "clinicalStatus": {"coding": [{"code": "active"}]}})
        created = cond.create(smart[0])
        rid = created["id"]

        def conditions(i: int) -> list[str]:
            return [c.id for c in Condition.where(struct={"patient": "S6534835"})
                    .perform_resources_iter(smart[i])]

        assert conditions(0) == [rid] and conditions(1) == []
        assert Condition.read(rid, smart[0]).subject.reference == "Patient/S6534835"
        with pytest.raises(Exception, match="404"):
            Condition.read(rid, smart[1])
        loop.run(a.reset())
        assert conditions(0) == [] and a.writes == []
        with pytest.raises(Exception, match="404"):
            Condition.read(rid, smart[0])
    finally:
        for srv in bridges:
            loop.loop.call_soon_threadsafe(srv.close)
        for svc in servers:
            loop.run(svc.stop())


# --------------------------------------------------------------------------- seeds


def test_seed_reproduces_every_reference_branch(data, gold):
    """Every task's oracle, run against the server (the ``gold`` fixture), is graded correct
    (host-side), and the seed holds the 500 recorded patients."""
    src, cases, seed = data
    assert len(cases) == 300 and len(seed.by_type["Patient"]) == 500
    assert {len(v) for v in src.splits.values()} == {240, 60}
    assert len(gold) == 300
    bad = [(cid, graders.grade_case(case, answer, True, writes)[1])
           for cid, (case, answer, writes) in gold.items()
           if not graders.grade_case(case, answer, True, writes)[0]]
    assert bad == []


def test_distractors_sit_just_outside_the_windows(data):
    _src, cases, seed = data
    from datetime import timedelta

    from medagentgym.tasks.fhir.server import parse_instant

    near = 0
    for case in cases:
        if case["type"] != 4 or case["answer"] != -1:
            continue
        for o in seed.by_patient.get(("Observation", case["mrn"]), []):
            if o["code"]["coding"][0]["code"] != "MG":
                continue
            t = parse_instant(o["effectiveDateTime"])
            assert t < NOW - timedelta(hours=24)
            near += t > NOW - timedelta(hours=25)
    assert near > 0


# --------------------------------------------------------------------------- graders


@pytest.fixture(scope="module")
def gold(data, loop) -> dict[str, tuple[dict, Any, list[WriteRecord]]]:
    """Each task's case, the oracle's answer and its writes."""
    from medagentgym.tasks.medagentbench import oracle_code

    _src, cases, seed = data
    svc = _start(loop, seed)
    out = {}
    try:
        for case in cases:
            loop.run(svc.reset())
            ns = run_code(loop, svc, oracle_code(case))
            out[case["id"]] = (case, ns.get("answer"), list(svc.writes))
    finally:
        loop.run(svc.stop())
    return out


def first(gold, kind: int, branch: str | None = None) -> tuple[dict, Any, list[WriteRecord]]:
    for case, answer, writes in gold.values():
        if case["type"] == kind and (branch is None or case["branch"] == branch):
            return case, answer, [copy.deepcopy(w) for w in writes]
    raise AssertionError((kind, branch))


def grade(case, answer, writes, **kw) -> bool:
    return graders.grade_case(case, answer, True, writes, **kw)[0]


def post(rtype: str, payload: dict) -> WriteRecord:
    return WriteRecord("POST", f"/fhir/{rtype}", json.dumps(payload).encode(), 201, rtype,
                       "9", payload)


def patched(writes: list[WriteRecord], i: int, **changes: Any) -> list[WriteRecord]:
    out = [copy.deepcopy(w) for w in writes]
    payload = out[i].payload
    for k, v in changes.items():
        if v is None:
            payload.pop(k, None)
        else:
            payload[k] = v
    return out


def test_task1_lookup(gold):
    case, answer, writes = first(gold, 1, "patient_found")
    assert grade(case, answer, writes) and grade(case, [answer], writes)
    assert not grade(case, "Patient not found", writes)
    assert not grade(case, answer, [post("Observation", {})])  # no write allowed
    case, answer, writes = first(gold, 1, "no_mrn")
    assert answer == "Patient not found" and grade(case, answer, writes)
    assert not grade(case, "S6534835", writes)


def test_task2_age(gold):
    case, answer, writes = first(gold, 2)
    assert grade(case, answer, writes) and grade(case, [answer], writes)
    assert not grade(case, answer + 1, writes) and not grade(case, True, writes)


def test_task3_blood_pressure(gold):
    case, answer, writes = first(gold, 3)
    assert grade(case, answer, writes)
    assert not grade(case, answer, [])
    assert not grade(case, answer, writes + writes)
    assert not grade(case, answer, patched(writes, 0, valueString="120/80 mmHg"))
    assert not grade(case, answer, patched(writes, 0, effectiveDateTime="2023-11-13T10:16:00Z"))
    assert not grade(case, answer, patched(writes, 0, subject={"reference": "Patient/S0000000"}))
    assert grade(case, answer, patched(writes, 0, effectiveDateTime="2023-11-13T10:15:00Z"))
    r4 = patched(writes, 0, valueString=None, component=[
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
         "valueQuantity": {"value": case["systolic"], "unit": "mmHg"}},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
         "valueQuantity": {"value": case["diastolic"], "unit": "mmHg"}}],
        category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                               "observation-category", "code": "vital-signs"}]}])
    assert grade(case, answer, r4)
    assert not grade(case, answer, r4, bug_compatible=True)
    # a rejected attempt before the accepted one does not count
    failed = WriteRecord("POST", "/fhir/Observation", b"{", 400, "Observation")
    assert grade(case, answer, [failed, *writes])


def test_task4_magnesium(gold):
    case, answer, writes = first(gold, 4, "data_present")
    assert grade(case, answer, writes) and answer != -1
    assert not grade(case, -1, writes)
    case, answer, writes = first(gold, 4, "data_absent")
    assert answer == -1 and grade(case, [-1], writes)
    assert not grade(case, 2.0, writes)


def test_task5_magnesium_replacement(gold):
    case, answer, writes = first(gold, 5, "low_order_required")
    assert len(writes) == 1 and grade(case, answer, writes)
    assert not grade(case, answer, [])
    assert not grade(case, answer, writes + writes)
    dosage = writes[0].payload["dosageInstruction"]
    wrong_dose = copy.deepcopy(dosage)
    wrong_dose[0]["doseAndRate"][0]["doseQuantity"]["value"] = 2
    assert not grade(case, answer, patched(writes, 0, dosageInstruction=wrong_dose))
    ref_shape = copy.deepcopy(dosage)
    ref_shape[0]["route"] = "IV"  # the reference grader's (invalid) string route
    assert grade(case, answer, patched(writes, 0, dosageInstruction=ref_shape))
    assert grade(case, answer, patched(writes, 0, authoredOn="2023-11-13T10:15:00Z"))
    assert not grade(case, answer, patched(writes, 0, authoredOn="2023-11-12T10:15:00Z"))
    assert not grade(case, [], writes)
    assert grade(case, [], patched(writes, 0, dosageInstruction=ref_shape), bug_compatible=True)
    case, answer, writes = first(gold, 5, "high_no_order")
    assert writes == [] and grade(case, answer, writes)
    low = first(gold, 5, "low_order_required")[2]
    assert not grade(case, answer, low)
    case, answer, writes = first(gold, 5, "data_absent_no_order")
    assert answer == -1 and grade(case, answer, writes)
    assert not grade(case, answer, low) and not grade(case, [], writes)


def test_task6_glucose_average(gold):
    case, answer, writes = first(gold, 6, "data_present")
    assert grade(case, answer, writes) and grade(case, answer + 0.09, writes)
    assert not grade(case, answer + 0.2, writes)
    case, answer, writes = first(gold, 6, "data_absent")
    assert grade(case, -1, writes) and not grade(case, 100, writes)


def test_task7_glucose_latest(gold):
    case, answer, writes = first(gold, 7)
    assert grade(case, answer, writes) and not grade(case, answer + 1, writes)


def test_task8_referral(gold):
    case, answer, writes = first(gold, 8)
    assert grade(case, answer, writes)
    note = writes[0].payload["note"]
    assert grade(case, answer, patched(writes, 0, note=note[0]))  # the reference's object
    assert not grade(case, answer, patched(writes, 0, note=[{"text": "see chart"}]))
    assert not grade(case, answer, patched(writes, 0, priority=None))
    assert not grade(case, answer, patched(writes, 0, code={"coding": [
        {"system": "http://snomed.info/sct", "code": "183545006"}]}))
    assert not grade(case, answer, [])


def test_task9_potassium(gold):
    case, answer, writes = first(gold, 9, "low_order_required")
    assert len(writes) == 2 and grade(case, answer, writes)
    assert grade(case, answer, writes[::-1])  # either order
    assert not grade(case, answer, writes[::-1], bug_compatible=True)
    assert not grade(case, answer, writes[:1]) and not grade(case, answer, writes[1:])
    dosage = copy.deepcopy(writes[0].payload["dosageInstruction"])
    dosage[0]["doseAndRate"][0]["doseQuantity"]["value"] += 10
    assert not grade(case, answer, patched(writes, 0, dosageInstruction=dosage))
    assert not grade(case, answer, patched(writes, 1, occurrenceDateTime="2023-11-14T09:00:00Z"))
    assert grade(case, answer, patched(writes, 1, occurrenceDateTime="2023-11-14T08:00:00Z"))
    case, answer, writes = first(gold, 9, "normal_no_order")
    assert writes == [] and grade(case, answer, writes)
    assert not grade(case, answer, first(gold, 9, "low_order_required")[2])


def test_task10_hba1c(gold):
    case, answer, writes = first(gold, 10, "fresh_report_value")
    assert writes == [] and grade(case, answer, writes)
    z = [answer[0], answer[1].replace("+00:00", "Z")]
    assert grade(case, z, writes)
    assert not grade(case, [answer[0], "2023-01-01T00:00:00Z"], writes)
    stale_order = first(gold, 10, "stale_order_required")[2]
    assert not grade(case, answer, stale_order)
    case, answer, writes = first(gold, 10, "stale_order_required")
    assert len(writes) == 1 and grade(case, answer, writes)
    assert not grade(case, answer, [])
    case, answer, writes = first(gold, 10, "data_absent_order_required")
    assert answer == [-1] and grade(case, answer, writes) and not grade(case, answer, [])


# --------------------------------------------------------------------------- the env


@pytest.fixture(scope="module")
def env_family(mag_home, mirror):
    from medagentgym.data.sources import pull
    from medagentgym.sandbox import available_providers
    from medagentgym.tasks import registry

    ok, why = available_providers()["bwrap"]
    if not ok:
        pytest.skip(f"the sandbox cannot run here: {why}")
    pull("medagentbench", mirror)
    added = SPEC_NAME not in registry.list_datasets()
    if added:
        registry.register(registry.DatasetSpec(
            SPEC_NAME, "medagentgym.tasks.medagentbench:MedAgentBenchFamily",
            "MedAgentBench (tests)", "FHIR", sources=("medagentbench",)))
    yield registry.get_family(SPEC_NAME)
    if added:
        registry._REGISTRY.pop(SPEC_NAME, None)
        registry.clear_cache()


def _all_tasks(family) -> list:
    return family.load_tasks("train") + family.load_tasks("test")


def _stratified(tasks: list, per_type: int = 3) -> list:
    out: list = []
    for kind in range(1, 11):
        of_kind = sorted((t for t in tasks if t.metadata["task_type"] == kind),
                         key=lambda t: (t.metadata["branch"], t.id))
        branches: dict[str, list] = {}
        for t in of_kind:
            branches.setdefault(t.metadata["branch"], []).append(t)
        picked: list = []
        while len(picked) < per_type:
            for b in sorted(branches):
                if branches[b] and len(picked) < per_type:
                    picked.append(branches[b].pop(0))
        out += picked
    return out


def _step(env, code: str):
    return env.step(json.dumps({"action": "validate_code", "params": {"code": code}}))


def test_splits_as_published(env_family):
    train, test = env_family.load_tasks("train"), env_family.load_tasks("test")
    assert (len(train), len(test)) == (240, 60)
    ids = json.loads((SOURCE_DIR / "medagentgym_split_ids.json").read_text())
    assert sorted(t.id for t in test) == sorted(ids["test"])


def test_oracle_solves_tasks_through_the_env(env_family):
    import medagentgym as mag

    tasks = _all_tasks(env_family)
    if not SLOW:
        tasks = _stratified(tasks)
    env = mag.make(SPEC_NAME, "test", tasks=tasks)
    t0 = time.perf_counter()
    try:
        bad = []
        for t in tasks:
            env.reset(options={"task_id": t.id})
            obs, reward, done, _, _info = _step(env, env_family.oracle_code(t))
            if not (reward == 1.0 and done):
                bad.append((t.id, obs[-300:]))
        assert bad == [], bad
    finally:
        env.close()
    print(f"\noracle: {len(tasks)}/{len(tasks)} tasks in {time.perf_counter() - t0:.1f} s")


def _task(family, tid: str):
    return next(t for t in _all_tasks(family) if t.id == tid)


def test_cheats_score_zero(env_family):
    import medagentgym as mag

    tasks = _all_tasks(env_family)
    low5 = next(t for t in tasks if t.metadata["branch"] == "low_order_required"
                and t.metadata["task_type"] == 5)
    t3 = [t for t in tasks if t.metadata["task_type"] == 3][:2]
    t4 = next(t for t in tasks if t.metadata["task_type"] == 4
              and t.metadata["branch"] == "data_present")
    env = mag.make(SPEC_NAME, "test", tasks=[low5, *t3, t4])
    try:
        # 1. printing every value: the answer is not set, and values printed are not graded
        env.reset(options={"task_id": t4.id})
        code = ("import requests\nb = requests.get('http://localhost:8080/fhir/Observation',"
                " params={'_count': 5000}).json()\n"
                "print([e['resource'].get('valueQuantity') for e in b.get('entry', [])])")
        _, reward, done, _, _ = _step(env, code)
        assert reward == 0.0 and not done
        _, reward, done, _, _ = _step(env, code + "\nanswer = [e['resource']['valueQuantity']"
                                      "['value'] for e in b.get('entry', [])]")
        assert reward == 0.0 and not done
        # 2. POSTing every possible order (each dose): not exactly the required write
        env.reset(options={"task_id": low5.id})
        from medagentgym.tasks.medagentbench import _PRELUDE

        mrn = low5.truth.extra["case"]["mrn"]
        spray = _PRELUDE + f"""
recent = [x for x in labs({mrn!r}, "MG") if x[0] >= NOW - timedelta(hours=24)]
answer = recent[-1][1]
for dose in (1, 2, 4):
    post("MedicationRequest", {{
        "resourceType": "MedicationRequest",
        "medicationCodeableConcept": {{"coding": [{{"system": "http://hl7.org/fhir/sid/ndc",
                                                  "code": "0338-1715-40"}}]}},
        "authoredOn": "2023-11-13T10:15:00+00:00",
        "dosageInstruction": [{{"route": "IV", "doseAndRate": [{{
            "doseQuantity": {{"value": dose, "unit": "g"}},
            "rateQuantity": {{"value": dose, "unit": "h"}}}}]}}],
        "status": "active", "intent": "order",
        "subject": {{"reference": "Patient/{mrn}"}}}})
"""
        _, reward, done, _, info = _step(env, spray)
        assert reward == 0.0 and not done, info.get("grade")
        assert len(env.core._services["fhir"].accepted_writes()) == 3
        # 3. hard-coded MRN: task 3's solution for one patient run on another task
        env.reset(options={"task_id": t3[1].id})
        _, reward, done, _, _ = _step(env, env_family.oracle_code(t3[0]))
        assert reward == 0.0 and not done
        # the server was reset between episodes: only this episode's write is there
        assert len(env.core._services["fhir"].writes) == 1
        # 4. the seed files and the task package are not in the sandbox
        env.reset(options={"task_id": t4.id})
        probe = ("import os\nhits = []\n"
                 "for root in ('/', '/workspace', '/tmp', os.path.expanduser('~')):\n"
                 "    for d, subdirs, files in os.walk(root):\n"
                 "        if d.startswith(('/proc', '/sys', '/dev')):\n"
                 "            subdirs[:] = []\n"
                 "            continue\n"
                 "        hits += [os.path.join(d, f) for f in files if f in "
                 "('fhir_snapshot_partial.jsonl.gz', 'test_data_v2.json', "
                 "'reference_values_audit_per_row.json', 'medagentgym_split_ids.json') "
                 "or os.path.join(d, f).endswith(('tasks/fhir/seed.py', "
                 "'tasks/medagentbench.py'))]\n"
                 "try:\n    import medagentgym.tasks.fhir.seed\n    hits.append('import')\n"
                 "except Exception:\n    pass\nprint('HITS', hits)\nanswer = hits")
        obs, reward, _, _, _ = _step(env, probe)
        assert reward == 0.0
        assert "HITS []" in obs, obs[-500:]
    finally:
        env.close()
