"""BioDSBench test cases -> probes and host-side comparators.

A task's published test is a script: a few set-up statements (imports, re-reading a table,
values derived from the agent's variables) and ``assert`` statements. Each assert becomes one
:class:`Probe`: the agent-side expression of the assert (with the set-up names it uses
inlined, module aliases resolved, ``/workdir`` pointed at the served data) is evaluated in the
agent's namespace after its code ran; its JSON value comes back to the host, which compares it
with the value of the same expression after the reference solution on the same tables, by the
assert's own form:

* ``abs(x - c) < tol``            -> ``close``: ``|x - expected| <= tol``
* ``len(set(x) - set([...])) == 0`` -> ``set``: the same set as the reference's (an empty
  result no longer passes a subset test)
* ``x == c``, ``x.equals(y)``        -> ``equal`` (numbers to 1e-9 relative)
* ``x in [a, b]``, ``x == a or x == b`` -> ``in_list``: the reference's value, or it shifted by
  a difference between the published alternatives
* ``"c" in x``                     -> ``contains``: ``c`` is an element of the agent's ``x``
* ``isinstance(x, T)``            -> ``type``: ``T`` (module and name) is in ``type(x).__mro__``;
  for an oncoprint (``oncoPrintPlotter``) also ``equal`` on its per-gene counts (``row_vc``)
* ``x < c`` and other thresholds   -> ``approx``: the reference's value to 1e-6 relative
* anything else (``all(...)``)     -> ``equal`` on the whole expression (``weak``: a task needs
  one probe that is not)

Published literals are kept (``literal``) for real-data mode, where the assert is checked as
published (:func:`check_published`). Nothing computed inside the sandbox is a verdict: probes
return values, and these functions judge them on the host.
"""

from __future__ import annotations

import ast
import builtins
import copy
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

_BUILTINS = set(dir(builtins))
MAX_VALUE_CHARS = 2_000_000
MAX_DEPTH = 40


@dataclass
class Probe:
    name: str
    expr: str
    cmp: str
    tol: float | None = None
    literal: Any = None
    has_literal: bool = False
    alts: list[Any] = field(default_factory=list)
    type_name: str | None = None
    member: Any = None
    weak: bool = False
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Probe:
        return cls(**data)


class _Inline(ast.NodeTransformer):
    def __init__(self, env: dict[str, ast.expr], modules: dict[str, ast.expr], data_dir: str):
        self.env, self.modules, self.data_dir = env, modules, data_dir
        self.bound: list[set[str]] = []

    def _is_bound(self, name: str) -> bool:
        return any(name in b for b in self.bound)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if isinstance(node.ctx, ast.Load) and not self._is_bound(node.id):
            if node.id in self.env:
                return copy.deepcopy(self.env[node.id])
            if node.id in self.modules:
                return copy.deepcopy(self.modules[node.id])
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, str) and node.value.startswith("/workdir"):
            return ast.Constant(self.data_dir + node.value[len("/workdir"):])
        return node

    def _scoped(self, node: Any, names: set[str]) -> ast.AST:
        self.bound.append(names)
        try:
            return self.generic_visit(node)
        finally:
            self.bound.pop()

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        return self._scoped(node, {a.arg for a in node.args.args})

    def _comp(self, node: Any) -> ast.AST:
        names = {n.id for g in node.generators for n in ast.walk(g.target)
                 if isinstance(n, ast.Name)}
        return self._scoped(node, names)

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comp


def _module_expr(module: str, attr: str | None = None) -> ast.expr:
    call = ast.parse(f"__import__({module!r}, fromlist=['_'])", mode="eval").body
    return ast.Attribute(call, attr, ast.Load()) if attr else call


def _free_names(node: ast.AST) -> set[str]:
    bound: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.comprehension):
            bound |= {t.id for t in ast.walk(n.target) if isinstance(t, ast.Name)}
        elif isinstance(n, ast.Lambda):
            bound |= {a.arg for a in n.args.args}
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)
            and isinstance(n.ctx, ast.Load) and n.id not in bound}


def _literal(node: ast.AST) -> tuple[bool, Any]:
    """(True, value) when ``node`` is a literal (lists, sets, tuples, ``set([...])``, ``-x``)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id in ("set", "list", "tuple") and len(node.args) == 1 and not node.keywords:
        ok, v = _literal(node.args[0])
        return (ok, sorted(v, key=repr) if node.func.id == "set" and ok else v)
    try:
        value = ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None
    if isinstance(value, set | frozenset):
        value = sorted(value, key=repr)
    if isinstance(value, tuple):
        value = list(value)
    return True, value


class TestParser:
    """Turns one task's test script into probes (see the module docstring)."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.env: dict[str, ast.expr] = {}
        self.modules: dict[str, ast.expr] = {}
        self.agent_vars: set[str] = set()
        self.problems: list[str] = []

    def parse(self, code: str) -> list[Probe]:
        try:
            tree = ast.parse(code)
        except SyntaxError as exc:
            self.problems.append(f"the test does not parse ({exc.msg})")
            return []
        probes: list[Probe] = []
        for stmt in tree.body:
            if isinstance(stmt, ast.Import):
                for a in stmt.names:
                    top = a.name.split(".")[0]
                    self.modules[a.asname or top] = _module_expr(a.name if a.asname else top)
            elif isinstance(stmt, ast.ImportFrom) and stmt.module:
                for a in stmt.names:
                    self.modules[a.asname or a.name] = _module_expr(stmt.module, a.name)
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                    isinstance(stmt.targets[0], ast.Name):
                self.env[stmt.targets[0].id] = self._inline(stmt.value)
            elif isinstance(stmt, ast.Assert):
                p = self._assert(stmt, len(probes))
                if p is not None:
                    probes.append(p)
                    if p.cmp == "type" and p.type_name and \
                            p.type_name.endswith("oncoPrintPlotter"):
                        # a type alone is cheap to fake: the plot's per-gene counts too
                        probes.append(Probe(
                            f"p{len(probes)}", f"({p.member}).row_vc.sort_index().to_dict("
                            "'index')", "equal", source=f"{p.source} (per-gene counts)"))
        return probes

    def _inline(self, node: ast.expr) -> ast.expr:
        return _Inline(self.env, self.modules, self.data_dir).visit(copy.deepcopy(node))

    def _agent(self, node: ast.AST) -> bool:
        """Whether ``node`` (already inlined) depends on the agent's variables."""
        names = _free_names(node)
        return any(n not in _BUILTINS and n != "__import__" for n in names)

    def _src(self, node: ast.AST) -> str:
        return ast.unparse(node)

    def _assert(self, stmt: ast.Assert, i: int) -> Probe | None:
        source = ast.unparse(stmt.test)
        test = self._inline(stmt.test)
        name = f"p{i}"
        probe = self._classify(test, name)
        if probe is None:
            self.problems.append(f"assert not understood: {source[:120]}")
            return None
        probe.source = source
        return probe

    def _classify(self, t: ast.expr, name: str) -> Probe | None:
        # isinstance(x, T)
        if isinstance(t, ast.Call) and isinstance(t.func, ast.Name) and \
                t.func.id == "isinstance" and len(t.args) == 2:
            x, typ = t.args
            tname = self._type_name(typ)
            if tname is None:
                return None
            expr = (f"[c.__module__ + '.' + c.__qualname__ for c in "
                    f"type({self._src(x)}).__mro__]")
            return Probe(name, expr, "type", type_name=tname, member=self._src(x))
        # x.equals(y)
        if isinstance(t, ast.Call) and isinstance(t.func, ast.Attribute) and \
                t.func.attr == "equals" and len(t.args) == 1:
            x = t.func.value if self._agent(t.func.value) else t.args[0]
            return Probe(name, self._src(x), "equal")
        # x == a or x == b
        if isinstance(t, ast.BoolOp) and isinstance(t.op, ast.Or):
            lefts, alts = set(), []
            for v in t.values:
                if not (isinstance(v, ast.Compare) and len(v.ops) == 1 and
                        isinstance(v.ops[0], ast.Eq)):
                    break
                ok, lit = _literal(v.comparators[0])
                if not ok:
                    break
                lefts.add(self._src(v.left))
                alts.append(lit)
            else:
                if len(lefts) == 1:
                    return Probe(name, lefts.pop(), "in_list", literal=alts, has_literal=True,
                                 alts=alts)
        if isinstance(t, ast.Compare) and len(t.ops) == 1:
            return self._compare(t.left, t.ops[0], t.comparators[0], name)
        if isinstance(t, ast.UnaryOp) and isinstance(t.op, ast.Not):
            return Probe(name, self._src(t.operand), "equal", weak=True)
        return Probe(name, self._src(t), "equal", weak=True)

    def _type_name(self, node: ast.expr) -> str | None:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Call):  # an inlined module: __import__('x', ...).A.B
            if node.args and isinstance(node.args[0], ast.Constant):
                parts.append(str(node.args[0].value))
                return ".".join(reversed(parts))
            return None
        if isinstance(node, ast.Name):
            parts.append(node.id)
            return ".".join(reversed(parts))
        return None

    def _compare(self, left: ast.expr, op: ast.cmpop, right: ast.expr,
                 name: str) -> Probe | None:
        la, ra = self._agent(left), self._agent(right)
        if not la and ra:
            flipped = {ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE}
            if isinstance(op, ast.In | ast.NotIn):  # "c" in x
                ok, member = _literal(left)
                if ok and isinstance(op, ast.In):
                    return Probe(name, self._src(right), "contains", member=member)
                return Probe(name, self._src(ast.Compare(left, [op], [right])), "equal",
                             weak=True)
            left, right = right, left
            op = flipped.get(type(op), type(op))()
        ok, lit = _literal(right)
        # abs(x - c) < tol
        if isinstance(op, ast.Lt | ast.LtE) and isinstance(left, ast.Call) and \
                isinstance(left.func, ast.Name) and left.func.id == "abs" and \
                len(left.args) == 1 and isinstance(left.args[0], ast.BinOp) and ok and \
                isinstance(lit, int | float):
            b = left.args[0]
            for x, c, sign in ((b.left, b.right, 1), (b.right, b.left, 1)):
                if self._agent(x) and not self._agent(c):
                    okc, cval = _literal(c)
                    if isinstance(b.op, ast.Add):
                        sign = -1
                    elif not isinstance(b.op, ast.Sub):
                        return None
                    return Probe(name, self._src(x), "close", tol=float(lit),
                                 literal=(sign * cval) if okc and isinstance(cval, int | float)
                                 else None, has_literal=okc)
            return None
        # len(set(x) - set([...])) == 0
        if isinstance(op, ast.Eq) and ok and lit == 0 and isinstance(left, ast.Call) and \
                isinstance(left.func, ast.Name) and left.func.id == "len" and \
                len(left.args) == 1 and isinstance(left.args[0], ast.BinOp) and \
                isinstance(left.args[0].op, ast.Sub):
            a, b = left.args[0].left, left.args[0].right
            if isinstance(a, ast.Call) and isinstance(a.func, ast.Name) and \
                    a.func.id == "set" and len(a.args) == 1:
                okb, bval = _literal(b)
                return Probe(name, f"set({self._src(a.args[0])})", "set",
                             literal=bval if okb else None, has_literal=okb)
        if isinstance(op, ast.In) and ok and isinstance(lit, list):
            return Probe(name, self._src(left), "in_list", literal=lit, has_literal=True,
                         alts=lit)
        if isinstance(op, ast.Eq):
            return Probe(name, self._src(left), "equal", literal=lit if ok else None,
                         has_literal=ok)
        if isinstance(op, ast.Lt | ast.LtE | ast.Gt | ast.GtE):
            opname = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}[type(op)]
            return Probe(name, self._src(left), "approx", literal=lit if ok else None,
                         has_literal=ok, member=opname)
        return Probe(name, self._src(ast.Compare(left, [op], [right])), "equal", weak=True)


def parse_tests(code: str, data_dir: str) -> tuple[list[Probe], list[str]]:
    """Probes of one test script and the problems met (an assert not understood)."""
    parser = TestParser(data_dir)
    probes = parser.parse(code)
    return probes, parser.problems


# --------------------------------------------------------------------------- comparing


def _bounded(value: Any) -> bool:
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        return False
    return len(text) <= MAX_VALUE_CHARS


def _num(x: Any) -> bool:
    return isinstance(x, int | float)  # bool included: the asserts use Python's ==


def same(want: Any, got: Any, rel: float = 1e-9, abs_tol: float = 1e-12, depth: int = 0) -> bool:
    """Python ``==`` on JSON values, numbers within tolerance, NaN equal to nothing."""
    if depth > MAX_DEPTH:
        return False
    if _num(want) and _num(got):
        w, g = float(want), float(got)
        if not (math.isfinite(w) and math.isfinite(g)):
            return w == g
        return math.isclose(w, g, rel_tol=rel, abs_tol=abs_tol)
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(same(a, b, rel, abs_tol, depth + 1)
                                             for a, b in zip(want, got, strict=True))
    if isinstance(want, dict) and isinstance(got, dict):
        w = {_key(k): v for k, v in want.items()}
        g = {_key(k): v for k, v in got.items()}
        return set(w) == set(g) and all(same(w[k], g[k], rel, abs_tol, depth + 1) for k in w)
    return type(want) is type(got) and want == got


def _key(k: Any) -> str:
    try:
        f = float(k)
    except (TypeError, ValueError):
        return str(k)
    return repr(float(f)) if math.isfinite(f) else str(k)


def _canon(v: Any) -> str:
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)
    if isinstance(v, float):
        v = round(v, 9)
    return json.dumps(v, sort_keys=True, default=str)


def _as_set(v: Any) -> set[str] | None:
    if not isinstance(v, list):
        return None
    try:
        return {_canon(x) for x in v}
    except (TypeError, ValueError, RecursionError):
        return None


def matches(probe: Probe, expected: Any, got: Any) -> bool:
    """Whether the agent's probe value ``got`` passes against the reference's ``expected``."""
    try:
        if not _bounded(got):
            return False
        if probe.cmp == "type":
            return isinstance(got, list) and probe.type_name is not None and \
                _type_ok(probe.type_name, got)
        if probe.cmp == "contains":
            return isinstance(got, list) and any(same(probe.member, x) for x in got)
        if probe.cmp == "close":
            if not (_num(got) and _num(expected)):
                return False
            g, w = float(got), float(expected)
            return math.isfinite(g) and abs(g - w) <= (probe.tol or 0.0) + 1e-9 * abs(w)
        if probe.cmp == "set":
            a, b = _as_set(expected), _as_set(got)
            return a is not None and a == b
        if probe.cmp == "approx":
            return same(expected, got, rel=1e-6, abs_tol=1e-12)
        if probe.cmp == "in_list":
            if same(expected, got):
                return True
            return any(same(_shift(expected, a, b), got) for a in probe.alts for b in probe.alts
                       if a != b and _shift(expected, a, b) is not None)
        return same(expected, got)
    except Exception:  # the agent's value: never an exception on the host
        return False


def _shift(value: Any, a: Any, b: Any) -> Any:
    """``value + (a - b)`` for numbers and equal-length numeric lists, else None."""
    if _num(value) and _num(a) and _num(b):
        return value + (a - b)
    if isinstance(value, list) and isinstance(a, list) and isinstance(b, list) and \
            len(value) == len(a) == len(b) and all(_num(x) for x in value + a + b):
        return [v + (x - y) for v, x, y in zip(value, a, b, strict=True)]
    return None


def _type_ok(type_name: str, mro: list[Any]) -> bool:
    root = type_name.split(".")[0]
    leaf = type_name.split(".")[-1]
    root = {"pd": "pandas", "np": "numpy"}.get(root, root)
    for entry in mro:
        if not isinstance(entry, str):
            continue
        if entry.split(".")[0] == root and entry.split(".")[-1] == leaf:
            return True
    return False


def check_published(probe: Probe, got: Any) -> bool | None:
    """The published assert on a value (real-data mode); None when it has no literal."""
    if not probe.has_literal:
        return None
    lit = probe.literal
    try:
        if probe.cmp == "close":
            return _num(got) and lit is not None and abs(float(got) - float(lit)) < (probe.tol or 0)
        if probe.cmp == "set":
            s, allowed = _as_set(got), _as_set(lit)
            return s is not None and allowed is not None and s <= allowed
        if probe.cmp == "in_list":
            return any(same(a, got) for a in probe.alts)
        if probe.cmp == "approx":
            if not (_num(got) and _num(lit)):
                return False
            g, c = float(got), float(lit)
            return {"<": g < c, "<=": g <= c, ">": g > c, ">=": g >= c}[str(probe.member)]
        return same(lit, got)
    except Exception:
        return False
