"""Library noise a user can't act on is filtered, narrowly: our own and other warnings still show."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from pytest_diffaccel import quiet


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_known_library_log_lines_are_dropped_and_others_kept():
    quiet.install(SimpleNamespace(addinivalue_line=lambda *args: None))
    kept = Kept()
    names = ("torch.utils._pytree", "transformers.utils.import_utils", "diffusers.quantizers.torchao.torchao_quantizer")
    for name in names:
        logging.getLogger(name).addHandler(kept)
    try:
        logging.getLogger("torch.utils._pytree").warning(
            "%s is an Enum subclass and is now natively supported by torch.compile as an opaque value type.", "X"
        )
        logging.getLogger("transformers.utils.import_utils").warning(
            "`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil`"
        )
        logging.getLogger("diffusers.quantizers.torchao.torchao_quantizer").warning(
            "Unable to import `torchao` Tensor objects. This may affect loading checkpoints serialized with `torchao`"
        )
        logging.getLogger("torch.utils._pytree").warning("something else entirely")
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(kept)
    assert kept.messages == ["something else entirely"]


def test_a_run_shows_no_scheduler_noise_but_keeps_other_warnings(user_suite: pytest.Pytester):
    user_suite.makepyfile(
        test_mine="""
import warnings

def test_warns():
    warnings.warn("a deprecation of our own", DeprecationWarning)
"""
    )
    # a fresh process: torch's jit deprecation comes with the first import of torch._inductor (bitsandbytes
    # compiles at its import, while pytest collects and the model loads), long done in this process
    fast = ("--diffaccel-rounds=6", "--diffaccel-max-rounds=6", "--diffaccel-steps=2", "--diffaccel-fidelity-seeds=1")
    result = user_suite.runpytest_subprocess(*fast, "-p", "no:cacheprovider", "--diffaccel-techniques", "fp32")
    result.assert_outcomes(passed=2)
    text = result.stdout.str()
    assert "a deprecation of our own" in text
    assert "__array__ implementation doesn't accept a copy keyword" not in text
    assert "torch.jit.script_method" not in text  # torch's deprecation inside its own mkldnn module
