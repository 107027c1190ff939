"""A trajectory viewer: browse episodes, filter them, read each turn.

``serve(run_dirs)`` answers on localhost with the standard library's HTTP server (the page
plus a small JSON API: ``/api/episodes`` and ``/api/episodes/<i>``; runs still being
written are re-read when their file changes). ``write_static(run_dirs, out)`` writes one
self-contained HTML file with every episode embedded. Both use the same page.

Everything a model wrote is untrusted: the page puts it into the document as text, never
as markup; code is highlighted on the host with Pygments, which escapes it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from medagentgym.eval.metrics import (
    FAILURE_LABELS,
    Run,
    load_runs,
    model_label,
    outcome,
)
from medagentgym.types import Trajectory

_CODE_PARAMS = {"validate_code": ("code", "python"), "debug": ("code", "python"),
                "submit": ("code", "python"), "terminal": ("cmd", "bash")}


# ------------------------------------------------------------------------ highlighting


def highlight(code: str, language: str = "python") -> str:
    """Code as escaped HTML with ``<span class=...>`` tokens (plain escaped text without
    Pygments)."""
    try:
        from pygments import highlight as _hl
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import get_lexer_by_name
    except ImportError:  # pragma: no cover - pygments comes with rich
        return escape(code)
    lexer = get_lexer_by_name(language, stripnl=False, ensurenl=False)
    return _hl(code, lexer, HtmlFormatter(nowrap=True))


def highlight_css() -> str:
    try:
        from pygments.formatters import HtmlFormatter
    except ImportError:  # pragma: no cover
        return ""
    return HtmlFormatter(style="default").get_style_defs(".code")


# --------------------------------------------------------------------------------- data


class Episodes:
    """The episodes of some run directories, re-read when a run's file changes."""

    def __init__(self, run_dirs: Sequence[str | Path], *, loop_threshold: int = 3) -> None:
        self.run_dirs = [Path(p) for p in run_dirs]
        self.loop_threshold = loop_threshold
        self._lock = threading.Lock()
        self._stamp: tuple[float, ...] | None = None
        self._items: list[tuple[Trajectory, Run]] = []
        self._summaries: list[dict[str, Any]] = []
        #: run directory -> lines of its trajectories.jsonl that did not parse (skipped)
        self.corrupt_lines: dict[str, int] = {}
        self.refresh()

    def _mtimes(self) -> tuple[float, ...]:
        out = []
        for d in self.run_dirs:
            f = d / "trajectories.jsonl" if d.is_dir() else d
            out.append(f.stat().st_mtime if f.exists() else 0.0)
        return tuple(out)

    def refresh(self) -> None:
        with self._lock:
            stamp = self._mtimes()
            if stamp == self._stamp:
                return
            runs = load_runs(self.run_dirs)
            self.corrupt_lines = {str(r.path): r.corrupt_lines for r in runs if r.corrupt_lines}
            items = [(t, r) for r in runs for t in sorted(
                r.trajectories, key=lambda t: (t.dataset, t.task_id, t.sample_index))]
            self._items = items
            self._summaries = [self._summary(i, t, r) for i, (t, r) in enumerate(items)]
            self._stamp = stamp

    def _summary(self, idx: int, t: Trajectory, run: Run) -> dict[str, Any]:
        out = outcome(t, loop_threshold=self.loop_threshold)
        return {"idx": idx, "run": run.path.name, "dataset": t.dataset, "category": t.category,
                "split": t.split, "task_id": t.task_id, "sample": t.sample_index,
                "model": model_label(t, run.info), "outcome": out,
                "outcome_label": "success" if out == "success" else FAILURE_LABELS.get(out, out),
                "success": t.success, "turns": t.turns, "reward": round(t.reward, 4),
                "goal": t.goal[:200]}

    def summaries(self) -> list[dict[str, Any]]:
        self.refresh()
        return self._summaries

    def __len__(self) -> int:
        return len(self._items)

    def detail(self, idx: int) -> dict[str, Any]:
        self.refresh()
        t, _run = self._items[idx]
        return episode_detail(t, self._summaries[idx])


def episode_detail(t: Trajectory, summary: dict[str, Any]) -> dict[str, Any]:
    """What the page shows for one episode: every turn, with code highlighted."""
    steps = []
    for s in t.steps:
        action = s.action or {}
        name = action.get("action")
        params = {k: v for k, v in action.items() if k != "action"}
        code_html = lang = None
        if name in _CODE_PARAMS:
            key, lang = _CODE_PARAMS[name]
            if isinstance(params.get(key), str):
                code_html = highlight(params.pop(key), lang)
        steps.append({
            "turn": s.turn, "action": name, "params": params, "code_html": code_html,
            "language": lang, "model_output": s.model_output,
            "raw_action": s.raw_action if s.model_output is None else None,
            "parse_error": s.parse_error, "observation": s.observation, "reward": s.reward,
            "exec_status": s.exec_status,
            "grade": s.grade.model_dump() if s.grade is not None else None,
            "usage": s.usage, "duration_s": round(s.duration_s, 3)})
    meta = {k: t.metadata[k] for k in ("verifier_score", "usage", "agent_stats", "sampling")
            if k in t.metadata}
    return {**summary, "goal": t.goal, "system_prompt": t.system_prompt,
            "protocol": t.protocol, "terminated": t.terminated, "truncated": t.truncated,
            "error": t.error.model_dump() if t.error else None,
            "duration_s": round(t.duration_s, 3), "metadata": meta, "steps": steps}


# --------------------------------------------------------------------------------- page


def _json_for_script(data: Any) -> str:
    """JSON safe to put inside a ``<script>`` element."""
    return (json.dumps(data, ensure_ascii=False, default=str).replace("<", "\\u003c")
            .replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


_PAGE_CSS = """
*{box-sizing:border-box}body{margin:0;font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;
color:#1d1d1f;display:flex;height:100vh}
#side{width:48%;min-width:360px;border-right:1px solid #ddd;display:flex;flex-direction:column}
#filters{padding:8px;background:#f5f5f7;border-bottom:1px solid #ddd;display:flex;flex-wrap:wrap;gap:6px}
#filters select,#filters input{font-size:12px;padding:2px 4px;max-width:160px}
#count{padding:4px 8px;color:#555}
#list{overflow:auto;flex:1}table{border-collapse:collapse;width:100%}
th,td{padding:3px 6px;border-bottom:1px solid #eee;text-align:left;white-space:nowrap;
max-width:170px;overflow:hidden;text-overflow:ellipsis}
th{position:sticky;top:0;background:#fafafa}tbody tr{cursor:pointer}
tbody tr:hover{background:#eef5ff}tbody tr.sel{background:#d8e8ff}
.ok{color:#067d17;font-weight:600}.bad{color:#b3261e}.infra{color:#8a6d00}
#detail{flex:1;overflow:auto;padding:12px 18px}
.turn{border:1px solid #ddd;border-radius:6px;margin:10px 0;overflow:hidden}
.turn h4{margin:0;padding:6px 10px;background:#f5f5f7;font-size:13px;display:flex;gap:12px}
.sec{padding:4px 10px}.sec b{display:block;color:#555;font-size:11px;text-transform:uppercase}
pre{margin:2px 0;white-space:pre-wrap;word-break:break-word;font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;
background:#fbfbfb;padding:6px;border-radius:4px;max-height:420px;overflow:auto}
.reward{font-weight:600}.perr{color:#b3261e}.muted{color:#777}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:6px 0}dt{color:#555}
"""

_PAGE_JS = r"""
const EMBED = window.__EPISODES__ || null;
let ALL = [], SHOWN = [], current = null;
const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined)
    e.appendChild(typeof k === 'string' ? document.createTextNode(k) : k);
  return e;
}
async function loadList() {
  if (EMBED) return EMBED.episodes;
  const r = await fetch('api/episodes'); return await r.json();
}
async function loadEpisode(i) {
  if (EMBED) return EMBED.details[i];
  const r = await fetch('api/episodes/' + i); return await r.json();
}
function fill(id, values, labels) {
  const s = $(id), keep = s.value;
  s.replaceChildren(el('option', {value: '', text: s.dataset.all}));
  for (const v of values) s.appendChild(el('option', {value: v, text: (labels && labels[v]) || v}));
  if (values.includes(keep)) s.value = keep;
}
function uniq(key, rows) { return [...new Set(rows.map(r => r[key]))].sort(); }
function outcomeClass(o) { return o === 'success' ? 'ok' : (o === 'infrastructure' ? 'infra' : 'bad'); }
function applyFilters() {
  const f = {dataset: $('f-dataset').value, category: $('f-category').value,
             model: $('f-model').value, outcome: $('f-outcome').value};
  const q = $('f-search').value.trim().toLowerCase();
  fill('f-category', uniq('category', ALL.filter(r => !f.dataset || r.dataset === f.dataset)));
  f.category = $('f-category').value;
  SHOWN = ALL.filter(r => (!f.dataset || r.dataset === f.dataset) &&
    (!f.category || r.category === f.category) && (!f.model || r.model === f.model) &&
    (!f.outcome || (f.outcome === 'failure' ? (r.outcome !== 'success' && r.outcome !== 'infrastructure')
                                           : r.outcome === f.outcome)) &&
    (!q || r.task_id.toLowerCase().includes(q) || r.goal.toLowerCase().includes(q)));
  const body = $('rows'); body.replaceChildren();
  for (const r of SHOWN.slice(0, 2000)) {
    const tr = el('tr', {'data-idx': r.idx},
      el('td', {text: r.dataset}), el('td', {text: r.category}),
      el('td', {text: (r.sample ? '#' + r.sample + ' ' : '') + r.task_id, title: r.task_id}),
      el('td', {text: r.model, title: r.model}),
      el('td', {class: outcomeClass(r.outcome), text: r.outcome_label}), el('td', {text: String(r.turns)}));
    if (current === r.idx) tr.className = 'sel';
    tr.addEventListener('click', () => openEpisode(r.idx));
    body.appendChild(tr);
  }
  $('count').textContent = SHOWN.length + ' of ' + ALL.length + ' episodes' +
    (SHOWN.length > 2000 ? ' (first 2000 listed)' : '');
}
function section(title, node) { return el('div', {class: 'sec'}, el('b', {text: title}), node); }
function pre(text, cls) { return el('pre', {class: cls || '', text: text}); }
async function openEpisode(i) {
  current = i;
  for (const tr of document.querySelectorAll('#rows tr'))
    tr.className = Number(tr.dataset.idx) === i ? 'sel' : '';
  const ep = await loadEpisode(i);
  const d = $('detail'); d.replaceChildren();
  d.appendChild(el('h2', {id: 'ep-title', text: ep.task_id + ' (' + ep.dataset + ' / ' + ep.category + ')'}));
  const dl = el('dl', {id: 'ep-meta'});
  const meta = {model: ep.model, outcome: ep.outcome_label, turns: ep.turns, reward: ep.reward,
                sample: ep.sample, split: ep.split, protocol: ep.protocol, run: ep.run,
                'duration (s)': ep.duration_s};
  if (ep.metadata.verifier_score !== undefined) meta['verifier score'] = ep.metadata.verifier_score;
  if (ep.metadata.usage) meta.tokens = ep.metadata.usage.total_tokens;
  for (const [k, v] of Object.entries(meta)) { dl.appendChild(el('dt', {text: k})); dl.appendChild(el('dd', {text: String(v)})); }
  d.appendChild(dl);
  if (ep.error) d.appendChild(section('episode error (' + ep.error.source + ')', pre(ep.error.type + ': ' + ep.error.message, 'perr')));
  d.appendChild(el('details', {}, el('summary', {text: 'system prompt'}), pre(ep.system_prompt)));
  if (ep.goal) d.appendChild(section('task', pre(ep.goal, 'goal')));
  for (const s of ep.steps) {
    const box = el('div', {class: 'turn', 'data-turn': s.turn});
    box.appendChild(el('h4', {}, el('span', {text: 'turn ' + s.turn}),
      el('span', {class: 'action-name', text: s.action || '(unreadable reply)'}),
      s.exec_status ? el('span', {class: 'muted', text: 'status: ' + s.exec_status}) : null,
      el('span', {class: 'reward', text: 'reward ' + Number(s.reward).toFixed(2)})));
    if (s.model_output) box.appendChild(el('details', {class: 'sec', open: ''}, el('summary', {text: 'model output'}), pre(s.model_output, 'model-output')));
    else if (s.raw_action) box.appendChild(section('agent wrote', pre(s.raw_action, 'model-output')));
    if (s.parse_error) box.appendChild(section('parse error', pre(s.parse_error, 'perr')));
    if (s.action && Object.keys(s.params).length) box.appendChild(section('parameters', pre(JSON.stringify(s.params, null, 2), 'params')));
    if (s.code_html !== null) {
      const c = el('pre', {class: 'code lang-' + s.language}); c.innerHTML = s.code_html;
      box.appendChild(section(s.language === 'bash' ? 'command' : 'code', c));
    }
    box.appendChild(section('observation', pre(s.observation, 'observation')));
    if (s.grade) box.appendChild(section('grade', pre((s.grade.correct ? 'correct' : 'not correct') +
      ' (score ' + s.grade.score + ')' + (s.grade.reason ? ': ' + s.grade.reason : '') +
      (s.grade.detail ? '\n' + s.grade.detail : ''), s.grade.correct ? 'grade ok' : 'grade bad')));
    d.appendChild(box);
  }
  history.replaceState(null, '', '#ep=' + i);
}
async function main() {
  ALL = await loadList();
  fill('f-dataset', uniq('dataset', ALL)); fill('f-model', uniq('model', ALL));
  const labels = {failure: 'any failure'};
  for (const r of ALL) labels[r.outcome] = r.outcome_label;
  fill('f-outcome', ['success', 'failure', ...uniq('outcome', ALL).filter(o => o !== 'success')], labels);
  for (const id of ['f-dataset', 'f-category', 'f-model', 'f-outcome'])
    $(id).addEventListener('change', applyFilters);
  $('f-search').addEventListener('input', applyFilters);
  applyFilters();
  const m = location.hash.match(/ep=(\d+)/);
  if (m && Number(m[1]) < ALL.length) openEpisode(Number(m[1]));
  document.body.dataset.ready = '1';
}
main();
"""


def render_page(title: str, embedded: dict[str, Any] | None = None) -> str:
    """The viewer page; with ``embedded`` data it works from a file, else it asks the API."""
    data = (f"<script>window.__EPISODES__ = {_json_for_script(embedded)};</script>"
            if embedded is not None else "")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><style>{_PAGE_CSS}{highlight_css()}</style></head><body>"
        "<div id=side><div id=filters>"
        "<select id=f-dataset data-all='all datasets'></select>"
        "<select id=f-category data-all='all categories'></select>"
        "<select id=f-model data-all='all models'></select>"
        "<select id=f-outcome data-all='all outcomes'></select>"
        "<input id=f-search type=search placeholder='task id or text'></div>"
        "<div id=count></div><div id=list><table id=episodes><thead><tr><th>dataset</th>"
        "<th>category</th><th>task</th><th>model</th><th>outcome</th><th>turns</th></tr></thead>"
        "<tbody id=rows></tbody></table></div></div>"
        "<div id=detail><p class=muted>Select an episode.</p></div>"
        f"{data}<script>{_PAGE_JS}</script></body></html>")


def write_static(run_dirs: Sequence[str | Path], out: str | Path, *,
                 title: str | None = None) -> Path:
    """One HTML file with every episode embedded (opens offline, from disk)."""
    eps = Episodes(run_dirs)
    embedded = {"episodes": eps.summaries(), "details": [eps.detail(i) for i in range(len(eps))]}
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_page(title or _title(run_dirs), embedded), encoding="utf-8")
    return path


def _title(run_dirs: Sequence[str | Path]) -> str:
    return "MedAgentGym trajectories: " + ", ".join(Path(p).name for p in run_dirs)


class _Handler(BaseHTTPRequestHandler):
    episodes: Episodes
    page: bytes

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        if os.environ.get("MEDAGENTGYM_VIEW_LOG"):
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data, default=str).encode(), "application/json")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(200, self.page, "text/html; charset=utf-8")
        elif path == "/api/episodes":
            self._json(self.episodes.summaries())
        elif path.startswith("/api/episodes/"):
            try:
                idx = int(path.rsplit("/", 1)[1])
                if idx < 0:
                    raise IndexError(idx)
                self._json(self.episodes.detail(idx))
            except (ValueError, IndexError):
                self._json({"error": "no such episode"}, HTTPStatus.NOT_FOUND)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")


def make_server(run_dirs: Sequence[str | Path], *, host: str = "127.0.0.1",
                port: int = 8765) -> ThreadingHTTPServer:
    """An HTTP server for the viewer (not started; ``port=0`` picks a free port). A port in
    use (or not ours to bind) is a one-line :class:`ConfigurationError` with the fix."""
    import errno

    from medagentgym.errors import ConfigurationError

    episodes = Episodes(run_dirs)
    handler = type("ViewerHandler", (_Handler,), {
        "episodes": episodes, "page": render_page(_title(run_dirs)).encode()})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = "is in use"
        elif exc.errno == errno.EACCES:
            why = "needs privileges"
        else:
            why = f"cannot be used ({exc.strerror or exc})"
        raise ConfigurationError(f"port {port} on {host} {why}; pick another with --port N "
                                 "(--port 0 takes any free port)") from None
    server.daemon_threads = True
    return server


def serve(run_dirs: Sequence[str | Path], *, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the viewer until interrupted."""
    server = make_server(run_dirs, host=host, port=port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
