"""Episodes on the FHIR server, through the real environment and sandbox: two environments
in one process (one seed, two overlays) running at the same time cannot see each other's
writes, a reset drops an episode's overlay, and the ways an agent might reach another
episode's state or the hidden data score 0.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from tests.tasks.fhir_helpers import SOURCE_DIR

pytestmark = pytest.mark.skipif(not SOURCE_DIR.is_dir(),
                                reason=f"MedAgentBench mirror not available at {SOURCE_DIR}")

OPTS = {"generated": 40, "generator_seed": 1, "mix": {"mg": {"moderate": 1}}}


@pytest.fixture(scope="module")
def family(mag_home, mirror):
    from medagentgym.data.sources import pull
    from medagentgym.sandbox import available_providers
    from medagentgym.tasks import registry

    ok, why = available_providers()["bwrap"]
    if not ok:
        pytest.skip(f"the sandbox cannot run here: {why}")
    pull("medagentbench", mirror)
    return registry.get_family("medagentbench", **OPTS)


def _step(env: Any, code: str) -> tuple[str, float, bool, dict]:
    obs, reward, done, _, info = env.step(json.dumps(
        {"action": "validate_code", "params": {"code": code}}))
    return obs, reward, done, info


def _fhir(env: Any) -> Any:
    return env.unwrapped.core._services["fhir"]


def _of_type(tasks: list, kind: int) -> list:
    return [t for t in tasks if t.metadata["task_type"] == kind]


PROBE_B = """
import json, os, socket, stat, requests
B = "http://localhost:8080/fhir/"
seen = {}
seen["search"] = requests.get(B + "Observation", params={"patient": MRN,
                               "category": "vital-signs"}).json()["total"]
seen["read"] = requests.get(B + "Observation/" + RID).status_code
seen["all_bp"] = requests.get(B + "Observation", params={"code": "BP", "_count": 5000}
                              ).json()["total"]
ports = []
for port in list(range(8070, 8100)) + [80, 443, 5000, 8000, 8443, 9000]:
    s = socket.socket()
    s.settimeout(0.2)
    try:
        s.connect(("127.0.0.1", port))
        ports.append(port)
    except OSError:
        pass
    finally:
        s.close()
seen["ports"] = ports
socks = []
for root in ("/tmp", "/workspace", "/run", "/var", "/dev/shm", os.path.expanduser("~")):
    for d, subdirs, files in os.walk(root):
        for f in files + subdirs:
            p = os.path.join(d, f)
            try:
                if stat.S_ISSOCK(os.lstat(p).st_mode) or "mag-svc" in p:
                    socks.append(p)
            except OSError:
                pass
seen["sockets"] = socks
print(json.dumps(seen))
answer = RID
"""


def test_concurrent_episodes_are_isolated_and_reset(family):
    import medagentgym as mag

    tasks = family.load_tasks("generated") + family.load_tasks("test")
    t3 = _of_type(tasks, 3)
    a_task, b_task = t3[0], t3[1]
    a_mrn = a_task.truth.value["mrn"]
    assert b_task.truth.value["mrn"] != a_mrn
    env_a = mag.make("medagentbench", "generated", tasks=[a_task], **OPTS)
    env_b = mag.make("medagentbench", "generated", tasks=[b_task], **OPTS)
    try:
        env_a.reset(options={"task_id": a_task.id})
        env_b.reset(options={"task_id": b_task.id})
        assert _fhir(env_a) is not _fhir(env_b)
        assert _fhir(env_a).seed is _fhir(env_b).seed  # one seed per process

        # A writes while B reads, at the same time (two threads, two sandboxes)
        results: dict[str, Any] = {}
        writes = ("import requests, time\nids = []\nfor i in range(8):\n"
                  "    r = requests.post('http://localhost:8080/fhir/Condition', json={"
                  "'resourceType': 'Condition', 'subject': {'reference': 'Patient/' + MRN}})\n"
                  "    ids.append(r.json()['id'])\n    time.sleep(0.05)\nprint(ids)\n")
        reads = ("import requests, time\ntotals = []\nfor i in range(8):\n"
                 "    totals.append(requests.get('http://localhost:8080/fhir/Condition', "
                 "params={'patient': MRN}).json()['total'])\n    time.sleep(0.05)\n"
                 "print('TOTALS', totals)\n")
        writes, reads = (f"MRN = {a_mrn!r}\n" + x for x in (writes, reads))
        ta = threading.Thread(target=lambda: results.__setitem__("a", _step(env_a, writes)))
        tb = threading.Thread(target=lambda: results.__setitem__("b", _step(env_b, reads)))
        ta.start()
        tb.start()
        ta.join(120)
        tb.join(120)
        assert "TOTALS [0, 0, 0, 0, 0, 0, 0, 0]" in results["b"][0], results["b"][0][-300:]
        assert len(_fhir(env_a).accepted_writes()) == 8 and _fhir(env_b).writes == []

        # A solves its task; its new resource is A's alone
        env_a.reset(options={"task_id": a_task.id})
        obs, reward, done, _ = _step(env_a, family.oracle_code(a_task))
        assert reward == 1.0 and done, obs[-300:]
        rid = _fhir(env_a).accepted_writes()[0].id
        # B looks for it every way it can, and answers with A's id without writing: 0
        obs, reward, done, _ = _step(env_b, f"MRN = {a_mrn!r}\nRID = {rid!r}\n" + PROBE_B)
        seen = json.loads(obs[obs.index("{"):obs.rindex("}") + 1])
        assert seen["search"] == 0 and seen["read"] == 404 and seen["all_bp"] == 0, seen
        assert seen["ports"] == [8080], seen  # the episode's own service, nothing else
        assert seen["sockets"] == [], seen
        assert reward == 0.0 and not done
        # B runs A's solution (A's hard-coded patient) on its own task: 0
        obs, reward, done, _ = _step(env_b, family.oracle_code(a_task))
        assert reward == 0.0 and not done
        assert len(_fhir(env_b).accepted_writes()) == 1  # B's own write, graded wrong

        # after a reset, A's overlay and log are gone
        env_a.reset(options={"task_id": a_task.id})
        assert _fhir(env_a).writes == []
        check = ("import requests\nB = 'http://localhost:8080/fhir/'\n"
                 f"print('READ', requests.get(B + 'Observation/{rid}').status_code)\n"
                 "print('TOTAL', requests.get(B + 'Condition', params={'patient': "
                 f"'{a_mrn}'}}).json()['total'])\n")
        obs, reward, _, _ = _step(env_a, check)
        assert "READ 404" in obs and "TOTAL 0" in obs, obs[-300:]
        assert reward == 0.0  # and having done nothing is not a solution
    finally:
        env_a.close()
        env_b.close()


@pytest.mark.slow
def test_cheats_on_generated_tasks(family):
    """Printing every value, spraying orders, hard-coding the answer of another patient and
    reading hidden files score 0 on generated tasks too."""
    import medagentgym as mag

    gen = family.load_tasks("generated")
    t5 = next(t for t in gen if t.metadata["task_type"] == 5 and t.truth.extra["case"]["order"])
    t1 = [t for t in gen if t.metadata["task_type"] == 1]
    env = mag.make("medagentbench", "generated", tasks=[t5, *t1], **OPTS)
    try:
        env.reset(options={"task_id": t5.id})
        mrn = t5.truth.extra["case"]["mrn"]
        dump = ("import requests\nb = requests.get('http://localhost:8080/fhir/Observation', "
                f"params={{'patient': {mrn!r}, '_count': 5000}}).json()\n"
                "vals = [e['resource']['valueQuantity']['value'] for e in b['entry']]\n"
                "print(vals)\nanswer = vals\n")
        _, reward, _, _ = _step(env, dump)
        assert reward == 0.0
        spray = ("import requests\nfor dose in (1, 2, 4):\n"
                 "    requests.post('http://localhost:8080/fhir/MedicationRequest', json={"
                 "'resourceType': 'MedicationRequest', 'status': 'active', 'intent': 'order',"
                 "'authoredOn': '2023-11-13T10:15:00+00:00',"
                 "'medicationCodeableConcept': {'coding': [{'system': "
                 "'http://hl7.org/fhir/sid/ndc', 'code': '0338-1715-40'}]},"
                 "'dosageInstruction': [{'route': 'IV', 'doseAndRate': [{'doseQuantity': "
                 "{'value': dose, 'unit': 'g'}, 'rateQuantity': {'value': dose, 'unit': 'h'}}]}],"
                 f"'subject': {{'reference': 'Patient/{mrn}'}}}})\n"
                 f"answer = {t5.truth.value}\n")
        _, reward, _, _ = _step(env, spray)
        assert reward == 0.0
        # a lookup answered with another generated patient's MRN
        env.reset(options={"task_id": t1[0].id})
        other = next(t for t in t1[1:] if t.truth.value["answer"] != t1[0].truth.value["answer"])
        _, reward, _, _ = _step(env, f"answer = {other.truth.value['answer']!r}")
        assert reward == 0.0
        # the generator and the seed are not importable or readable in the sandbox
        probe = ("hits = []\ntry:\n    import medagentgym.tasks.fhir.generator\n"
                 "    hits.append('import')\nexcept Exception:\n    pass\n"
                 "import os\nfor d, _s, fs in os.walk('/'):\n"
                 "    if d.startswith(('/proc', '/sys', '/dev')):\n        _s[:] = []\n"
                 "    hits += [os.path.join(d, f) for f in fs if f in ('test_data_v2.json', "
                 "'reference_values_audit_per_row.json', 'fhir_snapshot_partial.jsonl.gz') or "
                 "f.startswith('medagentbench-') or os.path.join(d, f).endswith(("
                 "'fhir/generator.py', 'fhir/seed.py', 'fhir/graders.py'))]\n"
                 "print('HITS', hits)\n")
        obs, _, _, _ = _step(env, probe)
        assert "HITS []" in obs, obs[-400:]
    finally:
        env.close()
