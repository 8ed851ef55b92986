"""The pytest items of a base-vs-head job: one per test of the head's selection, carrying its decision.

The controller measures nothing itself: the arms' processes do (job.py). Each diffaccel test of the
selection is replaced by an item with the same id, so that ``-v``, ``-k``, JUnit XML and the exit
status read as in a plain run: it passes, fails with its gates' messages, or skips as the head's
runs skipped it.
"""

from __future__ import annotations

from typing import Any

import pytest

from ..keys import FIXTURES
from .decide import NEW


class VersusItem(pytest.Item):
    def __init__(self, *, job: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job

    def runtest(self) -> None:
        decisions = [d for t, d in sorted(self.job.decisions.items()) if t.split("#")[0] == self.nodeid]
        if not decisions:
            pytest.fail("the base-vs-head job measured nothing for this test (no run of the head gave a result)")
        if all(d.state == "skipped" for d in decisions):
            pytest.skip(decisions[0].reason or "skipped in the head's runs")
        failing = [d for d in decisions if d.failed]
        if failing:
            pytest.fail("\n\n".join(d.message() for d in failing), pytrace=False)
        if all(d.state == "new" for d in decisions):
            self.user_properties.append(("diffaccel_verdict", NEW))

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.name


def replace_items(config: pytest.Config, items: list[pytest.Item], job: Any) -> list[str]:
    """Every diffaccel test replaced, in place, by its VersusItem; returns their ids."""
    replaced = []
    for index, item in enumerate(items):
        if not FIXTURES & set(getattr(item, "fixturenames", ())):
            continue
        parent = item.parent
        assert parent is not None
        new = VersusItem.from_parent(parent, name=item.name, job=job)
        new.own_markers.extend(item.own_markers)  # the parent's markers come with the parent
        items[index] = new
        replaced.append(new.nodeid)
    return replaced
