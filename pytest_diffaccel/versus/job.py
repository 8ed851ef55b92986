"""The conductor of a base-vs-head job: prepare the arms, run the pairs, decide, give more pairs to the undecided.

1. Before any timing (``prepare``): the base's commit and worktree, or its interpreter, checked;
   one collection of the base arm (``--collect-only``): a base that does not import, whose conftest
   fails, or that would run the head's code is a usage error (exit 4), and nothing is left behind.
2. ``--diffaccel-base-runs`` pairs (default 3), in balanced random order (schedule.py), every run a
   fresh process with the whole selection.
3. Each test decided (decide.py). A test not decided yet gets more pairs, and only such a test: two
   at a time (one balanced A B B A unit), with only the undecided tests selected, up to
   ``MAX_PAIRS_FACTOR`` times the pairs it started with; still open at the cap, it is *undecided*.
4. A run that crashes stops the job: the message names the arm, the run and the test it died in;
   no verdict is given on partial data.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..calibration import duration
from . import arms as arms_module
from .arms import Arm, ArmError, ArmRun
from .decide import Arms, Decision, Limits, decide, priors_of
from .figures import RunFigures
from .judge import MAX_PAIRS_FACTOR, PictureChange, picture_tolerance
from .schedule import BASE, HEAD, order

GROWTH = 2  # pairs added at a time for the undecided: one balanced unit


class ArmCrashed(Exception):
    """A run of an arm died: no verdict on partial data."""

    def __init__(self, message: str, arm: str) -> None:
        super().__init__(message)
        self.arm = arm


@dataclass
class Job:
    """One base-vs-head job of a pytest session."""

    base: Arm
    head: Arm
    base_args: list[str]
    head_args: list[str]
    folder: Path
    pairs: int
    limits: Limits
    memory_slack: int = 0
    seed: int = field(default_factory=lambda: random.SystemRandom().randrange(1, 100_000))
    worktree: tuple[Path, Path] | None = None  # (the repository's top, the worktree) to remove at the end
    runs: list[ArmRun] = field(default_factory=list)
    decisions: dict[str, Decision] = field(default_factory=dict)
    gone: list[str] = field(default_factory=list)  # tests in the base only
    seconds: float | None = None
    test_seconds: float = 0.0  # the runs' own test sessions (their pytest summaries), summed
    pairs_done: dict[str, int] = field(default_factory=dict)  # test -> pairs it was measured in
    order: list[str] = field(default_factory=list)  # the head session's tests, in its order

    # ------------------------------------------------------------------ running

    def run(self, tests: Sequence[str], say: Callable[[str], None]) -> None:
        """Every pair, more for the undecided, then the decisions."""
        started = time.perf_counter()
        say(
            f"base-vs-head job: {_pairs(self.pairs)} of runs, base {self.base.label} vs head {self.head.label}, "
            f"one fresh process each, interleaved in balanced random order (seed {self.seed})"
        )
        self._pairs(order(self.pairs, self.seed), None, say)
        cap = self.pairs * MAX_PAIRS_FACTOR
        done = self.pairs
        self._decide(tests, can_grow=done < cap)
        while done < cap:
            open_tests = sorted(t for t, d in self.decisions.items() if d.more)
            if not open_tests:
                break
            say(f"{len(open_tests)} test(s) not decided after {_pairs(done)}: {GROWTH} more pairs for them only")
            self._pairs(order(GROWTH, self.seed, first_pair=done + 1), open_tests, say)
            done += GROWTH
            self._decide(tests, can_grow=done < cap)
        self.seconds = time.perf_counter() - started

    def _pairs(self, runs: list[tuple[int, str]], only: Sequence[str] | None, say: Callable[[str], None]) -> None:
        total = max(number for number, _ in runs) if runs else 0
        for number, name in runs:
            arm = self.base if name == BASE else self.head
            args = self.base_args if name == BASE else self.head_args
            say(f"{name} run {number}/{total} in a fresh process ...")
            result = arms_module.run(arm, number, total, args, self.folder, only, say)
            self.runs.append(result)
            self.test_seconds += result.session_seconds or 0.0
            say(result.line(total))
            self._check(result, arm)

    def _check(self, result: ArmRun, arm: Arm) -> None:
        if result.violations:
            raise ArmCrashed(
                f"the {arm.name} arm ran code from the head's tree ({', '.join(result.violations[:3])}): it would "
                "compare the head with itself; install the project non-editable, or let the plugin put the base's "
                "worktree first on the import path (do not set PYTHONPATH to the head)",
                arm.name,
            )
        if result.crashed:
            where = f" in {result.crashed_in}" if result.crashed_in else ""
            tail = result.tail.splitlines()[-1] if result.tail else "no output"
            raise ArmCrashed(
                f"the {arm.name} arm's run {result.number} died{where} (exit status {result.status}"
                f"{', no results written' if not result.wrote else ''}): {tail}; no verdict is given on partial data",
                arm.name,
            )

    # ------------------------------------------------------------------ deciding

    def arms_of(self, test_id: str) -> Arms:
        """The test's runs in each arm, one per pair (None where the pair's run did not measure it)."""
        numbers = sorted({r.number for r in self.runs})
        base = {r.number: r.figures.get(test_id) for r in self.runs if r.arm == BASE}
        head = {r.number: r.figures.get(test_id) for r in self.runs if r.arm == HEAD}
        kept = [n for n in numbers if base.get(n) is not None or head.get(n) is not None]
        return [base.get(n) for n in kept], [head.get(n) for n in kept]

    def _decide(self, tests: Sequence[str], can_grow: bool) -> None:
        ids = self.result_ids(tests)
        runs = {t: self.arms_of(t) for t in ids}
        priors = priors_of(runs)
        for test_id in ids:
            base, head = runs[test_id]
            self.pairs_done[test_id] = sum(1 for b, h in zip(base, head, strict=True) if b and h)
            self.decisions[test_id] = decide(
                test_id,
                base,
                head,
                priors,
                self.picture(base, head),
                self.limits,
                self.base.label,
                can_grow,
                self.pairs * MAX_PAIRS_FACTOR,
            )
        in_base = {t for r in self.runs if r.arm == BASE for t in r.figures}
        self.gone = sorted(t for t in in_base if t not in set(ids) and t.split("#")[0] not in set(tests))

    def result_ids(self, tests: Sequence[str]) -> list[str]:
        """The ids of the results of the session's tests (a test calling the benchmark twice has 'id#2')."""
        wanted = set(tests)
        found = {t for r in self.runs for t in r.figures if t.split("#")[0] in wanted}
        missing = [t for t in tests if not any(f.split("#")[0] == t for f in found)]
        return sorted(found) + missing

    def picture(self, base: Sequence[RunFigures | None], head: Sequence[RunFigures | None]) -> PictureChange | None:
        """The head's pictures against the base's of the same seed, with the tolerance the base's runs measured."""
        from .pictures import between, worst_against

        base_pictures = [b for b in base if b is not None and b.thumbnail]
        head_pictures = [h for h in head if h is not None and h.thumbnail]
        if not base_pictures or not head_pictures:
            return None
        ssim = worst_against(head_pictures, base_pictures)
        if ssim is None:
            return None
        return PictureChange(ssim, picture_tolerance(between(base_pictures), len(base_pictures)))

    # ------------------------------------------------------------------ the end

    def cleanup(self) -> None:
        if self.worktree is not None:
            arms_module.remove_worktree(*self.worktree)
            self.worktree = None
        shutil.rmtree(self.folder, ignore_errors=True)

    def summary_line(self) -> str:
        grown = [v for v in self.pairs_done.values() if v > self.pairs]
        more = ""
        if grown:
            tests = f"{len(grown)} test{'s' if len(grown) != 1 else ''}"
            more = f" ({max(grown)} for {tests} not decided at {self.pairs})"
        runs = len(self.runs)
        overhead = ""
        if self.seconds:
            overhead = (
                f"; {runs} runs in {duration(self.seconds)}, their own test sessions {duration(self.test_seconds)}"
            )
        return (
            f"vs base {self.base.label}, {_pairs(self.pairs)}{more}, interleaved in this job (order seed {self.seed})"
            f"{overhead}"
        )


def _pairs(count: int) -> str:
    return f"{count} pair{'s' if count != 1 else ''}"


def prepare(
    settings: Any, invocation_dir: Path, args: Sequence[str], python: str, limits: Limits, say: Callable[[str], None]
) -> Job:
    """The job's arms, checked before any timing: ArmError (a usage error) when the base can't be measured."""
    folder = arms_module.job_folder()
    worktree: tuple[Path, Path] | None = None
    try:
        no_history = folder / "no-history"
        no_history.mkdir()
        head_args = arms_module.child_args(args, no_history)
        head = Arm(HEAD, python, invocation_dir, "the working tree")
        base_python = python
        python_label = ""
        if settings.base_python:
            found = arms_module.check_python(settings.base_python)
            base_python = settings.base_python
            torch = f", torch {found.get('torch')}" if found.get("torch") else ""
            python_label = f"python {settings.base_python}{torch}"
        if settings.base:
            top = arms_module.toplevel(invocation_dir)
            sha = arms_module.resolve(settings.base, top)
            tree = arms_module.make_worktree(top, sha, folder)
            worktree = (top, tree)
            try:
                relative = invocation_dir.resolve().relative_to(top)
            except ValueError:
                raise ArmError(
                    f"--diffaccel-base: pytest runs in {invocation_dir}, outside the repository {top}; "
                    "run it from inside the repository"
                ) from None
            label = f"{settings.base} @ {sha[:7]}" + (f" with {python_label}" if python_label else "")
            base = Arm(
                BASE,
                base_python,
                tree / relative,
                label,
                env={"PYTHONPATH": os.pathsep.join(arms_module.import_path(tree))},
                forbid=top,
            )
            base_args = arms_module.mapped(head_args, top, tree)
        else:
            base = Arm(BASE, base_python, invocation_dir, python_label)
            base_args = list(head_args)
        job = Job(base, head, base_args, head_args, folder, settings.base_runs, limits, worktree=worktree)
        _collect_base(job, say)
        return job
    except BaseException:
        if worktree is not None:
            arms_module.remove_worktree(*worktree)
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _collect_base(job: Job, say: Callable[[str], None]) -> None:
    """One collection of the base arm: it imports, its conftest runs, its code is its own."""
    say(f"checking the base ({job.base.label}): collecting its tests ...")
    result = arms_module.run(job.base, 0, 0, job.base_args, job.folder, None, say, collect_only=True)
    tail = result.tail.strip().splitlines()
    if result.violations:
        raise ArmError(
            f"--diffaccel-base: the base arm would run the head's code ({', '.join(result.violations[:3])}): "
            "the project is importable from the head's tree ahead of the base's worktree; install it "
            "non-editable or unset PYTHONPATH"
        )
    if result.status in (0, 5) and result.wrote:
        return
    not_found = any("file or directory not found" in line or "not found:" in line for line in tail)
    if result.status == 4 and not_found:
        return  # the selection is new in the head: every test is 'new in head'
    detail = "; ".join(line.strip() for line in tail[-4:]) or "no output"
    raise ArmError(
        f"--diffaccel-base: the base ({job.base.label}) does not collect (exit status {result.status}): {detail}"
    )
