"""``--diffaccel-base``: the base and the head measured in the same job, on the same machine.

A stored history judges a run only on the hardware that recorded it. A pull request lands on a
runner nobody chose (a hosted CPU of another generation, an autoscaled GPU node), where a history
has nothing to say. The answer of asv's ``continuous``, Chromium's Pinpoint and duet benchmarking:
measure both versions in the same job, alternating their runs (A B B A ...) so that the machine's
drift falls on both alike, and judge the head against the base pair by pair.

Rooms, each importing only downward:
- ``schedule``: the order of the arms' runs (pure);
- ``judge``: paired statistics and the picture tolerance (pure, no torch, no numpy at import);
- ``figures``: one run's figures of one test, read from a child's result payload (pure);
- ``arms``: the two arms as processes: the base's git worktree or interpreter, one fresh pytest
  process per run, the check that the base arm really ran the base's code;
- ``child``: what the plugin does inside an arm's process (select the tests asked for, write results);
- ``job``: the conductor: the schedule, more pairs for the undecided, the decisions;
- ``item``: the pytest items that carry each test's decision; ``table``: the terminal's side-by-side table.
The plugin (plugin.py) imports this package lazily, only when ``--diffaccel-base`` or
``--diffaccel-base-python`` is given or inside an arm's process.
"""
