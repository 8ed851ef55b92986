"""Run histories: the run, not the round, is the unit of noise. Pure, no torch.

A baseline entry keeps the last runs of its test (``--diffaccel-history``, default 10) as
run-level records: the run's estimate of each figure (the median paired ratio to the fp32
reference in relative mode, the median latency in seconds, compile and cold-start seconds)
and the blocks it was measured in. The rounds of one run are not independent draws of the
machine's noise (one process's median differs from the next by several percent), so the
spread a verdict needs is the spread *between runs*, read off this history.

Levels: a run saved after an accepted change (its latency verdict was a regression or a
significant improvement, and the user saved it anyway) starts a new level. The mean a new run
is judged against is the newest level's; the spread pools the deviations inside every level,
so that a change of level never inflates it.

Each test's spread is moderated toward the machine's typical spread, fitted over the tests of the
file that have a history of their own (empirical Bayes, ``stats.variance_prior``): the typical spread
counts as many runs as the tests' spreads agree (a few runs on a CPU whose techniques scatter from 1%
to 11%, up to 20 where they scatter alike), and the gate judges with Student's t on the degrees of
freedom of the moderated spread. On a new machine (fewer than three tests with a spread of their
own) the prior is an assumed fallback that counts as ``PRIOR_WEIGHT`` runs, and the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import stats

FALLBACK_SPREAD = {"ratio": 0.05, "median": 0.05, "compile_seconds": 0.20, "cold_start_seconds": 0.20}
PRIOR_WEIGHT = 4  # the assumed fallback spread counts as this many runs
MIN_OWN_DOF = 2  # a test with at least 3 runs in one level has a spread of its own
MIN_MACHINE_TESTS = 3  # tests with a spread of their own before the machine's replaces the fallback
DEFAULT_KEEP = 10

FIGURE_NAMES = {
    "ratio": "latency relative to fp32",
    "median": "latency",
    "compile_seconds": "compile time",
    "cold_start_seconds": "cold start",
}


@dataclass(frozen=True)
class Spread:
    """The run-to-run standard deviation of a figure's log, and where it comes from."""

    sigma: float
    runs: int  # this test's runs behind it
    own_dof: int  # degrees of freedom of the test's own estimate (runs minus levels)
    own: float | None  # the test's own spread, when it has one
    prior: float  # what it was moderated toward
    machine_tests: int  # tests behind the machine's spread; 0: the prior is the fallback
    prior_dof: float = PRIOR_WEIGHT  # the runs of evidence the prior is worth (inf: the spread is known)

    @property
    def assumed(self) -> bool:
        return self.own_dof == 0 and self.machine_tests == 0

    @property
    def dof(self) -> float:
        """Degrees of freedom of sigma for the gate's Student's t: the test's own and the runs its prior is
        worth (the assumed fallback too: a guess worth ``PRIOR_WEIGHT`` runs, not a known spread)."""
        return self.own_dof + self.prior_dof

    def describe(self) -> str:
        runs = f"{self.runs} run{'s' if self.runs != 1 else ''}"
        if self.assumed:
            return f"history of {runs}: spread assumed {self.sigma:.1%}"
        if self.machine_tests:
            prior = f"the machine's typical {self.prior:.1%} over {self.machine_tests} tests"
        else:
            prior = f"the assumed {self.prior:.1%}"
        own = f"this test's {runs} ({self.own:.1%})" if self.own is not None else f"history of {runs}"
        worth = f"{self.prior_dof:.1f}".removesuffix(".0")
        return (
            f"run-to-run spread {self.sigma:.1%}: {own} moderated toward {prior} (worth {worth} run"
            f"{'' if worth == '1' else 's'}; Student's t, {self.dof:.0f} dof)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "sigma": round(self.sigma, 5),
            "runs": self.runs,
            "own": None if self.own is None else round(self.own, 5),
            "prior": round(self.prior, 5),
            "machine_tests": self.machine_tests,
            "prior_dof": round(self.prior_dof, 3),
            "dof": None if math.isinf(self.dof) else round(self.dof, 3),  # inf: a spread taken as known
            "assumed": self.assumed,
            "text": self.describe(),
        }


# ----------------------------------------------------------------------------- records


def runs_of(entry: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The entry's run records, oldest first. A schema-1 entry (one run's samples, no history)
    reads as one record, so that nothing already stored is lost."""
    if not entry:
        return []
    runs = entry.get("runs")
    if isinstance(runs, list):
        return [r for r in runs if isinstance(r, dict)]
    record: dict[str, Any] = {"level": 0, "recorded": entry.get("recorded"), "blocks": []}
    if entry.get("samples"):
        record["median"] = stats.median(entry["samples"])
    if entry.get("relative_samples"):
        record["ratio"] = stats.median(entry["relative_samples"])
        record["relative_kind"] = entry.get("relative_kind")
    record["upgraded_from_schema"] = 1
    return [record]


def value(record: Mapping[str, Any], figure: str) -> float | None:
    """The record's estimate of ``figure``; None unless a finite number above zero. Stored histories are
    validated when read (validate.py); this keeps an infinite or boolean value from reaching a verdict
    whatever the path it came by (one ``inf`` in a level makes its spread NaN, and NaN judges nothing)."""
    v = record.get(figure)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        return float(v) if math.isfinite(v) and v > 0 else None
    except OverflowError:
        return None


def levels(
    records: Sequence[Mapping[str, Any]], figure: str, where: Mapping[str, Any] | None = None
) -> list[list[float]]:
    """Log values of ``figure``, grouped by level (oldest level first); records that don't match
    ``where`` (e.g. another compile-cache state) or hold no value are left out."""
    grouped: dict[int, list[float]] = {}
    for record in records:
        if where and any(record.get(k) != v for k, v in where.items()):
            continue
        v = value(record, figure)
        if v is None:
            continue
        grouped.setdefault(int(record.get("level", 0)), []).append(math.log(v))
    return [grouped[k] for k in sorted(grouped)]


def newest_level(records: Sequence[Mapping[str, Any]]) -> int:
    return max((int(r.get("level", 0)) for r in records), default=0)


def within_level(groups: Sequence[Sequence[float]]) -> tuple[float | None, int]:
    """Pooled standard deviation of the deviations from each level's mean, and its degrees of freedom."""
    squares = 0.0
    dof = 0
    for group in groups:
        if len(group) < 2:
            continue
        m = stats.mean(group)
        squares += sum((x - m) ** 2 for x in group)
        dof += len(group) - 1
    if dof == 0:
        return None, 0
    return math.sqrt(squares / dof), dof


@dataclass(frozen=True)
class Prior:
    """The machine's typical run-to-run spread of a figure, fitted over its tests (``machine_spread``)."""

    sigma: float | None  # None: too few tests with a spread of their own; the fallback applies
    dof: float  # the runs of evidence it is worth
    tests: int  # the tests behind it


NO_PRIOR = Prior(None, 0.0, 0)


def machine_spread(histories: Iterable[Sequence[Sequence[float]]]) -> Prior:
    """The machine's typical spread and its weight, fitted over the tests with a spread of their own
    (empirical Bayes, ``stats.variance_prior``: alike tests make a heavy prior, one noisy technique
    among quiet ones a light one)."""
    own = []
    for groups in histories:
        sigma, dof = within_level(groups)
        if sigma is not None and sigma > 0 and dof >= MIN_OWN_DOF:
            own.append((sigma, dof))
    if len(own) < MIN_MACHINE_TESTS:
        return Prior(None, 0.0, len(own))
    variance, prior_dof = stats.variance_prior([s * s for s, _ in own], [d for _, d in own])
    return Prior(math.sqrt(variance), prior_dof, len(own))


def spread(groups: Sequence[Sequence[float]], figure: str, machine: Prior = NO_PRIOR) -> Spread:
    """This test's run-to-run spread of ``figure``, moderated toward the machine's or the fallback:
    sigma^2 = (w * prior^2 + dof * own^2) / (w + dof), w the prior's worth in runs."""
    own, dof = within_level(groups)
    if machine.sigma is not None and machine.tests >= MIN_MACHINE_TESTS:
        prior, weight, tests = machine.sigma, machine.dof, machine.tests
    else:
        prior, weight, tests = FALLBACK_SPREAD[figure], float(PRIOR_WEIGHT), 0
    variance = (weight * prior**2 + dof * (own or 0.0) ** 2) / (weight + dof)
    return Spread(
        sigma=math.sqrt(variance),
        runs=sum(len(g) for g in groups),
        own_dof=dof,
        own=own,
        prior=prior,
        machine_tests=tests,
        prior_dof=weight,
    )


def appended(
    records: Sequence[Mapping[str, Any]], record: Mapping[str, Any], keep: int, new_level: bool
) -> list[dict[str, Any]]:
    """The history with ``record`` added (a new level when ``new_level``), the oldest dropped beyond ``keep``."""
    level = newest_level(records) + (1 if new_level and records else 0)
    history = [dict(r) for r in records] + [{**record, "level": level}]
    return history[-keep:] if keep > 0 else history


def upgraded(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A schema-1 entry in schema 2: the same fields, plus its one run as the start of a history."""
    if isinstance(entry.get("runs"), list):
        return dict(entry)
    return {**entry, "runs": runs_of(entry)}


def same_series(entry: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    """Whether a stored entry measured the same thing (call, model and its weights) as the new run."""
    return (
        entry.get("call") == fields.get("call")
        and entry.get("model") in (None, fields.get("model"))
        and entry.get("weights") in (None, fields.get("weights"))
    )


@dataclass(frozen=True)
class RunUpdate:
    """One run to fold into a stored entry: the newest run's fields replace the old ones, its record joins
    the history (a new level after an accepted change; a fresh history when the stored entry measured
    another call or model), the oldest runs dropped beyond ``keep``. Plain data, so that a shared store can
    keep it as one immutable object per saved run and fold the objects into the same entries later."""

    fields: Mapping[str, Any]
    record: Mapping[str, Any]
    keep: int
    new_level: bool

    def __call__(self, existing: Mapping[str, Any] | None) -> dict[str, Any]:
        runs = runs_of(existing) if existing and same_series(existing, self.fields) else []
        return {**self.fields, "runs": appended(runs, self.record, self.keep, self.new_level)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "fields": dict(self.fields),
            "record": dict(self.record),
            "keep": self.keep,
            "new_level": self.new_level,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunUpdate:
        return cls(dict(data["fields"]), dict(data["record"]), int(data["keep"]), bool(data["new_level"]))


def merger(fields: Mapping[str, Any], record: Mapping[str, Any], keep: int, new_level: bool) -> RunUpdate:
    """How to fold a new run into a stored entry (see RunUpdate)."""
    return RunUpdate(fields, record, keep, new_level)


def newest_components(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The geometric mean of each component over the newest level's runs that kept them (Result.components),
    empty when none did (a history recorded before runs kept their components)."""
    level = newest_level(records)
    logs: dict[str, list[float]] = {}
    for record in records:
        components = record.get("components")
        if int(record.get("level", 0)) != level or not isinstance(components, Mapping):
            continue
        for name, v in components.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf:
                logs.setdefault(str(name), []).append(math.log(v))
    return {name: math.exp(stats.mean(values)) for name, values in logs.items()}
