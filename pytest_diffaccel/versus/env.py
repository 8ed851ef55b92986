"""The environment variables between a base-vs-head job and its arms' processes. Standard library only:
the plugin imports this module in every run to know whether it is an arm."""

from __future__ import annotations

import os

ARM_ENV = "PYTEST_DIFFACCEL_ARM"  # "base 2/4": an arm's process, which arm and which run
OUT_ENV = "PYTEST_DIFFACCEL_ARM_OUT"  # the file an arm's process writes its results to
ONLY_ENV = "PYTEST_DIFFACCEL_ARM_ONLY"  # JSON list of the test ids to run (more pairs for the undecided)
FORBID_ENV = "PYTEST_DIFFACCEL_ARM_FORBID"  # a folder no module of the arm may come from (the head's tree)


_started: dict[str, str] | None = None


def remember_environment() -> None:
    """Keep the environment as the pytest process had it before any conftest ran (the plugin's
    ``pytest_load_initial_conftests``): a conftest of the head that sets a variable at import (a drill, a
    kernel switch) is the head's code, and must not leak into the base arm's processes."""
    global _started
    _started = dict(os.environ)


def started_environment() -> dict[str, str]:
    """The environment an arm's process starts from: as the job's pytest process began, else as it is."""
    return dict(_started if _started is not None else os.environ)


def in_arm() -> bool:
    """Whether this process is a run of an arm (it measures; the job that started it judges)."""
    return bool(os.environ.get(ARM_ENV))
