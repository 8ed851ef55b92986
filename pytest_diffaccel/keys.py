"""Names the plugin's hooks and items share: the stash keys and the fixtures that make a test a diffaccel test.

Its own module so that plugin.py and search_item.py both import it and neither imports the other.
pytest only.
"""

from __future__ import annotations

from typing import Any

import pytest

HOLDER = pytest.StashKey[Any]()  # holder.Holder: the settings of every run, the session once used
STATE = pytest.StashKey[Any]()  # session.DiffaccelSession, set on first use (holder.Holder.session)
RESULTS = pytest.StashKey[Any]()  # Benchmark of a test item
APPLIED = pytest.StashKey[Any]()  # ApplyContext of a test item
PIPELINE = pytest.StashKey[Any]()  # (pipeline, seconds to make it) of diffaccel_pipeline
JOB = pytest.StashKey[Any]()  # versus.job.Job of a base-vs-head session (--diffaccel-base)
FIXTURES = frozenset({"diffaccel_pipeline", "diffaccel_technique", "diffaccel_reference", "diffaccel_benchmark"})
