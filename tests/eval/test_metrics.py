"""Metrics on synthetic trajectory sets whose values are known exactly."""

from __future__ import annotations

import itertools
import random
from math import comb

import pytest

from medagentgym.eval import metrics
from medagentgym.eval.metrics import best_at_k, bootstrap_ci, evaluate, pass_at_k
from medagentgym.tasks.registry import list_datasets

from .synth import code_step, failure_zoo, info_step, infra, traj, write_run


def _brute_best(scores, successes, k):
    """best@k by enumerating every k-subset, ties shared equally."""
    total = 0.0
    subsets = list(itertools.combinations(range(len(scores)), k))
    for sub in subsets:
        top = max(scores[i] for i in sub)
        winners = [i for i in sub if scores[i] == top]
        total += sum(successes[i] for i in winners) / len(winners)
    return total / len(subsets)


def test_pass_at_k_is_the_combinatorial_formula():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = 1 - comb(n - c, k) / comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    assert pass_at_k(200, 1, 1) == pytest.approx(1 / 200)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_best_at_k_matches_enumeration_with_ties():
    rng = random.Random(7)
    for _ in range(40):
        n = rng.randint(1, 8)
        scores = [rng.choice([0.1, 0.5, 0.9, rng.random()]) for _ in range(n)]
        succ = [rng.random() < 0.4 for _ in range(n)]
        for k in range(1, n + 1):
            assert best_at_k(scores, succ, k) == pytest.approx(_brute_best(scores, succ, k))


def _scaling_set(n=8):
    """20 tasks, n samples each, task i has i % (n + 1) correct samples."""
    trajs, counts = [], []
    for i in range(20):
        c = i % (n + 1)
        counts.append(c)
        for s in range(n):
            ok = s < c
            trajs.append(traj(f"t{i}", sample=s, success=ok,
                              metadata={"verifier_score": float(ok), "const": 0.5,
                                        "anti": float(not ok)}))
    return trajs, counts


def test_evaluate_pass_at_k_against_formula():
    n = 8
    trajs, counts = _scaling_set(n)
    report = evaluate(trajs, resamples=200)
    pk = report["datasets"]["mimic_iii"]["pass_at_k"]
    assert list(pk) == [str(k) for k in range(1, n + 1)]
    for k in range(1, n + 1):
        expected = sum(1 - comb(n - c, k) / comb(n, k) for c in counts) / len(counts)
        assert pk[str(k)] == pytest.approx(expected)
    assert pk["1"] == pytest.approx(report["datasets"]["mimic_iii"]["success_rate"])
    assert report["overall"]["pass_at_k"] == pk
    # --max-k caps the curve
    assert list(evaluate(trajs, resamples=50, max_k=3)["overall"]["pass_at_k"]) == ["1", "2", "3"]


def test_best_at_k_perfect_constant_and_adversarial_scorers():
    n = 8
    trajs, counts = _scaling_set(n)
    scorers = {"perfect": metrics.verifier_scorer("verifier_score"),
               "constant": metrics.verifier_scorer("const"),
               "adversarial": metrics.verifier_scorer("anti")}
    rep = evaluate(trajs, resamples=50, scorers=scorers)["overall"]
    pass1 = rep["pass_at_k"]["1"]
    for k in range(1, n + 1):
        assert rep["best_at_k"]["perfect"][str(k)] == pytest.approx(rep["pass_at_k"][str(k)])
        assert rep["best_at_k"]["constant"][str(k)] == pytest.approx(pass1)
        # the worst-first scorer succeeds only when all k drawn samples are correct
        exp = sum(comb(c, k) / comb(n, k) for c in counts) / len(counts)
        assert rep["best_at_k"]["adversarial"][str(k)] == pytest.approx(exp)


def test_best_at_k_with_random_scores_averages_to_pass_at_1():
    n, k = 6, 4
    succ = [True, False, False, True, False, False]
    rng = random.Random(0)
    vals = [best_at_k([rng.random() for _ in range(n)], succ, k) for _ in range(3000)]
    assert sum(vals) / len(vals) == pytest.approx(2 / 6, abs=0.02)


def test_verifier_best_at_k_needs_every_score_and_majority_baseline():
    # 1 task, 4 samples: answers 7, 7, 7 (wrong) and 4 (right): majority picks the wrong 7
    ts = [traj("t", sample=s, success=(s == 3), steps=[code_step(
        1, "answer = x", correct=(s == 3), detail=f"pred={4 if s == 3 else 7} gold=4")])
        for s in range(4)]
    rep = evaluate(ts, resamples=50)["overall"]
    assert "verifier" not in rep["best_at_k"]  # no scores stored
    maj = rep["best_at_k"]["majority"]
    assert maj["1"] == pytest.approx(0.25)
    # k=2: the right answer wins only when drawn with no 7 beside it: impossible (3 of 4
    # are 7 and a tie between one 7 and the 4 never happens: counts 3 vs 1)
    assert maj["2"] == pytest.approx(0.0)
    assert maj["4"] == pytest.approx(0.0)


def test_bootstrap_interval_sanity():
    lo, hi, reps = bootstrap_ci([1] * 200 + [0] * 200, [1] * 400, resamples=2000)
    assert lo < 0.5 < hi
    assert 0.07 < hi - lo < 0.13  # normal approx: 2 * 1.96 * sqrt(.25 / 400) = 0.098
    assert len(reps) == 2000
    lo_s, hi_s, _ = bootstrap_ci([1] * 20 + [0] * 20, [1] * 40, resamples=2000)
    assert hi_s - lo_s > hi - lo  # fewer tasks, wider interval
    assert bootstrap_ci([0] * 30, [1] * 30)[:2] == (0.0, 0.0)
    assert bootstrap_ci([1] * 30, [1] * 30)[:2] == (1.0, 1.0)
    assert bootstrap_ci([], [])[:2] == (0.0, 0.0)
    # 10 tasks x 20 identical samples are 10 observations, not 200
    lo_c, hi_c, _ = bootstrap_ci([20] * 5 + [0] * 5, [20] * 10, resamples=2000)
    lo_i, hi_i, _ = bootstrap_ci([1] * 100 + [0] * 100, [1] * 200, resamples=2000)
    assert hi_c - lo_c > 2 * (hi_i - lo_i)
    # deterministic for a seed
    assert bootstrap_ci([1, 0, 1], [1, 1, 1], seed=3)[:2] == bootstrap_ci([1, 0, 1], [1, 1, 1], seed=3)[:2]


def test_failure_taxonomy_and_infrastructure_apart():
    zoo = failure_zoo()
    for expected, t in zoo.items():
        assert metrics.outcome(t) == expected, t.task_id
    d = evaluate(list(zoo.values()), resamples=100)["datasets"]["eicu"]
    assert d["episodes"] == 11 and d["graded"] == 10 and d["successes"] == 1
    assert d["success_rate"] == pytest.approx(0.1)  # infra is not in the denominator
    assert d["infrastructure"] == {"episodes": 1, "by_source": {"model_endpoint": 1}}
    assert "infrastructure" not in d["failures"]
    assert all(d["failures"][c] == 1 for c in metrics.FAILURE_CATEGORIES)
    assert sum(d["failure_share"].values()) == pytest.approx(1.0)
    assert d["ci95"][0] <= d["success_rate"] <= d["ci95"][1]


def test_loop_threshold_is_configurable():
    t = failure_zoo()["stuck_in_loop"]
    assert metrics.classify_failure(t, loop_threshold=4) == "runtime_error"
    assert metrics.longest_repeat(t) == 3


def test_action_mix_tokens_cost_and_turns():
    t1 = traj("a", success=True, steps=[info_step(1), info_step(2, "x"),
                                         code_step(3, "answer = 1", correct=True)],
              metadata={"usage": {"prompt_tokens": 1000, "completion_tokens": 50,
                                  "total_tokens": 1050, "cost_usd": 0.25},
                        "agent_stats": {"repeated_actions": 1, "loop_hints": 0}})
    t2 = traj("b", steps=[code_step(1, "x", status="error", observation="NameError: x"),
                          code_step(2, "answer = 2", correct=False)])
    d = evaluate([t1, t2], resamples=50)["datasets"]["mimic_iii"]
    assert d["action_counts"]["request_info"] == 2 and d["action_counts"]["code"] == 3
    assert d["action_mix"]["request_info"] == pytest.approx(0.4)
    assert d["action_mix"]["code"] == pytest.approx(0.6)
    assert d["mean_turns"] == pytest.approx(2.5)
    # t1 from metadata; t2 from its steps (2 x 120)
    assert d["tokens"]["total_tokens"] == 1050 + 240
    assert d["cost_usd"] == pytest.approx(0.25)
    assert d["agent_stats"]["repeated_actions"] == 1


def test_json_shape_aggregates_and_categories():
    ts = [traj(f"m{i}", success=i < 3, category="count" if i % 2 else "date") for i in range(6)]
    ts += [traj(f"e{i}", dataset="eicu", success=i < 1) for i in range(4)]
    ts += [traj(f"n{i}", dataset="npowerai", success=True) for i in range(2)]
    rep = evaluate(ts, resamples=100)
    for name in ("mimic_iii", "eicu", "npowerai"):
        d = rep["datasets"][name]
        for key in ("episodes", "success_rate", "ci95", "pass_at_k", "action_mix", "failures"):
            assert key in d
        assert len(d["ci95"]) == 2 and "1" in d["pass_at_k"]
    assert set(rep["datasets"]["mimic_iii"]["categories"]) == {"count", "date"}
    assert rep["datasets"]["mimic_iii"]["categories"]["date"]["success_rate"] == pytest.approx(2 / 3)
    ind = rep["overall"]["in_distribution"]
    assert ind["datasets"] == ["eicu", "mimic_iii"]
    assert ind["average"] == pytest.approx((0.5 + 0.25) / 2)  # macro average
    assert ind["ci95"][0] <= ind["average"] <= ind["ci95"][1]
    assert not ind["complete"] and "treqs" in ind["missing"] and "biocoder" in ind["missing"]
    # a paper dataset not registered (yet) is "not implemented"; a registered one is only
    # missing from this run
    unregistered = [d for d in metrics.PAPER_IN_DISTRIBUTION if d not in list_datasets()]
    assert sorted(ind["not_implemented"]) == sorted(unregistered)
    assert "treqs" not in ind["not_implemented"] and "ehrshot" not in ind["not_implemented"]
    assert "biocoder" not in ind["not_implemented"]  # registered: missing from this run only
    ood = rep["overall"]["ood"]
    assert ood["datasets"] == ["npowerai"] and ood["average"] == 1.0
    assert rep["overall"]["episodes"] == 12
    assert rep["overall"]["success_rate"] == pytest.approx(6 / 12)  # pooled (micro)


def test_load_run_keeps_the_last_record_of_a_retried_episode(tmp_path):
    run = write_run(tmp_path / "r", [infra("t1"), traj("t2", success=True),
                                     traj("t1", success=True)])
    loaded = metrics.load_run(run)
    assert len(loaded.trajectories) == 2
    assert all(t.success for t in loaded.trajectories)
    assert loaded.label == "model-a"
    with pytest.raises(Exception, match=r"trajectories\.jsonl"):
        metrics.load_run(tmp_path / "nothing")


def test_leaderboard_groups_by_model(tmp_path):
    a = write_run(tmp_path / "a", [traj(f"t{i}", success=i < 2) for i in range(4)])
    b = write_run(tmp_path / "b", [traj(f"t{i}", success=True, model="model-b") for i in range(4)])
    c = write_run(tmp_path / "c", [traj(f"u{i}", dataset="treqs", success=True) for i in range(2)])
    boards = metrics.leaderboard(metrics.load_runs([a, b, c]), resamples=50)
    assert set(boards) == {"model-a", "model-b"}
    assert boards["model-a"]["datasets"]["mimic_iii"]["success_rate"] == 0.5
    assert set(boards["model-a"]["datasets"]) == {"mimic_iii", "treqs"}


def test_mean_score_next_to_success_for_continuous_datasets(tmp_path):
    """A metric dataset (reward = AUROC) reports its mean score; a binary one's equals success."""
    from medagentgym.eval.report import summary_markdown as markdown_report

    scored = []
    for i, (reward, ok) in enumerate([(0.91, True), (0.62, False), (0.75, True), (0.5, False)]):
        t = traj(f"ml-{i}", dataset="ehrshot", success=ok)
        scored.append(t.model_copy(update={"reward": reward}))
    binary = [traj(f"b-{i}", dataset="mimic_iii", success=i % 2 == 0) for i in range(4)]
    report = evaluate(scored + binary, resamples=50)
    ml, sql = report["datasets"]["ehrshot"], report["datasets"]["mimic_iii"]
    assert ml["continuous"] and ml["mean_score"] == pytest.approx((0.91 + 0.62 + 0.75 + 0.5) / 4)
    assert ml["success_rate"] == pytest.approx(0.5)
    assert not sql["continuous"] and sql["mean_score"] == pytest.approx(sql["success_rate"])
    text = markdown_report(report)
    assert "Score %" in text and "69.5" in text
    only_binary = markdown_report(evaluate(binary, resamples=50))
    assert "Score %" not in only_binary
