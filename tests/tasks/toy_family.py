"""A toy task family that uses every part of the task contract: probes, files the agent
writes, a service, a continuous score, episode hooks and an extra action.

Three tasks:

* ``probe``: define ``triple(x)``; graded by probes that call it on hidden inputs.
* ``file``: write ``predictions.csv`` (one probability per staged row); graded by the AUROC of
  those probabilities against hidden labels — a continuous score, correct at >= 0.8.
* ``service``: record the value 5 on the counter service at ``http://localhost:8080/`` (an HTTP
  service on the host); graded on the service's state.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from medagentgym.sandbox.base import SandboxFileError
from medagentgym.tasks.contract import (
    Episode,
    GradeContext,
    HttpRequest,
    HttpResponse,
    HttpService,
    Service,
)
from medagentgym.tasks.family import TaskFamily
from medagentgym.types import Grade, GroundTruth, Provenance, Task

HIDDEN_INPUTS = [7, -2, 1000]
LABELS = [0, 1, 1, 0, 1, 0, 0, 1]
FEATURES = [0.1, 0.9, 0.7, 0.3, 0.8, 0.2, 0.4, 0.6]  # perfectly separates LABELS


class CounterService(HttpService):
    port = 8080

    def __init__(self) -> None:
        super().__init__()
        self.values: list[Any] = []
        self.resets = 0

    async def reset(self) -> None:
        self.values = []
        self.resets += 1

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST":
            try:
                value = json.loads(request.body)["value"]
            except (ValueError, KeyError, TypeError):
                return HttpResponse(400, b'{"error": "send {\\"value\\": ...}"}')
            self.values.append(value)
            return HttpResponse(201, json.dumps({"count": len(self.values)}).encode())
        if request.method == "GET":
            return HttpResponse(200, json.dumps({"count": len(self.values)}).encode())
        return HttpResponse(405, b"{}")


def auroc(labels: list[int], scores: list[float]) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    pairs = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return pairs / (len(pos) * len(neg))


class ToyFamily(TaskFamily):
    needs_answer = False
    score_kind = "continuous"

    def load_tasks(self, split: str) -> list[Task]:
        prov = Provenance(source="toy", licence="CC0")
        out = []
        for kind, goal, solution in (
            ("probe", "Define a function triple(x) that returns 3 * x.",
             "def triple(x):\n    return 3 * x\nanswer = 'defined'"),
            ("file", "Write predictions.csv: a header `p`, then one probability per row of "
                     "data.csv (the `x` column is a good score).",
             "import pandas as pd\nd = pd.read_csv('data.csv')\n"
             "d[['x']].rename(columns={'x': 'p'}).to_csv('predictions.csv', index=False)"),
            ("service", "Record the value 5 on the counter service: POST {\"value\": 5} to "
                        "http://localhost:8080/counter.",
             "import urllib.request, json\n"
             "req = urllib.request.Request('http://localhost:8080/counter', "
             "data=json.dumps({'value': 5}).encode(), method='POST')\n"
             "answer = json.loads(urllib.request.urlopen(req, timeout=5).read())"),
        ):
            task = Task(id=f"toy-{kind}", dataset=self.name, category=kind, split=split,
                        goal=goal, provenance=prov,
                        allowed_actions=("validate_code", "debug", "terminal"))
            truth_kind = {"probe": "probe_values", "file": "workspace_file",
                          "service": "service_state"}[kind]
            out.append(task.with_truth(GroundTruth(kind=truth_kind, solution=solution)))
        return out

    def instructions(self, task: Task) -> str:
        return "Work in /workspace. Python with pandas is available."

    def probes(self, task: Task, stage: int = 0) -> dict[str, str] | None:
        if task.category != "probe":
            return None
        return {f"t{i}": f"triple({x})" for i, x in enumerate(HIDDEN_INPUTS)}

    def make_services(self) -> dict[str, Service]:
        return {"counter": CounterService()}

    async def setup(self, episode: Episode) -> None:
        if episode.task.category == "file":
            rows = "x\n" + "\n".join(str(v) for v in FEATURES) + "\n"
            await episode.sandbox.write_file("data.csv", rows.encode())
        episode.state["setup"] = True

    def actions(self) -> dict[str, Any]:
        async def count(episode: Episode, params: dict[str, Any]) -> tuple[str, Grade | None]:
            """How many values the counter service holds. Params: none."""
            svc = episode.services["counter"]
            return f"the counter holds {len(svc.values)} value(s)", None

        return {"count_values": count}

    async def grade(self, ctx: GradeContext) -> Grade:
        kind = ctx.task.category
        if kind == "probe":
            got = [ctx.probes.get(f"t{i}") for i in range(len(HIDDEN_INPUTS))]
            if any(p is None or not p.ok for p in got):
                return Grade.wrong("triple(x) could not be called on the hidden inputs")
            ok = all(p.value == 3 * x and p.type == "int"
                     for p, x in zip(got, HIDDEN_INPUTS, strict=True))
            return Grade.right("all hidden inputs") if ok else Grade.wrong("wrong values")
        if kind == "file":
            try:
                text = await ctx.sandbox.read_text("predictions.csv", max_bytes=100_000)
            except SandboxFileError as exc:
                return Grade.wrong(f"no predictions: {exc}")
            try:
                rows = list(csv.DictReader(io.StringIO(text)))
                scores = [float(r["p"]) for r in rows]
            except (ValueError, KeyError, TypeError):
                return Grade.wrong("predictions.csv needs a numeric column `p`")
            if len(scores) != len(LABELS) or any(s != s for s in scores):
                return Grade.wrong(f"expected {len(LABELS)} numeric predictions")
            score = auroc(LABELS, scores)
            return Grade(correct=score >= 0.8, score=score, reason=f"AUROC {score:.3f}")
        svc = ctx.services["counter"]
        if svc.values == [5]:
            return Grade.right("recorded")
        return Grade.wrong(f"the service holds {len(svc.values)} value(s), not exactly [5]")
