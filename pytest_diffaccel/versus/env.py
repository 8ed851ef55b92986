"""The environment variables between a base-vs-head job and its arms' processes. Standard library only:
the plugin imports this module in every run to know whether it is an arm."""

from __future__ import annotations

import os

ARM_ENV = "PYTEST_DIFFACCEL_ARM"  # "base 2/4": an arm's process, which arm and which run
OUT_ENV = "PYTEST_DIFFACCEL_ARM_OUT"  # the file an arm's process writes its results to
ONLY_ENV = "PYTEST_DIFFACCEL_ARM_ONLY"  # JSON list of the test ids to run (more pairs for the undecided)
FORBID_ENV = "PYTEST_DIFFACCEL_ARM_FORBID"  # a folder no module of the arm may come from (the head's tree)


def in_arm() -> bool:
    """Whether this process is a run of an arm (it measures; the job that started it judges)."""
    return bool(os.environ.get(ARM_ENV))
