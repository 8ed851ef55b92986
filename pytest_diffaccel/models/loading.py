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
from pathlib import Path
from typing import Any

from ..techniques.components import quiet_casts
from . import ModelError, ModelInfo


def quiet_progress_bars() -> None:
    """No 'Loading pipeline components' bars in the middle of a test report."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def dtype_keyword() -> str:
    """``dtype`` where diffusers has it (``torch_dtype`` is deprecated there), ``torch_dtype`` before."""
    try:
        import diffusers.utils.deprecation_utils as deprecation

        return "dtype" if hasattr(deprecation, "_resolve_dtype") else "torch_dtype"
    except ImportError:
        return "torch_dtype"


class ModelSource:
    """Hands out fresh pipelines of one model."""

    def __init__(self, info: ModelInfo, allow_pickle: bool = False) -> None:
        self.info = info
        self.allow_pickle = allow_pickle
        self._base: Any = None
        self.load_seconds: float | None = 0.0 if info.kind == "arch" else None  # arch presets load nothing
        self._weights: str | None = None

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
            import time

            started = time.perf_counter()
            self._base = self._load()
            self.load_seconds = time.perf_counter() - started
        return self._base

    def weights(self) -> str | None:
        """What identifies the weights the session loads (models.weights_identity); None when nothing can."""
        from .identity import weights_identity

        if self._weights is None:
            self._weights = weights_identity(self.info, self.allow_pickle) or ""
        return self._weights or None

    def call_defaults(self) -> tuple[int | None, tuple[int, int] | None]:
        """The steps and the size the pipeline uses when the call leaves them out (``call_defaults``)."""
        return call_defaults(self.base())

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
        kwargs: dict[str, Any] = {dtype_keyword(): torch.float32}
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
        except Exception as error:  # a library's reason, in one line, with the versions that gave it
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            hint = ""
            if "safetensors" in str(error).lower() and not self.allow_pickle:
                hint = (
                    "; its weights may be pickle files only: convert them to safetensors "
                    "or pass --diffaccel-allow-pickle"
                )
            elif info.kind == "hub":
                hint = "; is it in the Hugging Face cache (HF_HUB_OFFLINE=1 forbids downloads)?"
            raise ModelError(
                f"--diffaccel-model {info.name!r} could not be loaded: {first}{hint} ({library_versions()})"
            ) from error
        if info.kind == "preset" and info.path is not None:
            check_loaded_as_saved(pipe, info.path, info.name)
        pipe.set_progress_bar_config(disable=True)
        return pipe


def library_versions() -> str:
    import diffusers
    import transformers

    return f"diffusers {diffusers.__version__}, transformers {transformers.__version__}"


CLIP_PREFIX = "text_model."  # transformers 5 saves CLIPTextModel without it, 4.x loads with it


def not_loaded_as_saved(module: Any, files: list[Path]) -> tuple[list[str], int]:
    """The saved tensors that ``module`` does not hold as saved, and how many were saved.

    A library that does not recognise a file's tensor names initialises the module at random
    and only warns; comparing the values catches that.
    """
    import torch
    from safetensors.torch import load_file

    state = module.state_dict()
    wrong: list[str] = []
    count = 0
    for path in files:
        for name, saved in load_file(path).items():
            count += 1
            candidates = (name, CLIP_PREFIX + name, name.removeprefix(CLIP_PREFIX))
            loaded = next((state[c] for c in candidates if c in state), None)
            if loaded is None or loaded.shape != saved.shape or not torch.equal(loaded.cpu(), saved.to(loaded.dtype)):
                wrong.append(name)
    return wrong, count


def check_loaded_as_saved(pipe: Any, folder: Path, name: str) -> None:
    """Every bundled weight must arrive as trained: a preset with a random text encoder would run
    (and pass) while testing nothing."""
    for component, module in pipe.components.items():
        files = sorted((folder / component).glob("*.safetensors"))
        if not files or not hasattr(module, "state_dict"):
            continue
        wrong, count = not_loaded_as_saved(module, files)
        if wrong:
            raise ModelError(
                f"--diffaccel-model {name!r}: {component} was not loaded as saved ({len(wrong)} of {count} "
                f"tensors differ, e.g. {wrong[0]!r}) with {library_versions()}; the library did not "
                "recognise the bundled file's layout: install the versions in pyproject.toml, or report it"
            )


def call_defaults(pipe: Any) -> tuple[int | None, tuple[int, int] | None]:
    """(steps, (height, width)) a diffusers pipeline uses when a call leaves them out, None where it can't be
    told: the default of ``num_inference_steps`` in its ``__call__``, and its default sample size times the
    VAE's scale factor (``default_sample_size``, or the denoiser config's ``sample_size``), as the pipelines
    compute them. A history key holds these, so that a diffusers release that changes a default is another call,
    not the same call measured differently."""
    import inspect

    steps = None
    try:
        parameter = inspect.signature(type(pipe).__call__).parameters.get("num_inference_steps")
    except (TypeError, ValueError):
        parameter = None
    if parameter is not None and isinstance(parameter.default, int) and not isinstance(parameter.default, bool):
        steps = parameter.default
    sample = getattr(pipe, "default_sample_size", None)
    if sample is None:
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
    height, width = (sample[0], sample[-1]) if isinstance(sample, (list, tuple)) and sample else (sample, sample)
    scale = getattr(pipe, "vae_scale_factor", None)
    size = None
    if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (height, width, scale)):
        size = (height * scale, width * scale)
    return steps, size
