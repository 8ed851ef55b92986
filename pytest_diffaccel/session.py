"""Session state: settings, registry, the model (loaded once), the fp32 references, baselines, results.

Kept in ``config.stash``; every heavy import happens on first use, so an unrelated pytest run
that never touches a diffaccel fixture pays nothing.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import baselines as baseline_files
from . import history
from .config import Settings
from .measure import Call, Measurement, measure
from .models import ModelInfo
from .results import Result
from .techniques import Environment, Registry, Spec

if TYPE_CHECKING:
    from .store import Store


class Reference:
    """The fp32 reference of one call: its images and its latency samples, measured once per session."""

    def __init__(self, call: Call, measurement: Measurement) -> None:
        self.call = call
        self.measurement = measurement

    @property
    def images(self) -> Any:
        return self.measurement.images

    @property
    def samples(self) -> list[float]:
        return self.measurement.samples

    @property
    def median(self) -> float:
        return self.measurement.median


class DiffaccelSession:
    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self._info: ModelInfo | None = None
        self.save_error: str | None = None
        self.reports_written: list[Path] = []
        self.results: list[Result] = []
        self.saved: baseline_files.SaveReport | None = None
        self.used = False  # a collected test uses the diffaccel fixtures
        self._source: Any = None
        self._environment: Environment | None = None
        self._references: dict[str, Reference | BaseException] = {}
        self._baselines: dict[str, Any] | None = None
        self._machine: str | None = None
        self._fingerprint: dict[str, Any] | None = None
        self._located: baseline_files.Located | None = None
        self._store: Store | None = None
        self._machine_spreads: dict[str, history.Prior] = {}
        self._seed_images: dict[str, dict[int, Any]] = {}
        self.compile_cache = "cold"  # "warm" when torch.compile's cache held entries at the start of the run
        self.save_refused: dict[str, str] = {}  # test id -> why its run was not saved
        self.usage_errors: list[str] = []  # bad markers or specs found while collecting: exit 4 after it
        self.drills: dict[str, float] = {}  # DIFFACCEL_SLOWDOWN: technique -> extra fraction (drill.py)
        self.drilled: set[str] = set()
        self.search: Any = None  # search.SearchResult of --diffaccel-search
        self.search_seconds: float | None = None
        self.invocation: tuple[str, ...] = ()  # the command line's arguments, for the record command

    @property
    def info(self) -> ModelInfo:
        """The session's model, resolved on first use (ModelError when it can't be used)."""
        if self._info is None:
            from .models import model_info

            self._info = model_info(self.settings.model, allow_pickle=self.settings.allow_pickle)
        return self._info

    # ------------------------------------------------------------------ device, machine, versions

    @property
    def device(self) -> str:
        return self.settings.device

    def gpu_name(self) -> str | None:
        if self.device != "cuda":
            return None
        import torch

        return str(torch.cuda.get_device_name())

    @property
    def machine(self) -> str:
        if self._machine is None:
            self._machine = baseline_files.machine_key(self.device, self.gpu_name(), self.settings.machine)
        return self._machine

    def fingerprint(self) -> dict[str, Any]:
        """This run's environment (fingerprint.py): hardware hash, hardware, software."""
        if self._fingerprint is None:
            from .fingerprint import probe

            self._fingerprint = probe(self.device)
        return self._fingerprint

    @property
    def located(self) -> baseline_files.Located:
        """This environment's baseline file among the machine key's files, and the others."""
        if self._located is None:
            self._located = self.store.locate(self.machine, self.fingerprint())
        return self._located

    @property
    def store(self) -> Store:
        """Where the baselines live: the folder, or the shared store at a URL (store.py)."""
        if self._store is None:
            from .store import open_store

            assert self.settings.baselines is not None
            self._store = open_store(self.settings.baselines)
        return self._store

    @property
    def baseline_path(self) -> Path | str:
        return self.located.path

    def versions(self) -> dict[str, Any]:
        """The software half of the fingerprint: library versions, python, torch's build and threads."""
        return dict(self.fingerprint()["software"])

    def no_baseline_note(self) -> str:
        if self.located.others:
            return "no baseline for this environment"
        return f"no baseline for {self.machine}"

    def record_command(self) -> str:
        """The command that records this environment's baselines: this run's, saving 5 runs."""
        recording = ("--diffaccel-save", "--diffaccel-save-runs", "--diffaccel-require-baseline")
        keep: list[str] = []
        skip_value = False
        for arg in self.invocation:
            if skip_value:
                skip_value = False
                continue
            if arg.split("=", 1)[0] in recording:
                skip_value = arg in recording[:2]  # "--diffaccel-save all": its value is the next word
                continue
            keep.append(arg)
        return " ".join(["pytest", *keep, "--diffaccel-save=all", "--diffaccel-save-runs=5"])

    def stack_changes(self, entry: dict[str, Any] | None) -> list[str]:
        """What changed in the software since the newest run of the entry's history ('torch 2.12.0 -> 2.13.0')."""
        from .fingerprint import software_changes

        runs = history.runs_of(entry)
        if not runs:
            return []
        return software_changes(runs[-1].get("versions"), self.versions())

    def environment(self) -> Environment:
        if self._environment is None:
            capability = None
            if self.device == "cuda":
                import torch

                capability = tuple(torch.cuda.get_device_capability())
            attributes: dict[tuple[str, str], bool] = {}
            for technique in self.registry.techniques.values():
                need = technique.requires.attribute
                if need and need not in attributes:
                    attributes[need] = _has_attribute(*need)
            self._environment = Environment(
                device=self.device,
                capability=capability,  # type: ignore[arg-type]
                versions=self.versions(),
                family=self.source().family(),
                attributes=attributes,
            )
        return self._environment

    # ------------------------------------------------------------------ model

    def source(self) -> Any:
        if self._source is None:
            from .models.loading import ModelSource

            self._source = ModelSource(self.info, allow_pickle=self.settings.allow_pickle)
        return self._source

    @property
    def load_seconds(self) -> float | None:
        """How long loading the model took in this run (None before it is loaded, 0 for built architectures)."""
        return self._source.load_seconds if self._source is not None else None

    # ------------------------------------------------------------------ settings and calls

    def settings_for(self, node: pytest.Item) -> Settings:
        marker = node.get_closest_marker("diffaccel")
        if marker is None:
            return self.settings
        if marker.args:
            raise pytest.UsageError(
                f"{node.nodeid}: @pytest.mark.diffaccel takes keyword arguments only, e.g. techniques='bf16'"
            )
        from .parsers import SettingError

        try:
            return self.settings.with_marker(marker.kwargs)
        except SettingError as error:
            raise pytest.UsageError(f"{node.nodeid}: {error}") from None

    def timing(self, settings: Settings) -> dict[str, Any]:
        """The measurement options every timed pipeline of this session shares."""
        return {
            "device": self.device,
            "min_rounds": settings.rounds,
            "max_rounds": settings.max_rounds,
            "max_time": settings.max_time,
            "warmup": settings.warmup,
        }

    def call_for(self, settings: Settings, resolve: bool = True) -> Call:
        """The generation call of ``settings``; steps and size left to the pipeline are resolved to its defaults
        (ModelSource.call_defaults, loading the model if it is not yet), so that the key of a history says
        what was run. ``resolve=False``: as given (a report of a session that loaded nothing)."""
        info = self.info
        prompts = settings.prompt or tuple(info.prompts) or ("a photo of an astronaut riding a horse on mars",)
        steps = settings.steps if settings.steps is not None else info.steps
        size = settings.size if settings.size is not None else info.size
        if resolve and (steps is None or size is None) and info.kind in ("folder", "hub"):
            default_steps, default_size = self.source().call_defaults()
            steps = steps if steps is not None else default_steps
            size = size if size is not None else default_size
        return Call(
            prompts=tuple(prompts),
            steps=steps,
            size=size,
            seed=settings.seed,
            batch=settings.batch,
            guidance=settings.guidance if settings.guidance is not None else info.guidance,
        ).with_extra(dict(info.call_extra))

    # ------------------------------------------------------------------ the fp32 reference

    def reference(self, call: Call, settings: Settings, progress: Any = None) -> Reference:
        key = call.key()
        cached = self._references.get(key)
        if isinstance(cached, BaseException):
            raise cached
        if cached is not None:
            return cached
        from .fidelity import broken
        from .measure import one_line

        pipe, contexts = self.fresh_fp32()
        try:
            with exclusive_device(self.device):
                measurement = measure(pipe, call, contexts=contexts, progress=progress, **self.timing(settings))
        except Exception as error:
            failure = RuntimeError(f"the fp32 reference of {self.info.name} failed: {one_line(error)}")
            self._references[key] = failure
            raise failure from error
        finally:
            del pipe
            release_memory(self.device)
        why = broken(measurement.images)
        if why:
            failure = RuntimeError(
                f"the fp32 reference image of {self.info.name} is broken ({why}); the model or the call is at fault, "
                "not the technique"
            )
            self._references[key] = failure
            raise failure
        reference = Reference(call, measurement)
        self._references[key] = reference
        return reference

    def reference_images(self, call: Call, seeds: list[int]) -> dict[int, Any]:
        """The fp32 reference's images for more seeds of ``call`` (fidelity seeds), untimed, once per session."""
        from .measure import generate

        cache = self._seed_images.setdefault(call.key(), {})
        missing = [seed for seed in seeds if seed not in cache]
        if missing:
            pipe, contexts = self.fresh_fp32()
            try:
                for seed in missing:
                    cache[seed] = generate(pipe, call, contexts, seed=seed)
            finally:
                del pipe
                release_memory(self.device)
        return {seed: cache[seed] for seed in seeds}

    def fresh_fp32(self) -> tuple[Any, list[Callable[[], Any]]]:
        """A fresh fp32 pipeline of the session's model and the call contexts it runs under (fp32_contexts)."""
        return self.source().fresh(self.device, "float32"), fp32_contexts(self.device)

    def references(self) -> list[Reference]:
        return [r for r in self._references.values() if isinstance(r, Reference)]

    # ------------------------------------------------------------------ baselines

    def baseline_entries(self) -> dict[str, Any]:
        if self._baselines is None:
            self._baselines = self.located.entries
        return self._baselines

    def baseline_for(self, test_id: str, call: Call) -> tuple[dict[str, Any] | None, str]:
        """The stored entry for this test if it was recorded for the same call, and a note."""
        entry = self.baseline_entries().get(test_id)
        if entry is None:
            return None, self.no_baseline_note()
        if entry.get("call") != call.describe():
            return None, "baseline recorded for another call (steps, size, prompts...): not compared"
        if entry.get("model") not in (None, self.info.name):
            return None, f"baseline recorded for model {entry.get('model')}: not compared"
        weights = self.weights()
        if entry.get("weights") not in (None, weights):  # histories recorded before weights were named: compared
            return None, f"baseline recorded on other weights ({entry.get('weights')}; now {weights}): not compared"
        return entry, "baseline"

    def weights(self) -> str | None:
        """What identifies the session model's weights (models.identity), taken once."""
        return self.source().weights()

    def caption_check(self, call: Call, seeded: Sequence[tuple[int, Any, Any]], spec: Spec) -> Any:
        """The caption gate's reading of (seed, images, reference images) per seed (captions.CaptionCheck),
        for a bundled preset that draws its captions; None for another model or prompts that are no captions."""
        if not self.info.draws_captions:
            return None
        from . import captions

        kwargs = call.kwargs()  # a test's own prompt= or num_inference_steps= replaces the session's
        prompts = kwargs["prompt"]
        floors = self.ssim_overrides()
        why = captions.too_few_steps(kwargs.get("num_inference_steps"), self.info.steps) or captions.code_path_only(
            {p.technique.name: floors[p.technique.name] for p in spec.parts if p.technique.name in floors}
        )
        return captions.check([prompts] if isinstance(prompts, str) else list(prompts), seeded, unjudged=why)

    def ssim_overrides(self) -> dict[str, float]:
        """Each built-in technique's SSIM floor for this model (floors.py), over the model's own overrides."""
        from . import floors

        path = str(self.settings.floors) if self.settings.floors else None
        generic = {name: t.min_ssim for name, t in self.registry.techniques.items()}
        return {**dict(self.info.ssim_overrides), **floors.overrides(self.info.name, path, generic)}

    def min_ssim(self, spec: Spec, settings: Settings) -> float:
        """The SSIM threshold of ``spec``: --diffaccel-min-ssim (or the marker's), else its floor for this model."""
        if settings.min_ssim is not None:
            return float(settings.min_ssim)
        return spec.min_ssim_for(self.ssim_overrides())

    def machine_spread(self, figure: str, where: dict[str, Any] | None = None) -> history.Prior:
        """The typical run-to-run spread of ``figure`` over the tests of this machine's baseline file."""
        key = f"{figure} {sorted((where or {}).items())}"
        if key not in self._machine_spreads:
            entries = self.baseline_entries().values()
            self._machine_spreads[key] = history.machine_spread(
                history.levels(history.runs_of(e), figure, where) for e in entries
            )
        return self._machine_spreads[key]

    def save_baselines(self) -> None:
        """Add this run to the history of every test that ran and passed the fidelity gates."""
        mode = self.settings.save
        if not mode:
            return
        updates = {}
        pictures = {}
        calibrating = self.settings.save_runs > 1
        for result in self.results:
            if not result.fidelity_ok:
                continue
            record = result.run_record(self.versions())
            if record is None:
                self.save_refused[result.test_id] = "every block's rounds drifted (" + result.drift_text() + ")"
                continue
            updates[result.test_id] = history.merger(
                result.baseline_fields(self.versions()),
                record,
                keep=self.settings.history,
                new_level=result.changed_level and not calibrating,
            )
            pictures[result.test_id] = list(result.thumbnail_files().values())
        if not updates:
            self.saved = baseline_files.SaveReport(path=self.baseline_path)
            return
        self.saved = self.store.save(self.located, self.machine, updates, mode, pictures, self.fingerprint())

    # ------------------------------------------------------------------ applying a spec

    def apply(self, spec: Spec, settings: Settings) -> tuple[Any, Any]:
        from .measure import one_line
        from .techniques import ApplyContext

        pipe = self.source().fresh(self.device, spec.dtype)
        ctx = ApplyContext(device=self.device, argument=None, model=self.info, settings=settings, spec=spec)
        for part in spec.ordered:
            ctx.argument = part.argument
            try:
                pipe = part.technique.run(pipe, ctx)
            except Exception as error:
                del pipe
                release_memory(self.device)
                raise TechniqueFailed(f"{spec.name}: applying {part.label} failed: {one_line(error)}") from error
        fraction = self.drills.get(spec.name)
        if fraction is not None:
            from .drill import inject

            self.drilled.add(spec.name)
            ctx.note(inject(pipe, fraction, self.call_for(settings)))
        return pipe, ctx


class TechniqueFailed(Exception):
    """Applying or running a technique failed; the message holds the library's reason in one line."""


def _has_attribute(module: str, attribute: str) -> bool:
    try:
        return hasattr(importlib.import_module(module), attribute)
    except ImportError:
        return False


@contextlib.contextmanager
def exclusive_device(device: str) -> Iterator[None]:
    """Hold this GPU alone while measuring: pytest-xdist workers that share a GPU take turns."""
    if device != "cuda":
        yield
        return
    import fcntl

    import torch

    path = Path(tempfile.gettempdir()) / f"pytest-diffaccel-cuda{torch.cuda.current_device()}.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def fp32_contexts(device: str) -> list[Callable[[], Any]]:
    """The fp32 reference's call contexts: TF32 off on CUDA (fp32 means fp32), none on the CPU."""
    if device != "cuda":
        return []
    from .techniques.precision import tf32

    return [lambda: tf32(False)]


def release_memory(device: str, compiled: bool = False) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()
    if compiled:
        import torch._dynamo

        torch._dynamo.reset()
