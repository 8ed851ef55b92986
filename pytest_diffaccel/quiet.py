"""Library noise a user can't act on, filtered narrowly; every other warning, ours included, stays.

Each entry names the library, the logger or warning category, and the start of the message:
a filter matches that message only, so a new warning of the same library still shows.
* numpy 2 asks diffusers' Euler scheduler for a ``copy`` keyword on every call
  (``DeprecationWarning: __array__ implementation doesn't accept a copy keyword``);
* transformers notes once per class that an image processor falls back to PIL without
  torchvision (diffusers pipelines import CLIP/Siglip image processors we never use);
* diffusers' torchao quantizer can't import tensor classes of older torchao versions (loading
  torchao-serialized checkpoints only, which we never do);
* torch's pytree logs that torchao registers Enum constants it no longer needs.
"""

from __future__ import annotations

import logging

import pytest

WARNINGS = (r"ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning",)
LOG_MESSAGES = {
    "transformers.utils.import_utils": ("`", "requires torchvision (not installed); falling back to"),
    "diffusers.quantizers.torchao.torchao_quantizer": ("Unable to import `torchao` Tensor objects", ""),
    "torch.utils._pytree": ("", "is an Enum subclass and is now natively supported by torch.compile"),
}


class _Drop(logging.Filter):
    def __init__(self, starts: str, contains: str) -> None:
        super().__init__()
        self.starts = starts
        self.contains = contains

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not (text.startswith(self.starts) and self.contains in text)


_installed: dict[str, _Drop] = {}


def install(config: pytest.Config) -> None:
    """Filter the known library noise for this session (no library is imported to do so)."""
    for line in WARNINGS:
        config.addinivalue_line("filterwarnings", line)
    for name, (starts, contains) in LOG_MESSAGES.items():
        if name not in _installed:
            _installed[name] = _Drop(starts, contains)
            logging.getLogger(name).addFilter(_installed[name])
