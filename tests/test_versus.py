"""The base-vs-head job's pure parts: the order of the arms, the paired rule, the picture tolerance, the figures
of a run, the decision of a test, and the arms' command lines. The job end to end: test_versus_job.py."""

from __future__ import annotations

import math
import random
import subprocess
import sys
import types
from pathlib import Path

import pytest

from pytest_diffaccel.verdict import Gate
from pytest_diffaccel.versus import arms, child, decide, figures, judge, schedule

LIMITS = decide.Limits(max_slowdown=0.10, max_compile_increase=0.5, max_memory_increase=0.1, memory_slack=0, alpha=5e-4)


# ----------------------------------------------------------------------------- the order of the runs


@pytest.mark.parametrize("seed", range(20))
def test_each_two_pairs_open_once_with_each_arm(seed):
    runs = schedule.order(6, seed)
    assert len(runs) == 12
    for start in range(0, 12, 4):  # pairs 1-2, 3-4, 5-6: A B B A or B A A B
        four = [arm for _, arm in runs[start : start + 4]]
        assert four in (["base", "head", "head", "base"], ["head", "base", "base", "head"])
    assert [n for n, _ in runs] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]


def test_the_order_is_random_and_reproducible_from_its_seed():
    openers = {schedule.order(2, seed)[0][1] for seed in range(20)}
    assert openers == {"base", "head"}
    assert schedule.order(4, 7) == schedule.order(4, 7)
    assert [n for n, _ in schedule.order(2, 7, first_pair=5)] == [5, 5, 6, 6]


# ----------------------------------------------------------------------------- the paired rule


def _prior(sigma: float = 0.01, dof: float = 20.0) -> judge.PairPrior:
    return judge.PairPrior(sigma, dof, 20)


def test_a_significant_slowdown_on_the_starting_pairs_is_confirmed_by_the_next_pairs_before_it_fails():
    """As the history gate confirms a suspect block: two pairs that agree beyond max-slowdown ask for two more
    (a cap of 10 means 2 starting pairs), and the four judged together fail; without pairs left, they fail."""
    slower = [math.log(1.25), math.log(1.27)]
    rule = {"max_slowdown": 0.10, "alpha": 5e-4}
    first = judge.compare(slower, _prior(), "ratio", **rule, can_grow=True, cap=10)
    assert first.state == "more" and not first.regression
    assert "confirming with more pairs (a failure needs 4)" in first.reason
    four = [*slower, math.log(1.24), math.log(1.26)]
    confirmed = judge.compare(four, _prior(), "ratio", **rule, can_grow=True, cap=10)
    assert confirmed.state == "fail" and confirmed.regression
    assert judge.compare(slower, _prior(), "ratio", **rule, can_grow=False, cap=10).regression  # nothing left
    gone = judge.compare([*slower, -0.05, -0.04], _prior(), "ratio", **rule, can_grow=True, cap=10)
    assert not gone.regression  # the confirming pairs disagree: the four together decide


def test_a_clean_pair_passes_and_a_slowdown_beyond_max_slowdown_fails():
    clean = judge.compare([0.004, -0.006], _prior(), "ratio", max_slowdown=0.10, alpha=5e-4, can_grow=True)
    assert clean.state == "pass" and not clean.regression and "inside max-slowdown" in clean.reason
    slower = [math.log(1.25), math.log(1.27)]
    slow = judge.compare(slower, _prior(), "ratio", max_slowdown=0.10, alpha=5e-4, can_grow=True)
    assert slow.state == "fail" and slow.regression
    assert slow.describe().startswith("1.26x slower (2 pairs: 1.25x, 1.27x; 95% CI")


def test_an_open_question_gets_more_pairs_then_is_undecided_at_the_cap():
    # beyond max-slowdown, not significant at 2 pairs, but it would be at the cap of 6
    diffs = [math.log(1.2), math.log(1.1)]
    rule = {"max_slowdown": 0.10, "alpha": 5e-4}
    grow = judge.compare(diffs, _prior(0.07, 20), "ratio", **rule, can_grow=True, cap=6)
    assert grow.state == "more"
    cap = judge.compare(diffs, _prior(0.07, 20), "ratio", **rule, can_grow=False, cap=6)
    assert cap.state == "pass" and cap.undecided and "undecided after 2 pairs" in cap.reason
    # beyond max-slowdown on a figure as noisy as seconds here: more pairs all the same (two unlucky pairs
    # must not close the question); at the cap, judged on what it has, and said to be within its noise
    noisy = judge.compare(diffs, _prior(0.25, 20), "median", **rule, can_grow=True, cap=6)
    assert noisy.state == "more"
    blind = judge.compare(diffs, _prior(0.25, 20), "median", **rule, can_grow=False, cap=6)
    assert blind.state == "pass" and not blind.undecided and "could not decide it" in blind.reason
    # near max-slowdown on a figure too noisy for the cap's pairs to tell 1.5x max-slowdown: buys no pairs
    near_noisy = [math.log(1.09), math.log(1.08)]
    kept = judge.compare(near_noisy, _prior(0.25, 20), "median", **rule, can_grow=True, cap=6)
    assert kept.state == "pass" and "inside max-slowdown" in kept.reason
    assert judge.compare(near_noisy, _prior(0.03, 20), "ratio", **rule, can_grow=True, cap=6).state == "more"
    # near max-slowdown (beyond half of it), with the interval reaching past it: more pairs too
    near = judge.compare([math.log(1.08)], _prior(0.03, 20), "ratio", max_slowdown=0.10, alpha=5e-4, can_grow=True)
    assert near.state == "more"
    quiet = judge.compare([math.log(1.02)], _prior(0.03, 20), "ratio", max_slowdown=0.10, alpha=5e-4, can_grow=True)
    assert quiet.state == "pass"


def test_faster_is_significant_improvement():
    fast = judge.compare([math.log(0.7)] * 2, _prior(), "ratio", max_slowdown=0.10, alpha=5e-4, can_grow=False)
    assert fast.improvement and fast.size() == "1.43x faster"


def test_the_pair_spread_is_moderated_over_the_tests_and_assumed_below_three():
    assert judge.pair_prior([[0.01, -0.01], [0.02, 0.0]]).sigma is None
    prior = judge.pair_prior([[0.01, -0.01], [0.02, 0.0], [0.0, 0.015], [0.005, -0.004]])
    assert prior.tests == 4 and 0.003 < prior.sigma < 0.02
    assumed = judge.compare([0.0], judge.PairPrior(None, 0, 1), "ratio", max_slowdown=0.1, alpha=5e-4, can_grow=False)
    assert assumed.sigma == pytest.approx(judge.FALLBACK_PAIR_SPREAD["ratio"]) and "assumed" in assumed.spread_text()


def test_a_test_whose_rounds_scatter_is_expected_to_scatter_in_its_pairs_and_two_agreeing_pairs_dont_fail_it():
    # 40 tests whose pairs scatter about 5% and whose rounds fix each run's ratio to 1%; one (fp16 emulated on
    # a CPU without it) whose rounds scatter 10%, whose pairs scatter accordingly; the job is an A/A job
    draw = random.Random(1)
    quiet = [[draw.gauss(0, 0.05), draw.gauss(0, 0.05)] for _ in range(40)]
    noisy_pairs = [0.27, 0.22]  # two pairs that happen to agree: +31% and +25%
    differences = [*quiet, noisy_pairs]
    noises = [2 * 0.01**2] * 40 + [2 * 0.10**2]
    prior = judge.pair_prior(differences, noises)
    assert prior.expected(2 * 0.10**2) > 2 * prior.expected(2 * 0.01**2)
    rule = {"max_slowdown": 0.10, "alpha": 5e-4, "can_grow": False}
    judged = judge.compare(noisy_pairs, prior, "ratio", **rule, noise=noises[-1])
    assert not judged.regression, judged.describe()
    assert "expected" in judged.spread_text()
    # held to the typical test's spread, as the rule was before its rounds counted, the same pairs failed it
    assert judge.compare(noisy_pairs, judge.pair_prior(differences), "ratio", **rule).regression
    # its rounds' scatter widens what it is held to, it does not blind it: +60% in four pairs fails
    assert judge.compare([0.47] * 4, prior, "ratio", **rule, noise=noises[-1]).regression


def test_without_the_rounds_noise_the_prior_is_the_typical_pair_spread_as_before():
    from pytest_diffaccel import stats

    differences = [[0.01, -0.01], [0.02, 0.0], [0.0, 0.015], [0.005, -0.004], [0.03, -0.02]]
    prior = judge.pair_prior(differences)
    variances = [float(sum((x - sum(d) / 2) ** 2 for x in d)) for d in differences]
    variance, dof = stats.variance_prior(variances, [1] * 5, max_dof=judge.MAX_PAIR_PRIOR_DOF)
    assert prior.sigma == pytest.approx(math.sqrt(variance)) and prior.dof == pytest.approx(dof)
    assert prior.expected(None) == prior.sigma


def test_a_pairs_rounds_noise_is_the_mean_of_its_two_runs_squared_errors():
    assert judge.pair_noise([0.03, None, 0.01], [0.04, 0.02, 0.02]) == pytest.approx((0.0025 + 0.0005) / 2)
    assert judge.pair_noise([None], [0.02]) is None


# ----------------------------------------------------------------------------- the picture tolerance


def test_identical_base_pictures_leave_no_room_and_a_small_move_is_caught():
    tolerance = judge.picture_tolerance([1.0], runs=2)
    assert tolerance.value == judge.IDENTICAL_SSIM and "identical" in tolerance.basis
    moved = judge.PictureChange(0.9985, tolerance)  # the move a fixed 0.002 tolerance let through
    assert moved.changed and "SSIM 0.9985" in moved.describe() and "identical" in moved.describe()
    assert not judge.PictureChange(1.0, tolerance).changed


def test_base_pictures_that_vary_widen_the_tolerance_by_what_they_varied():
    tolerance = judge.picture_tolerance([0.999, 0.998, 0.9995], runs=3)
    assert tolerance.value == pytest.approx(2 * 0.002) and "3 runs" in tolerance.basis
    assert not judge.PictureChange(0.997, tolerance).changed
    assert judge.PictureChange(0.995, tolerance).changed
    assert judge.picture_tolerance([], runs=1).value == judge.ONE_RUN_TOLERANCE


# ----------------------------------------------------------------------------- one run's figures


def _payload(**values):
    data = {
        "test_id": "t.py::test[x]",
        "technique": "x",
        "outcome": "passed",
        "compare_mode": "relative",
        "relative_kind": "paired",
        "blocks": [{"ratio": 1.2, "median": 0.3, "drift": None}],
        "samples": [0.3, 0.31],
        "breakdown": {"text encoder": 0.03, "denoiser": 0.24, "VAE decode": 0.03, "rest": 0.0},
        "peak_memory": 1000,
        "verdict": {"gates": [{"name": "latency", "passed": True, "message": "no baseline"}]},
    }
    data.update(values)
    return data


def test_a_runs_estimate_is_its_clean_blocks_and_its_components_are_over_the_interleaved_fp32():
    run = figures.from_payload(
        _payload(blocks=[{"ratio": 1.2, "median": 0.3}, {"ratio": 9.0, "median": 9.0, "drift": "rising"}])
    )
    assert run.ratio == pytest.approx(1.2) and run.median == pytest.approx(0.3) and run.figure == "ratio"
    # the denoiser's 0.24 s of a 0.3 s call, at 1.2x the interleaved fp32: 0.96 fp32-calls' worth
    assert run.components["denoiser"] == pytest.approx(1.2 * 0.24 / 0.3)
    assert "rest" not in run.components  # no time: nothing to compare
    fp32 = figures.from_payload(_payload(compare_mode="absolute", relative_kind="", blocks=[{"median": 0.2}]))
    assert fp32.figure == "median" and fp32.ratio is None and fp32.components["denoiser"] == pytest.approx(0.24)


def test_a_runs_figures_carry_how_precisely_its_rounds_fixed_them():
    ratios = [1.00, 1.02, 0.98, 1.01, 0.99, 1.03, 0.97]
    quiet = figures.from_payload(_payload(relative_samples=ratios, samples=[0.3, 0.31, 0.29, 0.3]))
    scattered = figures.from_payload(_payload(relative_samples=[r**8 for r in ratios], samples=[0.3, 0.31, 0.29, 0.3]))
    assert 0 < quiet.error("ratio") < 0.02 and scattered.error("ratio") == pytest.approx(8 * quiet.error("ratio"))
    assert quiet.error("median") is not None and quiet.error("compile_seconds") is None
    fp32 = figures.from_payload(_payload(compare_mode="absolute", relative_kind="", relative_samples=ratios))
    assert fp32.error("ratio") is None  # no ratio, no error of it


def test_a_runs_picture_failures_and_bad_numbers():
    gates = [{"name": "fidelity", "passed": False, "message": "SSIM 0.5 < 0.9"}, {"name": "latency", "passed": False}]
    run = figures.from_payload(_payload(verdict={"gates": gates}, peak_memory=float("nan"), samples=[]))
    assert run.picture_failures == (("fidelity", "SSIM 0.5 < 0.9"),)  # latency: the job judges it, not the arm
    assert run.peak_memory is None


# ----------------------------------------------------------------------------- a test's decision


def _run(ratio: float, median: float, denoiser: float) -> figures.RunFigures:
    seconds = {"text encoder": 0.1, "denoiser": denoiser, "VAE decode": 0.1}
    components = {name: value * ratio / median for name, value in seconds.items()}
    return figures.RunFigures(
        "t.py::test[x]", "x", "passed", ratio=ratio, median=median, components=components, peak_memory=100
    )


def test_a_slowdown_all_in_the_denoiser_reads_at_its_true_size():
    # fp32-relative: a 1.0 s call, 0.8 s of it the denoiser; the head adds 0.29 s to the denoiser alone
    base = [_run(1.0, 1.0, 0.8), _run(1.0, 1.0, 0.8)]
    head = [_run(1.29, 1.29, 1.09), _run(1.29, 1.29, 1.09)]
    priors = {"ratio": _prior(), "median": _prior()}
    decision = decide.decide("t.py::test[x]", base, head, priors, None, LIMITS, "main @ abc", can_grow=False)
    assert decision.headline == "FAIL latency"
    message = decision.failures[0].message
    assert "1.29x slower" in message and "vs base main @ abc" in message
    assert "denoiser 1.36x slower (100% of the change)" in message, message


def test_a_test_only_in_the_head_is_new_and_strict_mode_fails_it():
    head = [_run(1.0, 1.0, 0.8)]
    new = decide.decide("t.py::test[x]", [None], head, {}, None, LIMITS, "main", can_grow=False)
    assert new.state == "new" and new.headline == decide.NEW and not new.failed
    strict = decide.Limits(**{**LIMITS.__dict__, "strict": True})
    failed = decide.decide("t.py::test[x]", [None], head, {}, None, strict, "main", can_grow=False)
    assert failed.failed and "new in head" in failed.failures[0].message


def test_head_picture_failures_and_the_picture_vs_base_gate_fail_and_report_only_passes_them():
    broken = (("broken", "NaN"),)
    head = figures.RunFigures("t.py::test[x]", "x", "failed", ratio=1.0, median=1.0, picture_failures=broken)
    base = _run(1.0, 1.0, 0.8)
    picture = judge.PictureChange(0.99, judge.picture_tolerance([1.0], 2))
    decision = decide.decide("t.py::test[x]", [base], [head], {}, picture, LIMITS, "main", can_grow=False)
    assert [g.name for g in decision.failures] == ["broken", "picture vs base"]
    assert "head run 1" in decision.failures[0].message
    lenient = decide.Limits(**{**LIMITS.__dict__, "report_only": ("picture vs base",)})
    reported = decide.decide("t.py::test[x]", [base], [head], {}, picture, lenient, "main", can_grow=False)
    assert [g.name for g in reported.failures] == ["broken"] and reported.reported == ("picture vs base",)


def test_memory_beyond_the_base_fails():
    base = _run(1.0, 1.0, 0.8)
    head = figures.RunFigures("t.py::test[x]", "x", "passed", ratio=1.0, median=1.0, peak_memory=200)
    decision = decide.decide("t.py::test[x]", [base], [head], {}, None, LIMITS, "main", can_grow=False)
    assert [g.name for g in decision.failures] == ["memory"]
    assert isinstance(decision.failures[0], Gate) and "+100.0%" in decision.failures[0].message


# ----------------------------------------------------------------------------- the arms


def test_an_arm_runs_the_command_without_the_jobs_own_options(tmp_path):
    args = ["examples", "--diffaccel-base", "origin/main", "--diffaccel-json=r.json", "--diffaccel-require-baseline",
            "-k", "fuse", "--diffaccel-save", "all", "--diffaccel-steps=2"]  # fmt: skip
    out = arms.child_args(args, tmp_path)
    assert out[:4] == ["examples", "-k", "fuse", "--diffaccel-steps=2"]
    assert f"--diffaccel-baselines={tmp_path}" in out and "-p" in out and "no:cacheprovider" in out
    head = tmp_path / "head"
    base = tmp_path / "wt"
    mapped = arms.mapped([str(head / "tests" / "t.py") + "::test", "tests", "/elsewhere"], head.resolve(), base)
    assert mapped == [str(base / "tests" / "t.py") + "::test", "tests", "/elsewhere"]


def test_a_module_from_the_forbidden_tree_is_named_and_installed_packages_are_not(tmp_path):
    tree = tmp_path / "head"
    (tree / "pkg").mkdir(parents=True)
    (tree / ".venv" / "lib" / "site-packages").mkdir(parents=True)
    modules = {
        "pkg": types.SimpleNamespace(__file__=str(tree / "pkg" / "__init__.py")),
        "torch": types.SimpleNamespace(__file__=str(tree / ".venv" / "lib" / "site-packages" / "torch.py")),
        "os": types.SimpleNamespace(__file__="/usr/lib/python3/os.py"),
    }
    assert child.violations(tree, modules) == [f"pkg ({(tree / 'pkg' / '__init__.py').resolve()})"]


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_a_missing_ref_and_a_shallow_clone_are_named_with_what_to_do(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git("init", "-q", cwd=repo)
    for n in range(2):
        (repo / "f.txt").write_text(str(n))
        _git("add", "f.txt", cwd=repo)
        _git("-c", "user.email=a@b", "-c", "user.name=t", "commit", "-qm", f"c{n}", cwd=repo)
    with pytest.raises(arms.ArmError, match="no such commit, branch or tag"):
        arms.resolve("no-such-ref", repo)
    assert len(arms.resolve("HEAD~1", repo)) == 40
    shallow = tmp_path / "shallow"
    _git("clone", "-q", "--depth", "1", f"file://{repo}", str(shallow), cwd=tmp_path)
    with pytest.raises(arms.ArmError, match="fetch-depth: 0"):
        arms.resolve("HEAD~1", shallow)
    with pytest.raises(arms.ArmError, match="not in a git repository"):
        arms.toplevel(tmp_path)


def test_a_base_interpreter_without_the_plugin_is_refused(tmp_path):
    with pytest.raises(arms.ArmError, match="no such interpreter"):
        arms.check_python(str(tmp_path / "nope" / "python"))
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    with pytest.raises(arms.ArmError, match=r"pytest does not import there .*pip install pytest"):
        arms.check_python(str(bare / "bin" / "python"))
    found = arms.check_python(sys.executable)
    assert found["pytest_diffaccel"] and found["torch"]


def test_a_history_judges_components_against_its_runs_own_components():
    """Item 6 of the base-vs-head issue, for histories: each run keeps its components on the ratio's footing,
    and a later run's breakdown is read against the newest level's, so a slowdown all in one component
    reads at its true size (the stored entry's old breakdown_relative divided one run by another's fp32)."""
    from pytest_diffaccel import breakdown, history

    old = {"text encoder": 0.1, "denoiser": 0.8, "VAE decode": 0.1}
    records = [
        {"level": 0, "ratio": 1.0, "components": {"denoiser": 5.0}},  # an older level: not compared
        {"level": 1, "ratio": 1.0, "components": old},
        {"level": 1, "ratio": 1.0, "components": {**old, "denoiser": 0.8 * 1.02}},
        {"level": 1, "ratio": 1.0},  # a run saved before runs kept their components
    ]
    stored = history.newest_components(records)
    assert stored["denoiser"] == pytest.approx(0.8 * math.sqrt(1.02))
    now = {"text encoder": 0.1, "denoiser": 0.8 * 1.36, "VAE decode": 0.1}
    text = breakdown.compare(now, stored, shares=breakdown.shares_of(now))
    assert text.startswith("denoiser 1.35x slower (100% of the change)"), text
    assert history.newest_components([{"level": 0, "ratio": 1.0}]) == {}


def test_only_the_latency_figures_buy_more_pairs():
    """A cold start 1.3x slower at one pair is open for the rule, but one-off figures are too noisy to buy runs
    with: only an open latency question asks for more pairs."""

    def run(cold: float) -> figures.RunFigures:
        return figures.RunFigures("t.py::test[x]", "x", "passed", ratio=1.0, median=1.0, cold_start_seconds=cold)

    decision = decide.decide("t.py::test[x]", [run(1.0)], [run(1.3)], {}, None, LIMITS, "main", can_grow=True)
    assert decision.comparisons["cold_start_seconds"].state == "pass" and not decision.more
    slower = [figures.RunFigures("t.py::test[x]", "x", "passed", ratio=1.08, median=1.0)]
    near = decide.decide("t.py::test[x]", [run(1.0)], slower, {"ratio": _prior(0.03)}, None, LIMITS, "m", can_grow=True)
    assert near.more


def test_an_arm_starts_from_the_environment_the_job_began_with_not_what_the_heads_conftest_set(
    monkeypatch, tmp_path
):
    # a head's conftest that sets a variable at import (the fire drill, a kernel switch) runs in the job's own
    # process too; its arms inherited it, so the base ran the head's slowdown and a real +15% read as nothing
    from pytest_diffaccel.versus import env as env_module
    from pytest_diffaccel.versus.arms import Arm, process_environment

    monkeypatch.delenv("DIFFACCEL_SLOWDOWN", raising=False)
    monkeypatch.setattr(env_module, "_started", None)
    env_module.remember_environment()  # the plugin's pytest_load_initial_conftests, before any conftest
    monkeypatch.setenv("DIFFACCEL_SLOWDOWN", "fuse-qkv=15%")  # what examples/conftest.py of the head does
    base = Arm("base", sys.executable, tmp_path, "HEAD~1")
    built = process_environment(base, 1, 2, tmp_path, tmp_path / "base-1.json", None)
    assert "DIFFACCEL_SLOWDOWN" not in built
    assert built["PYTEST_DIFFACCEL_ARM"] == "base 1/2" and built["PYTEST_DIFFACCEL_ARM_OUT"].endswith("base-1.json")
