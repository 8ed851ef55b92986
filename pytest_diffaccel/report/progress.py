"""Live progress while a technique warms up, compiles and is timed.

On a terminal the status is drawn at the end of the current test line and redrawn in place
every second (``[bf16+compile] compiling (call 1) 42 s``, ``rounds 7/8+``), then erased, so
pytest's own output stays as it was. Off a terminal (CI logs) nothing is drawn live; under
``-q`` nothing at all. The phases' times land in the reports either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class LiveStatus:
    """A status suffix redrawn in place with backspaces; ``close()`` erases it."""

    def __init__(self, write: Callable[[str], None], label: str, tick: float = 1.0) -> None:
        self.write = write
        self.label = label
        self.tick = tick
        self.text = ""
        self.phase = ""
        self.phase_started = time.monotonic()
        self.shown = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, text: str) -> None:
        phase = text.split(" ")[0]
        with self._lock:
            if phase != self.phase:
                self.phase = phase
                self.phase_started = time.monotonic()
            self.text = text
            self._draw()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            with self._lock:
                self._draw()

    def _draw(self) -> None:
        elapsed = time.monotonic() - self.phase_started
        status = f" [{self.label}] {self.text} {elapsed:.0f} s"
        pad = max(0, self.shown - len(status))
        self.write("\b" * self.shown + status + " " * pad + "\b" * pad)
        self.shown = len(status)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self.shown:
                self.write("\b" * self.shown + " " * self.shown + "\b" * self.shown)
                self.shown = 0


class Silent:
    def __call__(self, text: str) -> None:
        return None

    def close(self) -> None:
        return None


def progress_for(config: Any, node: Any, label: str | None = None) -> LiveStatus | Silent:
    """A live status for this test where the terminal can show one, else a function that does nothing."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or config.get_verbosity() < 0 or not getattr(reporter, "isatty", False):
        return Silent()
    writer = reporter._tw  # the terminal writer pytest writes test lines with

    def write(text: str) -> None:
        if capture is not None:
            with capture.global_and_fixture_disabled():
                writer.write(text, flush=True)
        else:
            writer.write(text, flush=True)

    status = LiveStatus(write, label or node.name)
    node.addfinalizer(status.close)  # in case the measurement raised before closing it
    return status
