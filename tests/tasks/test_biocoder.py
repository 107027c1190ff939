"""BioCoder (issue 14): tasks rebuilt from the function corpora, graded by differential
testing on hidden inputs through probes; gold scores 1 through the real environment, stubs,
constants, hard-coded examples and exits score 0, hidden values never reach the prompt."""

from __future__ import annotations

import json
import os
import random

import pytest

import medagentgym as mag
from medagentgym.tasks import biocoder_corpus as bc
from medagentgym.tasks import registry
from medagentgym.tasks.biocoder import BioCoderFamily, _case_matches, raised_type, same_value
from medagentgym.types import Task

SPEC = registry.DatasetSpec(
    "biocoder", "medagentgym.tasks.biocoder:BioCoderFamily",
    "BioCoder: bioinformatics functions graded on hidden inputs", "Bioinformatics coding",
    licence="CC BY 4.0", sources=("biocoder",))


def _sandbox_ok() -> bool:
    from medagentgym.sandbox import available_providers

    return available_providers()["bwrap"][0]


# --------------------------------------------------------------------------- host-side units


def test_values_compare_with_tolerance_and_types():
    assert same_value(1.0, 1.0 + 1e-9) and not same_value(1.0, 1.01)
    assert same_value([1, [2.0, "a"]], [1, [2.0000000001, "a"]])
    assert not same_value(True, 1) and not same_value(1, True)
    assert same_value({"a": [1]}, {"a": [1]}) and not same_value({"a": 1}, {"b": 1})
    assert same_value(float("nan"), float("nan")) and not same_value(float("nan"), 1.0)
    assert not same_value("1", 1) and not same_value(None, 0)


def test_context_is_rebuilt_without_the_target():
    helper = bc.analyse("1", "c", "def helper(x):\n    return re.sub('a', 'b', x)\n")
    target = bc.analyse("2", "c", "def target(s):\n    '''Doc.'''\n    if not s:\n"
                                  "        raise FooError('empty')\n"
                                  "    return helper(s) + str(np.sum([1]))\n")
    other = bc.analyse("3", "c", "def target(s):\n    return s\n")  # a same-named definition
    ctx = bc.resolve_context(target, {"helper": [helper], "target": [target, other]})
    assert ctx.problem is None
    src = bc.context_source(ctx)
    assert "import re" in src and "import numpy as np" in src
    assert "class FooError(Exception)" in src and "def helper" in src
    assert "def target" not in src  # removed everywhere
    stub = bc.prompt_stub(target)
    assert "Doc." in stub and "helper(" not in stub and "..." in stub


def test_unresolvable_names_and_objects_are_excluded_with_a_reason():
    fn = bc.analyse("1", "c", "def f(x):\n    return CONSTANT + x\n")
    assert "CONSTANT" in (bc.resolve_context(fn, {}).problem or "")
    meth = bc.analyse("2", "c", "def g(self, x):\n    return self.other(x)\n")
    assert meth.problem and "method" in meth.problem  # its class is not there
    standalone = bc.analyse("2", "c", "def g(self, x):\n    return x + self.k\n")
    assert standalone.problem is None and standalone.self_attrs == ["k"]
    static = bc.analyse("3", "c", "@staticmethod\ndef h(x):\n    return x + 1\n")
    assert static.problem is None and "@staticmethod" not in static.source


def test_inputs_follow_the_parameters_use_and_are_deterministic():
    fn = bc.analyse("1", "c", "def f(seq, n):\n    return seq.upper()[:n] * len(range(n))\n")
    kinds = bc.param_kinds(fn)
    assert kinds["seq"][0] in ("dna", "str") and kinds["n"][0] == "int"
    a = bc.candidate_inputs(fn, "seed")
    assert a == bc.candidate_inputs(fn, "seed") and len(a) >= 20
    assert all(len(args) == 2 for args in a)


def test_file_parameters_get_staged_files_chosen_from_the_goldens_use():
    reader = bc.analyse("1", "c", "def read_cols(bim_fn):\n    out = []\n"
                                  "    with open(bim_fn) as fh:\n        for line in fh:\n"
                                  "            out.append(line.rstrip().split('\\t')[3])\n"
                                  "    return out\n")
    assert bc.param_roles(reader) == {"bim_fn": "file"} and not bc.opaque_params(reader)
    a = bc.candidate_inputs(reader, "biocoder-test-public-0001")
    assert a == bc.candidate_inputs(reader, "biocoder-test-public-0001")  # deterministic
    assert a != bc.candidate_inputs(reader, "biocoder-test-public-0002")
    paths = {arg.split("Path(")[1] for (arg,) in a}
    assert len(paths) == len(a)  # one staged file per case
    assert all(f"'{bc.FILE_DIR}/{bc.FILE_PREFIX}" in p for p in paths)
    texts = [ast_literal(arg) for (arg,) in a]
    assert [bc.staged_text(arg) for (arg,) in a] == texts  # what the host reads back
    assert bc.staged_text("'plain'") is None
    assert sum("\t" in t for t in texts) > len(texts) // 3  # the separator it splits on
    assert max(t.count("\n") for t in texts) >= 3
    fasta = bc.analyse("2", "c", "def n_records(fasta_path):\n"
                                 "    return len(list(SeqIO.parse(fasta_path, 'fasta')))\n")
    assert any(ast_literal(arg).startswith(">")
               for (arg,) in bc.candidate_inputs(fasta, "s"))
    # a file name taken apart (never opened) is a path string; options read by key, a dict
    name = bc.analyse("3", "c", "def is_fq(args, file_name):\n    if args.get('fastq'):\n"
                                "        return True\n"
                                "    return file_name.lower().endswith('.fq')\n")
    assert bc.param_roles(name) == {"args": "dict_lit", "file_name": "path"}
    for opts, fname in bc.candidate_inputs(name, "s"):
        assert set(eval(opts)) <= {"fastq"} and isinstance(eval(fname), str)
    # an object without a recognisable use stays excluded
    obj = bc.analyse("4", "c", "def f(model, x):\n    return model.predict(x)\n")
    assert bc.opaque_params(obj) == ["model"]
    # options read as attributes get a stand-in object; a logger only logs
    ns = bc.analyse("5", "c", "def f(args, log, x):\n    log.info('go')\n"
                              "    return x + args.n if args.mode == 'fast' else x\n")
    assert bc.param_roles(ns) == {"args": "namespace", "log": "logger"}
    first = bc.candidate_inputs(ns, "s")[0]
    assert first[0].startswith("__import__('types').SimpleNamespace(") and "n=" in first[0]
    assert "getLogger" in first[1]


def ast_literal(arg: str) -> str:
    """The text a staging expression writes (its first string literal)."""
    import ast

    call = ast.parse(arg, mode="eval").body
    return next(n.value for n in ast.walk(call)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)
                and not n.value.startswith(("pathlib", bc.FILE_DIR)))


def test_array_table_and_tuple_inputs_follow_the_use():
    fn = bc.analyse("1", "c", "def f(signal, seg_table, vals):\n"
                              "    for start, size, val in seg_table:\n        pass\n"
                              "    return signal[signal > 1] * 2, vals.median()\n")
    kinds = bc.param_kinds(fn)
    assert kinds["seg_table"][0] == "list_tuple3"
    assert kinds["vals"][0] == "series_float"
    assert "array_float" in kinds["signal"]
    rows = eval(bc.make_expr("list_tuple3", random.Random(1)))
    assert rows and all(isinstance(r, tuple) and len(r) == 3 for r in rows)


def test_outputs_that_are_shortcuts_of_the_staged_file_are_recognised():
    from medagentgym.tasks.biocoder import _shortcut

    arg = bc.file_expr(bc.file_hints(bc.analyse("1", "c", "def f(p):\n    return open(p)\n")),
                       random.Random(3))
    text = bc.staged_text(arg)
    assert text
    first = text.splitlines()[0]
    assert _shortcut(([arg], {"value": len(text.encode()), "type": "int"}))
    assert _shortcut(([arg], {"value": first, "type": "str"}))
    assert _shortcut(([arg], {"value": text.splitlines(), "type": "list"}))
    assert not _shortcut(([arg], {"value": first + "x", "type": "str"}))
    assert not _shortcut((["'x'"], {"value": 1, "type": "int"}))


def test_numpy_1_aliases_are_restored_in_the_context():
    src = "def f(p):\n    return np.asfarray(p, dtype=np.float_).sum() + np.int(1)\n"
    shims = bc.numpy_shims(src)
    assert "_np.asfarray = " in shims and "_np.float_ = _np.float64" in shims
    assert "_np.int = int" in shims
    assert bc.numpy_shims("np.float64(1) + np.int_(2) + np.random.rand()") == ""
    ns: dict = {}
    exec(shims + "import numpy as np\n" + src + "out = f([1, 2])\n", ns)
    assert ns["out"] == 4.0


def test_exceptions_are_compared_by_type_on_the_host():
    from medagentgym.sandbox.base import ProbeValue

    want = {"raises": "ValueError"}
    assert raised_type("ValueError: bad input") == "ValueError"
    assert raised_type("probe failed") is None and raised_type(None) is None
    assert _case_matches(want, ProbeValue(error="ValueError: x"))
    assert not _case_matches(want, ProbeValue(error="KeyError: 'x'"))
    assert not _case_matches(want, ProbeValue(value="ValueError", type="str"))
    assert not _case_matches(want, None)
    assert not _case_matches({"value": 1, "type": "int"}, ProbeValue(error="ValueError: x"))


# --------------------------------------------------------------------------- the tasks


@pytest.fixture(scope="module")
def tasks(mirror, tmp_path_factory):
    if not (mirror / "biocoder").is_dir():
        pytest.skip("the BioCoder mirror is not available")
    if not _sandbox_ok():
        pytest.skip("bubblewrap cannot run here (the hidden tests are built in the sandbox)")
    from medagentgym.data import home
    from medagentgym.data.sources import pull

    saved = os.environ.get(home.ENV_VAR)
    root = os.environ.get("MEDAGENTGYM_TEST_BIOCODER_HOME") or str(
        tmp_path_factory.mktemp("biocoder_home"))
    os.environ[home.ENV_VAR] = root
    added = "biocoder" not in registry.list_datasets()
    if added:
        registry.register(SPEC)
    registry.clear_cache()
    try:
        pull("biocoder", mirror)
        fam = registry.get_family("biocoder")
        yield {"test": fam.load_tasks("test"), "train": fam.load_tasks("train"), "family": fam}
    finally:
        if added:
            registry._REGISTRY.pop("biocoder", None)
        registry.clear_cache()
        if saved is None:
            os.environ.pop(home.ENV_VAR, None)
        else:
            os.environ[home.ENV_VAR] = saved


def _all(tasks) -> list[Task]:
    return [*tasks["test"], *tasks["train"]]


def test_tasks_are_built_with_hidden_cases_and_deterministic_ids(tasks):
    assert len(tasks["test"]) >= 15 and len(tasks["train"]) >= 60
    ids = [t.id for t in _all(tasks)]
    assert len(ids) == len(set(ids))
    assert all(t.id.startswith(("biocoder-test-public-", "biocoder-train-hidden-"))
               for t in _all(tasks))
    cats = {t.category for t in _all(tasks)}
    assert cats <= {c for c, _ in bc.CATEGORIES} and len(cats) >= 5
    for t in _all(tasks):
        cases = t.truth.value["cases"]
        assert len(cases) == 5
        outs = {json.dumps(c["value"], sort_keys=True) for c in cases if "raises" not in c}
        assert len(outs) >= 2  # a constant function cannot pass
        assert sum("raises" in c for c in cases) <= 1
        # a staged file's path is never an expected value
        assert not any(f"{bc.FILE_DIR}/{bc.FILE_PREFIX}" in json.dumps(c.get("value"))
                       for c in cases)


def test_hidden_inputs_and_expectations_never_appear_in_the_prompt(tasks):
    fam = tasks["family"]
    for t in _all(tasks):
        text = t.goal + fam.instructions(t) + json.dumps(t.metadata)
        example = t.metadata["example"]
        for case in t.truth.value["cases"]:
            call = bc.call_expr(t.metadata["function"], case["args"])
            assert call not in text
            assert case["args"] != example["args"]
        assert "def " + t.metadata["function"] + "(" not in t.metadata["context"]


def test_exclusions_are_recorded_with_reasons(tasks):
    reasons = tasks["family"].excluded()
    assert reasons and all(r["reason"] and r["key"] for r in reasons)
    assert len(_all(tasks)) + len(reasons) == 157 + 1026  # every corpus function accounted


# --------------------------------------------------------------------------- the environment


def _sample(tasks, n_test: int = 8, n_train: int = 4) -> list[Task]:
    test, train = sorted(tasks["test"], key=lambda t: t.id), sorted(tasks["train"],
                                                                     key=lambda t: t.id)
    random.Random(14).shuffle(test)
    random.Random(15).shuffle(train)
    return test[:n_test] + train[:n_train]  # a prefix of the same order for every n


def _code(source: str) -> str:
    return json.dumps({"action": "validate_code", "params": {"code": source}})


@pytest.fixture(scope="module")
def env(tasks):
    e = mag.make("biocoder", "test", tasks=_sample(tasks))
    yield e
    e.close()


def _episode(env, task: Task, code: str) -> tuple[float, str]:
    env.reset(options={"task_id": task.id})
    obs, reward, _done, _, _info = env.step(_code(code))
    return reward, obs


def test_gold_scores_one_through_the_environment(env, tasks):
    for task in _sample(tasks):
        reward, obs = _episode(env, task, task.truth.solution)
        assert reward == 1.0, (task.id, obs[-800:])
        for case in task.truth.value["cases"]:  # nothing hidden is echoed
            assert bc.call_expr(task.metadata["function"], case["args"]) not in obs


def _with_body(task: Task, body: str) -> str:
    ctx = task.metadata["context"]
    params = ", ".join(task.metadata["params"])
    return f"{ctx}\n\ndef {task.metadata['function']}({params}):\n    {body}\n"


def test_stubs_constants_and_hard_coding_score_zero(env, tasks):
    for task in _sample(tasks, 6, 2):
        example = task.metadata["example"]
        visible = bc.call_expr(task.metadata["function"], example["args"])
        cheats = {
            "return None": _with_body(task, "return None"),
            "constant": _with_body(task, f"return {example['value']!r}"),
            "hard-coded example": _with_body(
                task, f"print({visible!r}); return {example['value']!r}"),
            "no function, exit": "import sys\nsys.exit(0)",
            "main and atexit only": "import atexit\natexit.register(lambda: print('ok'))\n"
                                     "def main():\n    print('ok')\nmain()",
        }
        for name, code in cheats.items():
            reward, obs = _episode(env, task, code)
            assert reward == 0.0, (task.id, name, obs[-400:])


def test_extra_prints_and_patched_print_do_not_matter(env, tasks):
    task = _sample(tasks, 1, 0)[0]
    code = ("import builtins, random\nbuiltins.print = lambda *a, **k: None\n"
            "random.seed = lambda *a, **k: None\nprint('noise')\n" + task.truth.solution)
    reward, obs = _episode(env, task, code)
    assert reward == 1.0, obs[-400:]


def test_a_wrong_function_scores_zero(env, tasks):
    # the golden of another task under this task's name: a real, different function
    sample = _sample(tasks, 4, 0)
    for task, other in zip(sample, sample[1:] + sample[:1], strict=True):
        params = task.metadata["params"]
        body = f"return {other.metadata['function']}(*{params[:len(other.metadata['params'])]!r})"
        code = other.truth.solution + "\n\n" + _with_body(task, body).split("\n\n", 1)[-1]
        code = code.replace(f"*{params[:len(other.metadata['params'])]!r}",
                            ", ".join(params[:len(other.metadata['params'])]))
        reward, _ = _episode(env, task, code)
        assert reward == 0.0, task.id


def test_family_options_and_grading_of_nothing(tasks):
    import asyncio

    from medagentgym.tasks.contract import GradeContext, SandboxView

    fam: BioCoderFamily = tasks["family"]
    task = tasks["test"][0]
    grade = asyncio.run(fam.grade(GradeContext(task=task, stage=0, answer=None,
                                               has_answer=False, result=None,
                                               sandbox=SandboxView(None))))
    assert not grade.correct and grade.score == 0.0
    assert set(fam.probes(task)) == {f"h{i}" for i in range(5)}


def test_nothing_hidden_is_readable_in_the_sandbox(env, tasks):
    """Files the agent can read (workspace, tmp, inputs) and the environment hold neither
    the hidden inputs nor the expected values; the agent's code runs before any probe."""
    task = _sample(tasks, 1, 0)[0]
    spy = ("import os\nseen = []\n"
           "for root in ('/workspace', '/tmp', '/data', '/inputs'):\n"
           "    for d, _, fs in os.walk(root):\n"
           "        for f in fs:\n"
           "            try:\n"
           "                seen.append(open(os.path.join(d, f), errors='replace').read(100000))\n"
           "            except OSError:\n"
           "                pass\n"
           "seen.append(repr(sorted(os.environ.items())))\n"
           "answer = '\\n'.join(seen)\n")
    env.reset(options={"task_id": task.id})
    obs, reward, _, _, info = env.step(_code(spy))
    seen = obs + json.dumps(info, default=str)
    assert reward == 0.0
    for case in task.truth.value["cases"]:
        for arg in case["args"]:
            if len(arg) > 6:
                assert arg not in seen
        value = json.dumps(case["value"])
        if len(value) > 6:
            assert value not in seen


def _file_tasks(tasks, n: int) -> list[Task]:
    found = [t for t in sorted(_all(tasks), key=lambda t: t.id)
             if any("write_text" in a for c in t.truth.value["cases"] for a in c["args"])]
    random.Random(16).shuffle(found)
    return found[:n]


def test_file_input_tasks_exist_and_cheats_reading_the_file_score_zero(tasks):
    """Tasks whose functions read a file: gold passes on the staged files; stubs that read
    nothing, or return the file's size, first line or lines, score 0."""
    chosen = _file_tasks(tasks, 5)
    assert len(chosen) >= 3
    with mag.make("biocoder", "test", tasks=chosen) as e:
        for task in chosen:
            reward, obs = _episode(e, task, task.truth.solution)
            assert reward == 1.0, (task.id, obs[-600:])
            params = task.metadata["params"]
            fidx = next(i for i, a in enumerate(task.truth.value["cases"][0]["args"])
                        if "write_text" in a)
            p = params[fidx]
            cheats = {
                "reads nothing": _with_body(task, "return 0"),
                "file size": _with_body(task, f"import os; return os.path.getsize({p})"),
                "first line": _with_body(task, f"return open({p}).readline()"),
                "lines": _with_body(task, f"return open({p}).read().splitlines()"),
            }
            for name, code in cheats.items():
                reward, obs = _episode(e, task, code)
                assert reward == 0.0, (task.id, name, obs[-400:])


def test_a_case_expecting_an_exception_needs_the_exception(tasks):
    raising = [t for t in sorted(_all(tasks), key=lambda t: t.id)
               if any("raises" in c for c in t.truth.value["cases"])]
    if not raising:
        pytest.skip("no kept task expects an exception")
    task = raising[0]
    name = task.metadata["function"]
    # the golden, but swallowing every exception: the raising case tells it apart
    wrapped = (task.truth.solution + f"\n\n_gold_{name} = {name}\n\n"
               f"def {name}(*a, **k):\n    try:\n        return _gold_{name}(*a, **k)\n"
               f"    except Exception:\n        return None\n")
    with mag.make("biocoder", "test", tasks=[task]) as e:
        reward, obs = _episode(e, task, task.truth.solution)
        assert reward == 1.0, obs[-600:]
        reward, obs = _episode(e, task, wrapped)
        assert reward == 0.0, obs[-400:]


@pytest.mark.slow
def test_gold_passes_and_cheats_fail_on_every_kept_task(tasks):
    """Every kept task, through the sandbox probes and the host grader: the golden passes;
    `return None`, the example's value and (file tasks) the staged file's size, first line
    or content fail."""
    import asyncio

    from medagentgym.sandbox import open_sandbox_async
    from medagentgym.tasks.biocoder import _case_matches

    fam: BioCoderFamily = tasks["family"]

    def codes(t: Task) -> dict[str, str]:
        ex = t.metadata["example"]
        out = {"gold": t.truth.solution, "none": _with_body(t, "return None"),
               "example": _with_body(t, f"return {ex.get('value')!r}")}
        staged = [i for i, a in enumerate(t.truth.value["cases"][0]["args"])
                  if bc.staged_text(a) is not None]
        if staged:
            p = t.metadata["params"][staged[0]]
            out["size"] = _with_body(t, f"import os; return os.path.getsize({p})")
            out["first line"] = _with_body(t, f"return open({p}).readline()")
            out["content"] = _with_body(t, f"return open({p}).read()")
        return out

    async def sweep() -> dict[str, dict[str, bool]]:
        todo = sorted(_all(tasks), key=lambda t: t.id)
        res: dict[str, dict[str, bool]] = {}

        async def worker() -> None:
            async with open_sandbox_async(preload="science") as sb:
                while todo:
                    t = todo.pop()
                    cases = t.truth.value["cases"]
                    res[t.id] = {}
                    for name, code in codes(t).items():
                        r = await sb.execute(code, timeout=30, probes=fam.probes(t),
                                             probe_timeout=20)
                        got = r.probes or {}
                        res[t.id][name] = all(_case_matches(c, got.get(f"h{i}"))
                                              for i, c in enumerate(cases))
                        await sb.reset()

        await asyncio.gather(*(worker() for _ in range(3)))
        return res

    res = asyncio.run(sweep())
    assert [k for k, r in res.items() if not r["gold"]] == []
    assert [(k, n) for k, r in res.items() for n, ok in r.items() if n != "gold" and ok] == []
