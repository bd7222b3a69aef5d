import math

import pytest

from nanocode.evals.humaneval import evaluate, load_problems, pass_at_k, run_completion, truncate_completion


def test_pass_at_k_matches_hand_computation():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    # 1 - C(7,2)/C(10,2) = 1 - 21/45
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45)
    assert pass_at_k(5, 4, 2) == 1.0  # fewer than k failures: any k samples include a pass
    assert pass_at_k(20, 5, 10) == pytest.approx(1 - math.comb(15, 10) / math.comb(20, 10))


def test_real_problems_load_offline():
    problems = load_problems()
    assert len(problems) == 164
    assert problems[0]["task_id"] == "HumanEval/0" and "def " in problems[0]["prompt"]


def test_truncation_at_the_next_top_level_statement():
    assert truncate_completion("    return 1\n\ndef other():\n    pass") == "    return 1\n"
    assert truncate_completion("    return 1\n") == "    return 1\n"


def test_a_wrong_solution_fails_and_a_hanging_one_is_stopped():
    p = load_problems()[0]
    ok, reason = run_completion(p, "    return not True\n")
    assert not ok and "AssertionError" in reason
    ok, reason = run_completion(p, "    while True:\n        pass\n", timeout_s=2)
    assert not ok and "timeout" in reason


@pytest.mark.slow
def test_every_canonical_solution_passes_in_the_sandbox():
    problems = load_problems()
    canonical = {p["prompt"]: p["canonical_solution"] for p in problems}
    result = evaluate(problems, lambda prompt, n: [canonical[prompt]] * n, samples=1, ks=(1,))
    failed = [r for r in result.per_problem if r["passed"] != 1]
    assert not failed, failed[:3]
    assert result.pass_at[1] == 1.0
