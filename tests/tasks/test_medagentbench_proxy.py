"""MedAgentBench against a user's own FHIR server (``MEDAGENTBENCH_FHIR_URL`` / ``fhir_url``).

The "remote HAPI" is a second instance of our embedded server on loopback TCP, reporting a
base URL of its own (as HAPI does), so that the proxy's forwarding, base rewriting and paging
are exercised for real; the assertions that matter: writes never reach it, the overlay
answers the episode's own reads, and the graders give the same verdicts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from tests.tasks.fhir_helpers import SOURCE_DIR, Loop, client, run_code, start, tcp_bridge

from medagentgym.errors import ConfigurationError
from medagentgym.tasks.contract import HttpRequest
from medagentgym.tasks.fhir import graders
from medagentgym.tasks.fhir.proxy import ProxyFhirServer, check_upstream
from medagentgym.tasks.fhir.seed import NOW

pytestmark = pytest.mark.skipif(not SOURCE_DIR.is_dir(),
                                reason=f"MedAgentBench mirror not available at {SOURCE_DIR}")


@pytest.fixture(scope="module")
def data() -> tuple[Any, list[dict], Any]:
    from medagentgym.tasks.medagentbench import _source

    return _source(str(SOURCE_DIR))


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(params=["reached", "own"])
def remote(request, loop, data) -> Iterator[tuple[Any, str]]:
    """(the remote server, the URL it is reached at). ``own``: it reports another base
    about itself (HAPI's configured address), which the proxy must learn and rewrite."""
    svc = start(loop, data[2])
    srv, port = tcp_bridge(loop, svc)
    url = f"http://127.0.0.1:{port}/fhir"
    svc.base_url = (url + "/" if request.param == "reached"
                    else "http://hapi.example.org:8080/fhir/")
    yield svc, url
    loop.loop.call_soon_threadsafe(srv.close)
    loop.run(svc.stop())


@pytest.fixture
def proxy(loop, remote) -> Iterator[ProxyFhirServer]:
    svc = ProxyFhirServer(remote[1], now=NOW)  # no trailing slash: normalised
    loop.run(svc.start())
    yield svc
    loop.run(svc.stop())


def test_reads_are_forwarded_and_rebased(proxy, remote):
    rem, _url = remote
    with client(proxy) as c:
        assert c.get("metadata").json()["resourceType"] == "CapabilityStatement"
        b = c.get("Patient?identifier=S6534835").json()
        assert b["total"] == 1
        assert b["entry"][0]["fullUrl"] == "http://localhost:8080/fhir/Patient/S6534835"
        assert all(lk["url"].startswith("http://localhost:8080/fhir/") for lk in b["link"])
        assert c.get("Patient/S6534835").json()["birthDate"] == "1932-12-29"
        r = c.get("Patient/NOPE")
        assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
        assert c.get("Patient?foo=1").status_code == 400  # the server's own 400, passed on
        # paging: every next link comes back through the proxy
        b = c.get("Patient?_count=50").json()
        seen = [e["resource"]["id"] for e in b["entry"]]
        while nxt := [lk["url"] for lk in b["link"] if lk["relation"] == "next"]:
            assert nxt[0].startswith("http://localhost:8080/fhir/Patient?")
            b = c.get(nxt[0].removeprefix("http://localhost:8080/fhir/")).json()
            seen += [e["resource"]["id"] for e in b.get("entry", [])]
        assert len(seen) == len(set(seen)) == 500
    assert rem.requests >= 15 and proxy.forwarded == rem.requests


def test_writes_stay_in_the_overlay(proxy, remote, loop):
    rem, _url = remote
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "BP"},
            "category": [{"coding": [{"code": "vital-signs"}]}],
            "subject": {"reference": "Patient/S6534835"}, "valueString": "120/80 mmHg"}
    with client(proxy) as c:
        r = c.post("Observation", json=body)
        assert r.status_code == 201
        rid = r.json()["id"]
        assert rid.startswith("mag-")  # never an id the user's server would assign
        assert r.headers["location"].startswith("http://localhost:8080/fhir/Observation/")
        assert c.get(f"Observation/{rid}").json()["valueString"] == "120/80 mmHg"
        b = c.get("Observation?patient=S6534835&category=vital-signs").json()
        assert b["total"] == 1 and b["entry"][0]["resource"]["id"] == rid
        assert c.put(f"Observation/{rid}", json=body).status_code == 405
    assert rem.writes == [] and not any(rem.created.values())
    assert [w.status for w in proxy.writes] == [201, 405]
    loop.run(proxy.reset())
    with client(proxy) as c:
        assert c.get(f"Observation/{rid}").status_code == 404  # forwarded: not there
        assert c.get("Observation?patient=S6534835&category=vital-signs").json()["total"] == 0
    assert proxy.writes == []


def test_same_verdicts_as_the_embedded_server(proxy, remote, loop, data):
    """The oracle of one task per (type, branch), run against the proxy, is graded correct
    from the proxy's write log; the remote server never sees a write."""
    from medagentgym.tasks.medagentbench import oracle_code

    rem, _url = remote
    picked: dict[tuple, dict] = {}
    for case in data[1]:
        picked.setdefault((case["type"], case["branch"]), case)
    bad = []
    for case in picked.values():
        loop.run(proxy.reset())
        ns = run_code(loop, proxy, oracle_code(case))
        ok, why = graders.grade_case(case, ns.get("answer"), "answer" in ns, proxy.writes)
        if not ok:
            bad.append((case["id"], why))
        # a wrong answer is still wrong
        if case["type"] in (4, 7):
            assert not graders.grade_case(case, 12345, True, proxy.writes)[0]
    assert bad == [] and len(picked) >= 18
    assert rem.writes == []


def test_hostile_paths_and_a_dead_upstream(loop, proxy):
    for path in ("/fhir/../admin", "/fhir/Patient/..", "/fhir/Patient/a%2Fb/x y",
                 "/other/Patient"):
        r = loop.run(proxy.handle(HttpRequest("GET", path, {}, b"")))
        assert r.status in (400, 404), path
    dead = ProxyFhirServer("http://127.0.0.1:9/fhir/", now=NOW)
    r = loop.run(dead.handle(HttpRequest("GET", "/fhir/Patient?identifier=x", {}, b"")))
    assert r.status == 502 and json.loads(r.body)["resourceType"] == "OperationOutcome"
    loop.run(dead.stop())


def test_upstream_url_checks():
    assert check_upstream("http://localhost:8080/fhir/") == "http://localhost:8080/fhir"
    assert check_upstream(" https://h.example/r4 ") == "https://h.example/r4"
    for bad in ("ftp://x/fhir", "localhost:8080/fhir", "http:///fhir", "http://h/fhir?x=1"):
        with pytest.raises(ValueError):
            check_upstream(bad)


def test_family_option_and_environment_variable(monkeypatch, mag_home, mirror):
    from medagentgym.data.sources import pull
    from medagentgym.tasks import registry

    pull("medagentbench", mirror)
    monkeypatch.setenv("MEDAGENTBENCH_FHIR_URL", "http://127.0.0.1:1/fhir/")
    fam = registry.get_family("medagentbench", generated=10)
    svc = fam.make_services()["fhir"]
    assert isinstance(svc, ProxyFhirServer) and svc.upstream == "http://127.0.0.1:1/fhir"
    with pytest.raises(ConfigurationError, match="generated"):
        fam.load_tasks("generated")
    assert len(fam.load_tasks("test")) == 60
    monkeypatch.setenv("MEDAGENTBENCH_FHIR_URL", "not a url")
    with pytest.raises(ConfigurationError, match="MEDAGENTBENCH_FHIR_URL"):
        registry.get_family("medagentbench", generated=11).make_services()
    monkeypatch.delenv("MEDAGENTBENCH_FHIR_URL")
    fam = registry.get_family("medagentbench", generated=12, fhir_url="http://h:1/fhir/")
    assert fam.make_services()["fhir"].upstream == "http://h:1/fhir"
    with pytest.raises(ConfigurationError, match="fhir_url"):
        registry.get_family("medagentbench", fhir_url="ftp://x")
    assert type(registry.get_family("medagentbench", generated=13).make_services()["fhir"]) \
        .__name__ == "FhirServer"


@pytest.mark.slow
def test_oracle_through_the_env_and_sandbox(monkeypatch, mag_home, mirror, loop, data):
    """Agent code in the sandbox -> the episode's proxy -> the "remote" server: one task of
    each type solved, no write reaches the remote."""
    import medagentgym as mag
    from medagentgym.data.sources import pull
    from medagentgym.sandbox import available_providers
    from medagentgym.tasks import registry

    ok, why = available_providers()["bwrap"]
    if not ok:
        pytest.skip(f"the sandbox cannot run here: {why}")
    pull("medagentbench", mirror)
    rem = start(loop, data[2])
    srv, port = tcp_bridge(loop, rem)
    rem.base_url = "http://hapi.example.org:8080/fhir/"
    monkeypatch.setenv("MEDAGENTBENCH_FHIR_URL", f"http://127.0.0.1:{port}/fhir/")
    fam = registry.get_family("medagentbench", generated=0)
    tasks = fam.load_tasks("train") + fam.load_tasks("test")
    one = {}
    for t in tasks:
        one.setdefault(t.metadata["task_type"], t)
    env = mag.make("medagentbench", "test", tasks=list(one.values()), generated=0)
    try:
        for t in one.values():
            env.reset(options={"task_id": t.id})
            assert type(env.unwrapped.core._services["fhir"]) is ProxyFhirServer
            obs, reward, done, _, _ = env.step(json.dumps(
                {"action": "validate_code", "params": {"code": fam.oracle_code(t)}}))
            assert reward == 1.0 and done, (t.id, obs[-400:])
    finally:
        env.close()
        loop.loop.call_soon_threadsafe(srv.close)
        loop.run(rem.stop())
    assert rem.requests >= 8 and rem.writes == []  # every reading task read it


def test_hapi_getpages_links_round_trip(loop):
    """HAPI pages with ``[base]?_getpages=...`` links (no resource type, no trailing slash):
    rewritten to the local base, and followed with or without the trailing slash."""
    import httpx

    seen: list[str] = []
    hapi = "http://hapi.internal:8080/fhir"

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        page = request.url.params.get("_getpagesoffset", "0")
        bundle = {"resourceType": "Bundle", "type": "searchset", "total": 3,
                  "link": [{"relation": "self", "url": f"{hapi}/Observation?code=GLU"},
                           {"relation": "next",
                            "url": f"{hapi}?_getpages=abc&_getpagesoffset=2&_count=2"}],
                  "entry": [{"fullUrl": f"{hapi}/Observation/{page}x",
                             "resource": {"resourceType": "Observation", "id": f"{page}x"}}]}
        return httpx.Response(200, json=bundle, headers={"content-type": "application/fhir+json"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    svc = ProxyFhirServer("http://10.1.2.3:8080/fhir/", now=NOW, client=client)
    try:
        r = loop.run(svc.handle(HttpRequest("GET", "/fhir/Observation?code=GLU", {}, b"")))
        b = json.loads(r.body)
        nxt = next(lk["url"] for lk in b["link"] if lk["relation"] == "next")
        assert nxt == "http://localhost:8080/fhir?_getpages=abc&_getpagesoffset=2&_count=2"
        assert b["entry"][0]["fullUrl"] == "http://localhost:8080/fhir/Observation/0x"
        for target in (nxt.removeprefix("http://localhost:8080"),
                       nxt.removeprefix("http://localhost:8080").replace("fhir?", "fhir/?")):
            r = loop.run(svc.handle(HttpRequest("GET", target, {}, b"")))
            assert r.status == 200
        assert seen == ["http://10.1.2.3:8080/fhir/Observation?code=GLU",
                        "http://10.1.2.3:8080/fhir?_getpages=abc&_getpagesoffset=2&_count=2",
                        "http://10.1.2.3:8080/fhir?_getpages=abc&_getpagesoffset=2&_count=2"]
    finally:
        loop.run(svc.stop())
