"""The procedural generator of MedAgentBench training tasks: deterministic, new patients and
MRNs, the branch mix as asked (boundaries included), lookups that find exactly whom they
should on the shared seed, the oracle solving generated tasks (host-side on many, through
the sandbox on one per type and branch), wrong branches failing, and the family's options.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from tests.tasks.fhir_helpers import SOURCE_DIR, Loop, run_code, start

from medagentgym.errors import ConfigurationError
from medagentgym.tasks.fhir import graders
from medagentgym.tasks.fhir.generator import generate
from medagentgym.tasks.fhir.seed import NOW
from medagentgym.tasks.fhir.server import parse_instant

pytestmark = pytest.mark.skipif(not SOURCE_DIR.is_dir(),
                                reason=f"MedAgentBench mirror not available at {SOURCE_DIR}")


@pytest.fixture(scope="module")
def published() -> tuple[Any, list[dict], Any]:
    from medagentgym.tasks.medagentbench import _source

    return _source(str(SOURCE_DIR))


@pytest.fixture(scope="module")
def gen(published) -> tuple[Any, Any]:
    """3000 tasks (300 patients) with the default (even) mix, and the combined seed."""
    from medagentgym.tasks.medagentbench import _generated

    return _generated(str(SOURCE_DIR), 3000, 7, "{}", tuple(range(1, 11)))


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


def test_deterministic_and_sized(published):
    src = published[0]
    a, b = generate(src, 1234, 5), generate(src, 1234, 5)
    assert a.cases == b.cases and a.resources == b.resources
    assert json.dumps(a.cases) == json.dumps(b.cases)
    c = generate(src, 1234, 6)
    assert c.cases != a.cases
    assert len(a) == 1234 and len({x["id"] for x in a.cases}) == 1234
    assert collections.Counter(x["type"] for x in a.cases) == {
        k: 124 if k <= 4 else 123 for k in range(1, 11)}
    assert len(generate(src, 0, 5)) == 0
    only = generate(src, 50, 5, types=(3, 9))
    assert {x["type"] for x in only.cases} == {3, 9} and len(only) == 50


def test_new_patients_and_mrns(gen, published):
    g, seed = gen
    src = published[0]
    pats = [r for r in g.resources if r["resourceType"] == "Patient"]
    mrns = [p["id"] for p in pats]
    assert len(pats) == 300 and len(set(mrns)) == 300
    assert not set(mrns) & set(src.patients)
    assert all(p["identifier"][0]["value"] == p["id"] for p in pats)
    assert len(seed.by_type["Patient"]) == 800
    ids = [r["id"] for r in g.resources if r["resourceType"] == "Observation"]
    assert len(ids) == len(set(ids)) and not set(ids) & set(seed.by_type["Observation"]) - set(ids)


def test_branch_mix_even_by_default(gen):
    g, _seed = gen
    by = collections.Counter((c["type"], c.get("lab_branch", c["branch"])) for c in g.cases)
    for b in ("none", "normal", "mild", "moderate", "severe"):
        assert by[(5, b)] == 60
    assert by[(9, "low")] == by[(9, "normal")] == 150
    assert by[(10, "fresh")] == by[(10, "stale")] == by[(10, "missing")] == 100
    assert by[(6, "present")] == by[(6, "absent")] == 150
    assert by[(1, "patient_found")] == by[(1, "no_mrn")] == 150
    # boundary values occur (the decision rules' edges)
    mg = {c["answer"] for c in g.cases if c["type"] == 5}
    k = {c["answer"] for c in g.cases if c["type"] == 9}
    assert {1.9, 1.5, 1.0, 2.0} <= mg and {3.4, 3.5} <= k
    for c in g.cases:
        if c["type"] == 5 and c["order"]:
            v = c["answer"]
            assert c["order"]["dose"] == (4 if v < 1 else 2 if v < 1.5 else 1)


def test_branch_mix_controlled(published):
    src = published[0]
    g = generate(src, 400, 1, mix={"mg": {"severe": 1}, "k": {"low": 3, "normal": 1},
                                   "a1c": {"missing": 1}, "lookup": {"missing": 1}})
    by = collections.Counter((c["type"], c.get("lab_branch", c["branch"])) for c in g.cases)
    assert by[(5, "severe")] == by[(4, "severe")] == 40
    assert all(c["order"] == {"dose": 4, "hours": 4} for c in g.cases if c["type"] == 5)
    assert by[(9, "low")] == 30 and by[(9, "normal")] == 10
    assert by[(10, "missing")] == 40 and by[(1, "no_mrn")] == 40
    for bad in ({"mg": {"huge": 1}}, {"zinc": {"low": 1}}, {"k": {"low": 0}},
                {"k": {"low": -1}}):
        with pytest.raises(ValueError):
            generate(src, 10, 1, mix=bad)


def test_lookups_find_exactly_whom_they_should(gen, published, loop):
    """On the combined seed (recorded + generated patients), every generated lookup and
    every published one answers as its case says (HAPI's prefix rules)."""
    g, seed = gen
    svc = start(loop, seed)
    try:
        lookups = [c for c in g.cases if c["type"] == 1] + [
            c for c in published[1] if c["type"] == 1]
        for c in lookups:
            q = urlencode({"given": c["given"], "family": c["family"], "birthdate": c["dob"]})
            b = svc.search("Patient", q, "Patient?" + q)
            got = [e["resource"]["id"] for e in b.get("entry", [])]
            want = [] if c["answer"] == "Patient not found" else [c["answer"]]
            assert got == want, c["id"]
    finally:
        loop.run(svc.stop())


def test_windows_and_distractors(gen):
    g, seed = gen
    near24 = old = 0
    for c in g.cases:
        if c["type"] == 4 and c["answer"] == -1:
            for o in seed.by_patient.get(("Observation", c["mrn"]), []):
                if o["code"]["coding"][0]["code"] == "MG":
                    t = parse_instant(o["effectiveDateTime"])
                    assert t < NOW - timedelta(hours=24)
                    near24 += t > NOW - timedelta(hours=25)
        if c["type"] == 10 and c["branch"] == "fresh_report_value":
            assert parse_instant(c["answer"][1]) > NOW - timedelta(days=364)
        if c["type"] == 10 and c["branch"] == "stale_order_required":
            t = parse_instant(c["answer"][1])
            assert t < NOW - timedelta(days=366)
            old += t > NOW - timedelta(days=401)
    assert near24 > 0 and old > 0


def test_oracle_and_wrong_branches_host_side(gen, loop):
    """The oracle of 300 generated tasks, run against the server, is graded correct; the
    oracle's writes of a task of the same type with another branch are graded wrong."""
    from medagentgym.tasks.medagentbench import oracle_code

    g, seed = gen
    svc = start(loop, seed)
    runs: dict[str, tuple[dict, Any, list]] = {}
    try:
        for c in g.cases[:300]:
            loop.run(svc.reset())
            ns = run_code(loop, svc, oracle_code(c))
            runs[c["id"]] = (c, ns.get("answer"), list(svc.writes))
    finally:
        loop.run(svc.stop())
    bad = [(i, graders.grade_case(c, a, True, w)[1]) for i, (c, a, w) in runs.items()
           if not graders.grade_case(c, a, True, w)[0]]
    assert bad == []
    by_branch: dict[tuple, list] = collections.defaultdict(list)
    for c, a, w in runs.values():
        by_branch[(c["type"], c.get("lab_branch", c["branch"]))].append((c, a, w))
    checked = 0
    for (kind, branch), items in by_branch.items():
        c, a, _w = items[0]
        for (k2, b2), others in by_branch.items():
            if k2 != kind or b2 == branch or kind not in (5, 9, 10):
                continue
            c2, _a2, w2 = others[0]
            # another branch's writes (or their absence) with this task's answer
            if (c.get("order") or None) != (c2.get("order") or None):
                assert not graders.grade_case(c, a, True, w2)[0], (c["id"], b2)
                checked += 1
    assert checked >= 10
    # a constant answer (no writes) earns exactly the tasks whose gold is that constant with
    # nothing to write, nothing more
    for const in (-1, 0, "Patient not found", [-1]):
        hits = sum(graders.grade_case(c, const, True, [])[0] for c, _a, _w in runs.values())
        gold = sum(1 for c, a, w in runs.values()
                   if not w and c["type"] not in (3, 8) and graders._single(a) in (
                       graders._single(const),) and type(graders._single(a)) is type(
                           graders._single(const)))
        assert hits == gold, const
        assert hits / len(runs) <= 0.11, const


@pytest.fixture(scope="module")
def family(mag_home, mirror):
    from medagentgym.data.sources import pull
    from medagentgym.tasks import registry

    pull("medagentbench", mirror)
    return registry.get_family("medagentbench", generated=400, generator_seed=3)


def test_family_splits_and_options(family):
    from medagentgym.tasks import registry

    gen = family.load_tasks("generated")
    assert len(gen) == 400 and all(t.split == "generated" for t in gen)
    assert (len(family.load_tasks("train")), len(family.load_tasks("test"))) == (240, 60)
    t = gen[0]
    assert t.metadata["generated"] and t.goal.startswith("What\u2019s the MRN")
    assert t.truth.kind == "service_state"
    for bad, word in (({"generated": -1}, "generated"), ({"generated": 10**6}, "generated"),
                      ({"task_types": (0, 11)}, "task_types"),
                      ({"mix": {"mg": {"tiny": 1}}}, "mix")):
        with pytest.raises(ConfigurationError, match=word):
            registry.get_family("medagentbench", **bad)
    small = registry.get_family("medagentbench", generated=25, task_types=(5,),
                                mix={"mg": {"moderate": 1}})
    g5 = small.load_tasks("generated")
    assert len(g5) == 25 and {x.metadata["lab_branch"] for x in g5} == {"moderate"}


@pytest.mark.slow
def test_oracle_through_the_sandbox(family):
    """One generated task per (type, branch) through the real environment and sandbox."""
    import medagentgym as mag
    from medagentgym.sandbox import available_providers

    ok, why = available_providers()["bwrap"]
    if not ok:
        pytest.skip(f"the sandbox cannot run here: {why}")
    picked: dict[tuple, Any] = {}
    for t in family.load_tasks("generated"):
        picked.setdefault((t.metadata["task_type"],
                           t.metadata.get("lab_branch", t.metadata["branch"])), t)
    assert len(picked) >= 20
    env = mag.make("medagentbench", "generated", tasks=list(picked.values()), generated=400,
                   generator_seed=3)
    try:
        bad = []
        for t in picked.values():
            env.reset(options={"task_id": t.id})
            obs, reward, done, _, _ = env.step(json.dumps(
                {"action": "validate_code", "params": {"code": family.oracle_code(t)}}))
            if not (reward == 1.0 and done):
                bad.append((t.id, obs[-300:]))
        assert bad == []
    finally:
        env.close()
