"""Reports of evaluation results: markdown (the paper's Table 3 / Table 5) and offline HTML.

Inputs are the dicts :func:`medagentgym.eval.metrics.evaluate` returns, one per model
(``{label: report}``). The HTML is one self-contained file: inline CSS and SVG, no script
and nothing fetched from the network.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from html import escape
from typing import Any

from medagentgym.eval import svg
from medagentgym.eval.metrics import (
    ACTION_GROUPS,
    DISPLAY_NAMES,
    FAILURE_CATEGORIES,
    FAILURE_LABELS,
    PAPER_IN_DISTRIBUTION,
    PAPER_OOD,
)

Boards = Mapping[str, Mapping[str, Any]]
_DASHES = {"verifier": "7,3", "majority": "2,3"}
DASH = "–"


def pct(x: float | None, digits: int = 2) -> str:
    return DASH if x is None else f"{x * 100:.{digits}f}"


def display(name: str) -> str:
    return DISPLAY_NAMES.get(name, name)


NO_GRADED = "no graded episodes"


def ci_text(block: Mapping[str, Any], digits: int = 1) -> str:
    """The 95% interval of a block, or :data:`NO_GRADED` when nothing was graded (an
    interval of [0, 0] would read as a measured zero)."""
    if not block.get("graded"):
        return NO_GRADED
    return f"[{pct(block['ci95'][0], digits)}, {pct(block['ci95'][1], digits)}]"


#: columns of the behaviour table: what the agent did, per dataset
BEHAVIOUR_HEAD = ["dataset", "s/episode", "model calls", "parse failures", "loop hints",
                  *[f"{'code' if g == 'code' else g} %" for g in ACTION_GROUPS]]


def behaviour_rows(report: Mapping[str, Any]) -> list[list[str]]:
    """Per dataset (and overall): mean episode duration, model calls, replies the agent could
    not parse (count and share of calls), loop hints, and the action mix in percent."""
    rows = []
    for name, d in [*report["datasets"].items(), ("overall", report["overall"])]:
        stats = d.get("agent_stats") or {}
        calls = int(stats.get("model_calls", 0))
        fails = int(stats.get("parse_failures", 0))
        parse = f"{fails} ({fails / calls:.0%})" if calls else (str(fails) if fails else DASH)
        mix = d.get("action_mix") or {}
        rows.append([display(name) if name != "overall" else "overall",
                     f"{d.get('mean_duration_s', 0.0):.1f}", str(calls) if calls else DASH,
                     parse, str(int(stats.get("loop_hints", 0))),
                     *[f"{mix.get(g, 0.0) * 100:.0f}" for g in ACTION_GROUPS]])
    return rows


def _rate(report: Mapping[str, Any], dataset: str) -> float | None:
    d = report["datasets"].get(dataset)
    return d["success_rate"] if d and d["graded"] else None


def _other_datasets(boards: Boards) -> list[str]:
    known = set(PAPER_IN_DISTRIBUTION) | set(PAPER_OOD)
    return sorted({d for r in boards.values() for d in r["datasets"] if d not in known})


def _columns(boards: Boards, group: str) -> list[str]:
    paper = PAPER_IN_DISTRIBUTION if group == "in_distribution" else PAPER_OOD
    extra = [d for d in _other_datasets(boards)
             if any(r["datasets"].get(d, {}).get("membership") == group for r in boards.values())]
    return [*paper, *extra]


# ------------------------------------------------------------------------------ markdown


def leaderboard_markdown(boards: Boards) -> str:
    """Two tables in the paper's layout: in-distribution (Table 3) and OOD (Table 5).

    Cells are success rates in %; ``–`` marks a dataset a model was not run on. The
    average is over the datasets present for that model, flagged ``*`` when incomplete.
    """
    lines: list[str] = []
    for group, title in (("in_distribution", "In-distribution (paper Table 3)"),
                         ("ood", "Out-of-distribution (paper Table 5)")):
        cols = _columns(boards, group)
        lines += [f"### {title}", "",
                  "| Model | " + " | ".join(display(c) for c in cols) + " | Avg. |",
                  "|---|" + "---:|" * (len(cols) + 1)]
        ranked = sorted(boards.items(), key=lambda kv: -kv[1]["overall"][group]["average"])
        for label, report in ranked:
            agg = report["overall"][group]
            avg = pct(agg["average"]) if agg["datasets"] else DASH
            if agg["datasets"] and not agg["complete"]:
                avg += "*"
            cells = [pct(_rate(report, c)) for c in cols]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {avg} |")
        present = sorted({d for r in boards.values() for d in r["overall"][group]["datasets"]})
        missing = [display(d) for d in cols if d not in present]
        lines.append("")
        if missing:
            lines.append(f"\\* average over the datasets present; not evaluated: {', '.join(missing)}.")
            lines.append("")
    infra = {label: r["overall"]["infrastructure"]["episodes"] for label, r in boards.items()}
    if any(infra.values()):
        lines.append("Infrastructure failures (excluded from every rate): "
                     + ", ".join(f"{k} {v}" for k, v in infra.items() if v) + ".")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def summary_markdown(report: Mapping[str, Any]) -> str:
    """One model's report as a markdown table per dataset, with the paper's aggregates."""
    ks = _shown_ks(report["overall"].get("pass_at_k", {}))
    scored = any(d.get("continuous") for d in report["datasets"].values())
    head = ["Dataset", "Episodes", "Success %", *(["Score %"] if scored else []), "95% CI",
            *[f"pass@{k}" for k in ks], "Turns", "Infra", "Top failure"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]
    rows = [*[(display(n), d) for n, d in report["datasets"].items()],
            ("**overall**", report["overall"])]
    for name, d in rows:
        top = max(FAILURE_CATEGORIES, key=lambda c: d["failures"].get(c, 0))
        top_txt = (f"{FAILURE_LABELS[top]} ({d['failures'][top]})"
                   if d["failures"].get(top) else DASH)
        pk = d.get("pass_at_k", {})
        lines.append("| " + " | ".join([
            name, str(d["episodes"]), pct(d["success_rate"] if d["graded"] else None),
            *([pct(d.get("mean_score") if d["graded"] else None)] if scored else []),
            ci_text(d, 2),
            *[pct(pk.get(str(k))) for k in ks], f"{d['mean_turns']:.2f}",
            str(d["infrastructure"]["episodes"]), top_txt]) + " |")
    lines.append("")
    for group, title in (("in_distribution", "In-distribution average"), ("ood", "OOD average")):
        agg = report["overall"][group]
        if agg["datasets"]:
            note = "" if agg["complete"] else (f" — {len(agg['datasets'])} of "
                                              f"{agg['paper_datasets']} datasets; missing: "
                                              + ", ".join(display(m) for m in agg["missing"]))
            lines.append(f"- {title}: {pct(agg['average'])}% "
                         f"[{pct(agg['ci95'][0])}, {pct(agg['ci95'][1])}]{note}")
        else:
            lines.append(f"- {title}: no dataset of this group was evaluated")
    lines += ["", "| " + " | ".join(BEHAVIOUR_HEAD) + " |",
              "|---|" + "---:|" * (len(BEHAVIOUR_HEAD) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in behaviour_rows(report)]
    lines.append("")
    tokens = report["overall"]["tokens"]
    if tokens.get("total_tokens"):
        cost = report["overall"].get("cost_usd")
        lines.append(f"- tokens: {tokens['total_tokens']:,} "
                     f"({report['overall']['mean_tokens_per_episode']:.0f} per episode)"
                     + (f"; cost ${cost:.4f}" if cost is not None else ""))
    return "\n".join(lines) + "\n"


def _shown_ks(curve: Mapping[str, float]) -> list[int]:
    ks = sorted(int(k) for k in curve)
    if len(ks) <= 4:
        return ks
    keep = [k for k in ks if k & (k - 1) == 0]  # powers of two, like the paper's 1..16
    if ks[-1] not in keep:
        keep.append(ks[-1])
    return keep


# ---------------------------------------------------------------------------------- html

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;
max-width:1180px;padding:0 16px;color:#1d1d1f}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
h3{font-size:15px}table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f5f5f7}
td:first-child,th:first-child{text-align:left}.muted{color:#777}.chart{max-width:100%;height:auto}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}
.note{background:#fff8e1;border-left:4px solid #e6a700;padding:6px 10px}
"""


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{escape(x)}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _cell(d: Mapping[str, Any] | None) -> str:
    if not d or not d.get("graded"):
        return f"<span class=muted>{NO_GRADED}</span>" if d else DASH
    return (f"{pct(d['success_rate'])}<br><span class=muted>[{pct(d['ci95'][0], 1)}, "
            f"{pct(d['ci95'][1], 1)}]</span>")


def html_report(boards: Boards, *, title: str = "MedAgentGym evaluation",
                runs: list[Mapping[str, Any]] | None = None) -> str:
    """A self-contained HTML page: leaderboards, plots and per-model details."""
    labels = list(boards)
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
             f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{escape(title)}</h1><p class=muted>generated "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · models: "
             f"{escape(', '.join(labels))}</p>"]
    if runs:
        parts.append("<details><summary>runs</summary>" + _table(
            ["run", "label", "episodes"],
            [[escape(str(r.get("path", ""))), escape(str(r.get("label", ""))),
              str(r.get("episodes", ""))] for r in runs]) + "</details>")

    # leaderboards
    for group, name in (("in_distribution", "In-distribution (paper Table 3)"),
                        ("ood", "Out-of-distribution (paper Table 5)")):
        cols = _columns(boards, group)
        rows = []
        for label, rep in sorted(boards.items(), key=lambda kv: -kv[1]["overall"][group]["average"]):
            agg = rep["overall"][group]
            avg = DASH if not agg["datasets"] else (
                f"{pct(agg['average'])}{'' if agg['complete'] else '*'}<br><span class=muted>"
                f"[{pct(agg['ci95'][0], 1)}, {pct(agg['ci95'][1], 1)}]</span>")
            rows.append([escape(label), *[_cell(rep["datasets"].get(c)) for c in cols], avg])
        parts.append(f"<h2>{escape(name)}</h2>"
                     + _table(["Model", *[display(c) for c in cols], "Avg."], rows))
        present = {d for r in boards.values() for d in r["overall"][group]["datasets"]}
        missing = [display(c) for c in cols if c not in present]
        if missing:
            parts.append(f"<p class=note>* averages cover the datasets present; not evaluated: "
                         f"{escape(', '.join(missing))}.</p>")

    # per-dataset bars
    order = {d: i for i, d in enumerate((*PAPER_IN_DISTRIBUTION, *PAPER_OOD))}
    datasets = sorted({d for r in boards.values() for d in r["datasets"]},
                      key=lambda d: (order.get(d, len(order)), d))
    series = []
    for label, rep in boards.items():
        vals, cis = [], []
        for d in datasets:
            block = rep["datasets"].get(d)
            ok = bool(block and block["graded"])
            vals.append(block["success_rate"] if ok else None)
            cis.append(block["ci95"] if ok else None)
        series.append((label, vals, cis))
    parts.append("<h2>Success rate by dataset (95% bootstrap interval)</h2>"
                 + svg.grouped_bars([display(d) for d in datasets], series,
                                    title="success rate by dataset"))

    # pass@k / best@k
    curves = []
    for mi, (label, rep) in enumerate(boards.items()):
        o = rep["overall"]
        if o.get("pass_at_k"):
            curves.append((f"{label} pass@k", {int(k): v for k, v in o["pass_at_k"].items()},
                           "", mi))
        for scorer, pts in (o.get("best_at_k") or {}).items():
            curves.append((f"{label} best@k ({scorer})", {int(k): v for k, v in pts.items()},
                           _DASHES.get(scorer, "4,2,1,2"), mi))
    if any(len(c[1]) > 1 for c in curves):
        parts.append("<h2>Inference-time scaling: pass@k and best@k</h2>"
                     "<p class=muted>pass@k: unbiased estimator over k of n samples per task; "
                     "best@k (dashed: verifier; dotted: majority answer): the sample a scorer ranks first among k.</p>"
                     + svg.line_chart(curves, title="pass@k and best@k", width=720))
    else:
        parts.append("<h2>Inference-time scaling</h2><p class=muted>One sample per task: "
                     "run with <code>--samples N</code> for pass@k and best@k curves.</p>")

    # action mix and failures
    parts.append("<h2>Action mix</h2>" + svg.stacked_bars(
        [(label, rep["overall"]["action_mix"]) for label, rep in boards.items()],
        ACTION_GROUPS, {"code": "validate_code", "invalid": "unreadable"}, title="action mix"))
    parts.append("<h2>Failure taxonomy</h2><p class=muted>Share of failed graded episodes; "
                 "infrastructure failures are counted apart (table below).</p>"
                 + svg.stacked_bars(
                     [(label, {c: float(v) for c, v in rep["overall"]["failures"].items()})
                      for label, rep in boards.items()],
                     FAILURE_CATEGORIES, FAILURE_LABELS, title="failure taxonomy"))

    # per-model details
    for label, rep in boards.items():
        parts.append(f"<h2>{escape(label)}</h2>")
        rows = []
        for d, b in [*rep["datasets"].items(), ("overall", rep["overall"])]:
            rows.append([escape(display(d)), str(b["episodes"]), str(b["graded"]),
                         _cell(b), f"{b['mean_turns']:.2f}",
                         str(b["infrastructure"]["episodes"]),
                         f"{b['tokens']['total_tokens']:,}",
                         DASH if b.get("cost_usd") is None else f"${b['cost_usd']:.4f}"])
        parts.append(_table(["dataset", "episodes", "graded", "success % [95% CI]", "turns",
                             "infra", "tokens", "cost"], rows))
        parts.append("<h3>What the agent did</h3>" + _table(
            BEHAVIOUR_HEAD, [[escape(c) for c in row] for row in behaviour_rows(rep)]))
        frows = [[escape(display(d)), *[str(b["failures"][c]) for c in FAILURE_CATEGORIES],
                  str(b["infrastructure"]["episodes"])]
                 for d, b in [*rep["datasets"].items(), ("overall", rep["overall"])]]
        parts.append("<details><summary>failures by dataset</summary>" + _table(
            ["dataset", *[FAILURE_LABELS[c] for c in FAILURE_CATEGORIES], "infrastructure"],
            frows) + "</details>")
        for d, b in rep["datasets"].items():
            crow = [[escape(c), str(cb["episodes"]), _cell(cb), f"{cb['mean_turns']:.2f}"]
                    for c, cb in b.get("categories", {}).items()]
            parts.append(f"<details><summary>{escape(display(d))}: {len(crow)} categories"
                         "</summary>" + _table(["category", "episodes", "success %", "turns"],
                                               crow) + "</details>")
    parts.append("</body></html>")
    return "".join(parts)
