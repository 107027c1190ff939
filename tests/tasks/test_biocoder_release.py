"""BioCoder from the MedAgentGym release layout (``data import medagentgym``): the published
harness's defects are repaired or the task is excluded with the reason (a context that already
defines the target, a golden that does not parse, imports the sandbox lacks, the ``main()``
driver); methods are graded with a stand-in instance. Built from a small fake release in the
published record shape (idx / problem / solution / context with the insertion point /
signature)."""

from __future__ import annotations

import json
import os

import pytest

import medagentgym as mag
from medagentgym.tasks import biocoder_corpus as bc
from medagentgym.tasks import registry

SPEC = registry.DatasetSpec(
    "biocoder", "medagentgym.tasks.biocoder:BioCoderFamily",
    "BioCoder: bioinformatics functions graded on hidden inputs", "Bioinformatics coding",
    licence="CC BY 4.0", sources=("biocoder",))

HEAD = "import random\nimport re\nimport pysam\nimport numpy as np\n"
MAIN = "def main():\n    random.seed(42)\n    print(1)\nif __name__ == \"__main__\":\n    main()\n"

GOOD = {  # needs a module global of its context; the context imports a missing package
    "idx": "a1", "problem": "This is in python\nEscape TeX characters in a string.",
    "signature": "def sanitize_tex(original_text)",
    "solution": ("def sanitize_tex(original_text):\n    \"\"\"Escape TeX specials.\"\"\"\n"
                 "    out = re.sub('([{}])'.format(''.join(map(re.escape, _escaped))),\n"
                 "        r'\\\\\\1', original_text)\n"
                 "    for c, m in _mods.items():\n        out = out.replace(c, m)\n"
                 "    return out\n"),
    "context": (HEAD + "_mods = {'~': '$\\\\sim$'}\n_escaped = ['$', '%', '_', '&', '#']\n"
                "<<insert solution here>>\n" + MAIN),
}
UNINDENTED = {  # the release splices some goldens with a stray indentation
    "idx": "a2", "problem": "Count GC.",
    "signature": "def gc_count(seq)",
    "solution": ("    def gc_count(seq):\n        \"\"\"Number of G and C.\"\"\"\n"
                 "        return sum(1 for b in seq.upper() if b in 'GC')\n"),
    "context": HEAD + "<<insert solution here>>\n" + MAIN,
}
METHOD = {  # a method: graded with a stand-in instance carrying the attributes it reads
    "idx": "a3", "problem": "FASTA of a sequence record.",
    "signature": "def to_fasta(self, width)",
    "solution": ("def to_fasta(self, width):\n    \"\"\"FASTA text.\"\"\"\n"
                 "    seq = self.sequence\n"
                 "    if self.mode.value == 'upper':\n        seq = seq.upper()\n"
                 "    lines = [seq[i:i + max(1, width)] for i in range(0, len(seq), max(1, width))]\n"
                 "    return '>' + str(self.label) + '\\n' + '\\n'.join(lines)\n"),
    "context": HEAD + "<<insert solution here>>\n" + MAIN,
}
LEAKED = {  # the context already defines the target: any code would pass
    "idx": "b1", "problem": "Reverse.", "signature": "def rev(s)",
    "solution": "def rev(s):\n    return s[::-1]\n",
    "context": HEAD + "<<insert solution here>>\ndef rev(s):\n    return s[::-1]\n" + MAIN,
}
BROKEN = {  # a golden that does not parse
    "idx": "b2", "problem": "Broken.", "signature": "def broken(x)",
    "solution": "def broken(x):\nreturn x +\n",
    "context": HEAD + "<<insert solution here>>\n" + MAIN,
}
NEEDS_MISSING = {  # the golden needs the package the sandbox lacks
    "idx": "b3", "problem": "Open a BAM.", "signature": "def n_reads(seq)",
    "solution": "def n_reads(seq):\n    return pysam.AlignmentFile(seq).mapped\n",
    "context": HEAD + "<<insert solution here>>\n" + MAIN,
}


def test_cleaning_repairs_or_rejects_published_defects():
    good = bc.clean_release_task(GOOD, "0")
    assert good.defect is None and good.fn and good.fn.name == "sanitize_tex"
    assert "def main" not in good.context and "__main__" not in good.context
    assert "_escaped" in good.context and good.dropped_imports == ["import pysam"]
    assert bc.clean_release_task(UNINDENTED, "1").defect is None
    meth = bc.clean_release_task(METHOD, "2")
    assert meth.defect is None and meth.fn.self_attrs == ["sequence", "mode.value", "label"]
    assert meth.fn.attr_literals == {"mode.value": ["upper"]}
    assert "already defines `rev`" in bc.clean_release_task(LEAKED, "3").defect
    assert "does not parse" in bc.clean_release_task(BROKEN, "4").defect
    assert "no solution" in bc.clean_release_task({"idx": "x"}, "5").defect


def test_methods_calling_other_methods_are_excluded_and_attributes_are_found():
    f = bc.analyse("1", "c", "def m(self, x):\n    return self.helper(x)\n")
    assert f.problem and "another method" in f.problem
    f = bc.analyse("2", "c", "def m(self, x):\n    return other(self)\n")
    assert f.problem and "beyond reading" in f.problem
    f = bc.analyse("3", "c", "@property\ndef size(self):\n    return len(self.items) * self.k\n")
    assert f.problem is None and f.self_attrs == ["items", "k"]
    args = bc.candidate_inputs(f, "seed", 5)
    assert all(a[0].startswith("__import__('types').SimpleNamespace(items=") for a in args)


def _sandbox_ok() -> bool:
    from medagentgym.sandbox import available_providers

    return available_providers()["bwrap"][0]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    if not _sandbox_ok():
        pytest.skip("bubblewrap cannot run here (the hidden tests are built in the sandbox)")
    from medagentgym.data import home, importers

    root = tmp_path_factory.mktemp("release")
    ds = root / "data" / "biocoder"
    ds.mkdir(parents=True)
    records = [GOOD, UNINDENTED, METHOD, LEAKED, BROKEN, NEEDS_MISSING]
    (ds / "test_tasks.jsonl").write_text(
        "\n".join(json.dumps(r) for r in records) + "\n")
    data_home = tmp_path_factory.mktemp("home")
    saved = os.environ.get(home.ENV_VAR)
    os.environ[home.ENV_VAR] = str(data_home)
    added = "biocoder" not in registry.list_datasets()
    if added:
        registry.register(SPEC)
    registry.clear_cache()
    try:
        importers.import_medagentgym(root)
        fam = registry.get_family("biocoder", workers=2)
        assert fam.resolved_source() == "official"  # auto: the registered release
        yield {"family": fam, "tasks": fam.load_tasks("test")}
    finally:
        if added:
            registry._REGISTRY.pop("biocoder", None)
        registry.clear_cache()
        if saved is None:
            os.environ.pop(home.ENV_VAR, None)
        else:
            os.environ[home.ENV_VAR] = saved


def test_release_tasks_are_built_and_defects_listed(release):
    tasks = {t.metadata["function"]: t for t in release["tasks"]}
    assert set(tasks) == {"sanitize_tex", "gc_count", "to_fasta"}
    assert all(t.id.startswith("biocoder-test-official-") for t in tasks.values())
    assert tasks["sanitize_tex"].provenance.original_id == "a1"
    assert "Task (as published)" in tasks["to_fasta"].goal
    assert "stand-in object" in tasks["to_fasta"].goal
    reasons = {r.get("idx", r["key"]): r["reason"] for r in release["family"].excluded()}
    assert "already defines" in reasons["b1"] and "does not parse" in reasons["b2"]
    assert "b3" in reasons
    assert "sanitize_tex(" not in tasks["sanitize_tex"].metadata["context"]


def _episode(env, task, code: str) -> float:
    env.reset(options={"task_id": task.id})
    _obs, reward, *_ = env.step(json.dumps({"action": "validate_code",
                                            "params": {"code": code}}))
    return reward


def test_release_gold_scores_one_and_cheats_zero(release):
    tasks = release["tasks"]
    env = mag.make("biocoder", "test", tasks=tasks)
    try:
        for t in tasks:
            assert _episode(env, t, t.truth.solution) == 1.0, t.id
            ex = t.metadata["example"]
            params = ", ".join(t.metadata["params"])
            stub = f"{t.metadata['context']}\ndef {t.metadata['function']}({params}):\n"
            assert _episode(env, t, stub + "    return None\n") == 0.0
            assert _episode(env, t, stub + f"    return {ex['value']!r}\n") == 0.0
    finally:
        env.close()
