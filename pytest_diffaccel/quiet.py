"""Library noise a user can't act on, filtered narrowly; every other warning, ours included, stays.

Each entry names the library, the logger or warning category, and the start of the message:
a filter matches that message only, so a new warning of the same library still shows.
* numpy 2 asks diffusers' Euler scheduler for a ``copy`` keyword on every call
  (``DeprecationWarning: __array__ implementation doesn't accept a copy keyword``);
* torch's own ``torch.utils.mkldnn`` defines its classes with ``torch.jit.script_method``, which torch
  2.13 deprecates: 14 warnings whenever something imports ``torch._inductor`` (bitsandbytes does, at
  its import, which diffusers' quantizers import with the pipeline);
* transformers notes once per class that an image processor falls back to PIL without
  torchvision (diffusers pipelines import CLIP/Siglip image processors we never use);
* diffusers' torchao quantizer can't import tensor classes of older torchao versions (loading
  torchao-serialized checkpoints only, which we never do);
* torch's pytree logs that torchao registers Enum constants it no longer needs.
"""

from __future__ import annotations

import logging
import warnings

import pytest

WARNINGS = (  # (the start of the message, a regular expression; its category)
    (r"__array__ implementation doesn't accept a copy keyword", DeprecationWarning),
    (r"`torch.jit.script_method` is deprecated", DeprecationWarning),
)
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
    for message, category in WARNINGS:
        # for every test phase from now on (pytest applies its ini filters per phase), and for the phase
        # running now: the model is loaded while pytest collects, and bitsandbytes' import compiles
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{category.__name__}")
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, (starts, contains) in LOG_MESSAGES.items():
        if name not in _installed:
            _installed[name] = _Drop(starts, contains)
            logging.getLogger(name).addFilter(_installed[name])
