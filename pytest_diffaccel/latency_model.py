"""The latency gate simulated on its own model: how often a matrix fails, clean or slowed. Pure, no torch.

A rate of 2 false alarms in 100 runs of a matrix can't be counted on a real machine in hours (about
150 clean runs of the whole matrix would be needed), so the tests, ``benchmarks/verdict_quality.py``
and ``benchmarks/latency_calibration.py`` feed run-to-run spreads to the gate's own code instead:
each technique gets a history of ``history_runs`` runs, each test's spread is estimated from those
histories exactly as a baseline file's tests are (its own runs moderated toward the machine's prior
fitted over all of them: ``plugin_spreads``), and each run measures blocks that share most of their
run's noise (its process, the machine's state of the moment) until ``latency.judge`` stops asking
for another. Normal on the log scale, as the gate assumes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import history, latency

SHARED = 0.9  # the share of the run-to-run variance that a run's blocks share


@dataclass(frozen=True)
class Rule:
    """The gate's settings (the plugin's defaults)."""

    max_slowdown: float = 0.10
    alpha: float = 0.0005
    max_blocks: int = 3


DEFAULTS = Rule()

Estimator = Callable[[Sequence[Sequence[float]]], list[history.Spread]]  # the histories -> each test's spread


def plugin_spreads(histories: Sequence[Sequence[float]]) -> list[history.Spread]:
    """Each test's spread as the plugin estimates it: its own history (one level) moderated toward the
    machine's prior fitted over all of them."""
    machine = history.machine_spread([[runs] for runs in histories])
    return [history.spread([runs], "ratio", machine) for runs in histories]


def run_fails(
    rng: random.Random,
    sigma: float,
    runs: Sequence[float],
    spread: history.Spread,
    *,
    true_ratio: float = 1.0,
    shared: float = SHARED,
    rule: Rule = DEFAULTS,
) -> bool:
    """One run of a technique ``true_ratio`` slower than its history, whose runs scatter with ``sigma`` (log),
    judged against ``runs``: whether the latency gate fails it."""
    offset = math.log(true_ratio) + rng.gauss(0.0, sigma * math.sqrt(shared))
    own = sigma * math.sqrt(1.0 - shared)
    blocks: list[float] = []
    while True:
        blocks.append(offset + rng.gauss(0.0, own))
        judged = latency.judge(
            blocks, runs, spread, max_slowdown=rule.max_slowdown, alpha=rule.alpha, max_blocks=rule.max_blocks
        )
        if judged.state != "another":
            return judged.regression


def matrix_false_alarm(
    spreads: Sequence[float],
    history_runs: int,
    *,
    matrix_runs: int = 2000,
    seed: int = 0,
    estimator: Estimator = plugin_spreads,
) -> float:
    """The share of clean runs of a matrix (one technique per spread) that fail any latency gate, each
    technique judged against a fresh history of ``history_runs`` runs."""
    return matrix_outcomes(spreads, history_runs, matrix_runs=matrix_runs, seed=seed, estimator=estimator)[0]


def detection_rate(
    spreads: Sequence[float],
    slowed: int,
    true_ratio: float,
    history_runs: int,
    *,
    matrix_runs: int = 2000,
    seed: int = 0,
    estimator: Estimator = plugin_spreads,
) -> float:
    """The share of runs of the matrix in which the technique ``spreads[slowed]``, ``true_ratio`` slower than
    its history, fails the latency gate (the others clean)."""
    outcomes = matrix_outcomes(
        spreads,
        history_runs,
        slowed=slowed,
        true_ratio=true_ratio,
        matrix_runs=matrix_runs,
        seed=seed,
        estimator=estimator,
    )
    return outcomes[1]


def matrix_outcomes(
    spreads: Sequence[float],
    history_runs: int,
    *,
    slowed: int | None = None,
    true_ratio: float = 1.0,
    matrix_runs: int = 2000,
    seed: int = 0,
    shared: float = SHARED,
    rule: Rule = DEFAULTS,
    estimator: Estimator = plugin_spreads,
) -> tuple[float, float]:
    """(the share of matrix runs in which a clean technique failed, the share in which ``slowed`` failed)."""
    rng = random.Random(seed)
    false_alarms = caught = 0
    for _ in range(matrix_runs):
        histories = [[rng.gauss(0.0, sigma) for _ in range(history_runs)] for sigma in spreads]
        failed = False
        for index, (sigma, runs, spread) in enumerate(zip(spreads, histories, estimator(histories), strict=True)):
            ratio = true_ratio if index == slowed else 1.0
            fails = run_fails(rng, sigma, runs, spread, true_ratio=ratio, shared=shared, rule=rule)
            if index == slowed:
                caught += fails
            else:
                failed = failed or fails
        false_alarms += failed
    return false_alarms / matrix_runs, caught / matrix_runs
