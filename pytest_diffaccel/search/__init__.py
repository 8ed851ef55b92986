"""``--diffaccel-search``: a budgeted search for the fastest recipe that keeps the picture.

* space.py: the choice groups and the candidates (``candidates(registry, environment, space)``);
* engine.py: the search (``search(registry, environment, measure, config, space)``): screen,
  coordinate ascent, pruning, successive halving, within a budget;
* result.py: ``CandidateMeasurement``, ``Trial``, ``SearchResult`` (``as_dict()``, ``lines()``);
* real.py: the real measurement on the session's model and the plugin's one call, ``run_search``.

No torch import at module level.
"""

from __future__ import annotations

from .cost import CostModel
from .engine import MeasureFn, Search, SearchConfig, lossy_parts, picture_gate, search
from .real import EffectHook, RealMeasure, config_for, effects_hook, real_measure, run_search
from .result import CandidateMeasurement, SearchResult, Trial, failed, faster, pareto, rank
from .space import Choice, Option, candidates, choices, compose, iter_candidates, selected, spec_text

__all__ = [
    "CandidateMeasurement",
    "Choice",
    "CostModel",
    "EffectHook",
    "MeasureFn",
    "Option",
    "RealMeasure",
    "Search",
    "SearchConfig",
    "SearchResult",
    "Trial",
    "candidates",
    "choices",
    "compose",
    "config_for",
    "effects_hook",
    "failed",
    "faster",
    "iter_candidates",
    "lossy_parts",
    "pareto",
    "picture_gate",
    "rank",
    "real_measure",
    "run_search",
    "search",
    "selected",
    "spec_text",
]
