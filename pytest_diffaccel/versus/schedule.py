"""The order of the arms' runs in a base-vs-head job: balanced and randomised. Pure.

Runs come in pairs, one run of each arm. Within each two pairs the arms take turns to go first
(A B B A, or B A A B), so that a machine that warms up, cools down or gets a neighbour during the
job weighs on both arms alike; which arm opens each two pairs is drawn at random (seeded, so a
job's order can be reproduced from its seed), as Pinpoint orders its A/B attempts.
"""

from __future__ import annotations

import random

BASE = "base"
HEAD = "head"


def order(pairs: int, seed: int, first_pair: int = 1) -> list[tuple[int, str]]:
    """(pair number, arm) for ``pairs`` pairs numbered from ``first_pair``, in the order to run them."""
    if pairs < 0:
        raise ValueError("pairs must be >= 0")
    draw = random.Random(seed * 1_000_003 + first_pair)
    runs: list[tuple[int, str]] = []
    opener = (BASE, HEAD)
    for index in range(pairs):
        number = first_pair + index
        if index % 2 == 0:
            opener = (BASE, HEAD) if draw.random() < 0.5 else (HEAD, BASE)
            arms = opener
        else:
            arms = (opener[1], opener[0])  # the mirror of the pair before: each arm opens once in two pairs
        runs += [(number, arms[0]), (number, arms[1])]
    return runs
