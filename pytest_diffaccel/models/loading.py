"""Loading: each model is read once per session; every test gets a fresh copy of it.

* presets, local folders and hub ids are loaded once with the real ``from_pretrained`` code
  (fp32, on the CPU, safetensors only), and each test gets a deep copy moved to its device
  and dtype, so that no technique can leak into the next test or into the reference;
* full-size architecture presets have no weights to load: each test builds them on its
  device from the published config with deterministic random weights.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from ..techniques.components import quiet_casts
from . import ModelError, ModelInfo


def quiet_progress_bars() -> None:
    """No 'Loading pipeline components' bars in the middle of a test report."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


class ModelSource:
    """Hands out fresh pipelines of one model."""

    def __init__(self, info: ModelInfo, allow_pickle: bool = False) -> None:
        self.info = info
        self.allow_pickle = allow_pickle
        self._base: Any = None

    def fresh(self, device: str, dtype_name: str = "float32") -> Any:
        """A new pipeline on ``device`` in ``dtype_name``, independent of every other one."""
        import torch

        dtype = getattr(torch, dtype_name)
        if self.info.kind == "arch":
            from . import arch

            assert self.info.arch is not None
            pipe = arch.build(self.info.arch, device=device, dtype=dtype)
        else:
            pipe = copy.deepcopy(self.base())
            with quiet_casts():
                pipe.to(device=device, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def base(self) -> Any:
        """The pipeline as loaded (fp32, CPU); loaded on first use, never modified."""
        if self._base is None:
            self._base = self._load()
        return self._base

    def family(self) -> str:
        if self.info.family:
            return self.info.family
        from ..techniques.components import denoiser_name

        return denoiser_name(self.base())  # "unet" or "transformer"

    def _load(self) -> Any:
        import diffusers
        import torch

        info = self.info
        pipeline_class = getattr(diffusers, info.pipeline_class or "DiffusionPipeline", diffusers.DiffusionPipeline)
        source = str(info.path) if info.path is not None else info.name
        kwargs: dict[str, Any] = {"torch_dtype": torch.float32}
        if not self.allow_pickle:
            kwargs["use_safetensors"] = True
        if info.kind == "preset" or info.kind == "folder" or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
            kwargs["local_files_only"] = True
        if (
            getattr(pipeline_class, "_optional_components", None)
            and "safety_checker" in pipeline_class._optional_components
        ):
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        quiet_progress_bars()
        try:
            pipe = pipeline_class.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            hint = ""
            if "safetensors" in str(error).lower() and not self.allow_pickle:
                hint = (
                    "; its weights may be pickle files only: convert them to safetensors "
                    "or pass --diffaccel-allow-pickle"
                )
            elif info.kind == "hub":
                hint = "; is it in the Hugging Face cache (HF_HUB_OFFLINE=1 forbids downloads)?"
            raise ModelError(f"--diffaccel-model {info.name!r} could not be loaded: {first}{hint}") from error
        pipe.set_progress_bar_config(disable=True)
        return pipe
