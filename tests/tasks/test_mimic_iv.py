"""The mimic_iv dataset (EHRSQL-2024 on MIMIC-IV): splits, gold, grading, abstention."""

from __future__ import annotations

import ast
import os
from collections import Counter
from pathlib import Path

import pytest

from medagentgym.tasks import registry

MIRROR = Path(__file__).resolve().parents[3] / "shared" / "data"
RELEASE = MIRROR / "ehrsql2024_mimic_iv_demo"
DEMO = MIRROR / "mimic_iv_demo"

pytestmark = pytest.mark.skipif(not (RELEASE / "mimic_iv").is_dir(),
                                reason=f"EHRSQL-2024 release not in the mirror ({RELEASE})")

OPTS = {"database": "synthetic", "patients": 40}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    from medagentgym.data import home as _home
    from medagentgym.data.sources import pull

    root = tmp_path_factory.mktemp("mimic_iv_home")
    saved = os.environ.get(_home.ENV_VAR)
    os.environ[_home.ENV_VAR] = str(root)
    registry.clear_cache()
    pull("ehrsql2024", MIRROR)
    yield root
    registry.clear_cache()
    if saved is None:
        os.environ.pop(_home.ENV_VAR, None)
    else:
        os.environ[_home.ENV_VAR] = saved


@pytest.fixture(scope="module")
def family(home):
    return registry.get_family("mimic_iv", **OPTS)


def test_registered_with_the_release_splits(family):
    spec = registry.get_spec("mimic-iv")
    assert spec.splits == ("train", "valid", "test") and spec.databases == ("mimic_iv",)
    sizes = {s: len(family.load_tasks(s)) for s in spec.splits}
    assert all(n > 50 for n in sizes.values()), sizes
    assert sizes["train"] > sizes["test"]
    ids = [t.id for s in spec.splits for t in family.load_tasks(s)]
    assert len(ids) == len(set(ids))
    report = family.build_report or {}
    if report:  # built in this process (else it came from the cache)
        assert report["kept"] == len(ids) and report["unanswerable"] == 915


def test_answerable_only_by_default_and_prompt(family):
    tasks = family.load_tasks("test")
    assert not any(t.metadata["is_impossible"] for t in tasks)
    assert "unanswerable" not in {t.category for t in tasks}
    text = family.instructions(tasks[0])
    assert "2100-12-31 23:59:00" in text and "inputevents" in text and "/data/mimic_iv.db" in text
    # nothing of the gold in what the agent sees
    t = tasks[0]
    assert t.truth.extra["sql"] not in text and t.truth.extra["sql"] not in t.goal


def _perturb(rows):
    if isinstance(rows[0][0], int | float) and not isinstance(rows[0][0], bool):
        return [[rows[0][0] + 7.5, *list(rows[0][1:])]] + [list(r) for r in rows[1:]]
    return [["not " + str(rows[0][0]), *list(rows[0][1:])]] + [list(r) for r in rows[1:]]


def test_gold_scores_one_and_wrong_answers_zero(family):
    tasks = family.load_tasks("test") + family.load_tasks("valid")
    for t in tasks:
        gold = t.truth.value
        assert family.grade_value(t, gold).score == 1.0, t.id
        assert family.grade_value(t, _perturb(gold)).score == 0.0, t.id
        assert family.grade_value(t, None).score == 0.0, t.id


def test_constant_answers_earn_almost_nothing(family):
    tasks = [t for s in ("train", "valid", "test") for t in family.load_tasks(s)]
    for const in (None, 0, 1, 2, True, False, "", [], "yes", 0.0):
        hits = sum(family.grade_value(t, const).score for t in tasks)
        assert hits <= 0.02 * len(tasks), (const, hits, len(tasks))


def test_abstention_adds_the_unanswerable_questions(home):
    fam = registry.get_family("mimic_iv", abstention=True, **OPTS)
    tasks = fam.load_tasks("test")
    un = [t for t in tasks if t.category == "unanswerable"]
    assert len(un) == 233  # test items whose label is null
    assert all(fam.grade_value(t, None).score == 1.0 for t in un)
    assert all(fam.grade_value(t, [[1]]).score == 0.0 for t in un)
    assert all(fam.grade_value(t, "something").score == 0.0 for t in un[:20])


def test_categories_cover_the_question_kinds(family):
    cats = Counter(t.category for s in ("train", "test") for t in family.load_tasks(s))
    assert {"admission", "diagnosis", "procedure", "lab", "medication", "cost",
            "intake_output", "microbiology", "vital"} <= set(cats), cats


@pytest.mark.slow
@pytest.mark.skipif(not (DEMO / "hosp").is_dir(), reason="MIMIC-IV demo not in the mirror")
def test_imported_gold_is_the_authors_answer(home):
    from medagentgym.data import home as _home
    from medagentgym.data.importers_mimic_iv import import_mimic_iv
    from medagentgym.tasks.ehrsql2024 import authors_form, load_release

    import_mimic_iv(DEMO, _home.db_path("mimic_iv"))
    fam = registry.get_family("mimic_iv", database="imported")
    answers = {i.id: i.answer for i in load_release(RELEASE)}
    for split in ("valid", "test"):
        tasks = fam.load_tasks(split)
        assert len(tasks) > 500
        for t in tasks:
            rid = t.provenance.original_id
            assert authors_form(t.truth.value) == answers[rid], t.id
            # the published answer itself (values as text, floats to 3 places) is accepted
            published = ast.literal_eval(answers[rid])
            if len(t.truth.value) < 100 and not any(
                    isinstance(v, float) for r in t.truth.value for v in r):
                assert fam.grade_value(t, published).score == 1.0, (t.id, published)
    assert "chartevents" in str(fam.build_report or "chartevents")


def test_release_without_answers_is_refused(tmp_path):
    from medagentgym.errors import ConfigurationError
    from medagentgym.tasks.ehrsql2024 import load_release

    for split in ("train", "valid", "test"):
        d = tmp_path / "mimic_iv" / split
        d.mkdir(parents=True)
        for name in ("data", "label"):
            (d / f"{name}.json.gz").symlink_to(RELEASE / "mimic_iv" / split / f"{name}.json.gz")
    with pytest.raises(ConfigurationError, match=r"no answer\.json"):
        load_release(tmp_path)
    with pytest.raises(ConfigurationError, match=r"lacks data\.json"):
        load_release(tmp_path / "nowhere")
