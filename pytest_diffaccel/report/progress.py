"""Live progress while a technique warms up, compiles and is timed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def progress_for(config: Any, node: Any) -> Callable[[str], None]:
    """A callable that receives phase texts ('compiling (call 1)', 'rounds 3/8+'); silent for now."""

    def say(text: str) -> None:
        return None

    return say
