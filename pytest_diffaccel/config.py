"""Settings: every option once, its ini twin, its parser (parsers.py), and the one precedence rule.

Precedence, for every setting: ``@pytest.mark.diffaccel(...)`` > command line > ini > default.

This module imports neither torch nor diffusers: it runs for every pytest invocation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .parsers import (
    SettingError,
    parse_accept,
    parse_bool,
    parse_choice,
    parse_floors_file,
    parse_fraction,
    parse_gates,
    parse_gpu_ids,
    parse_int,
    parse_list,
    parse_location,
    parse_path,
    parse_percent,
    parse_positive_float,
    parse_positive_int,
    parse_prompts,
    parse_size,
    parse_text,
)

PREFIX = "diffaccel"
SAVE_MODES = ("all", "missing")
COMPARE_MODES = ("absolute", "relative")
INTERLEAVE_MODES = ("auto", "on", "off")


# ----------------------------------------------------------------------------- the option table


@dataclass(frozen=True)
class Option:
    name: str  # settings field; CLI --diffaccel-<name with dashes>, ini diffaccel_<name>
    parse: Callable[[Any, str], Any]
    help: str
    metavar: str | None = None
    flag: bool = False  # store_true on the command line
    repeatable: bool = False  # append on the command line
    marker: bool = False  # may be set per test with @pytest.mark.diffaccel(...)
    choices: Sequence[str] | None = None

    @property
    def cli(self) -> str:
        return f"--{PREFIX}-{self.name.replace('_', '-')}"

    @property
    def ini(self) -> str:
        return f"{PREFIX}_{self.name}"


OPTIONS: tuple[Option, ...] = (
    Option("gpu", parse_bool, "run on CUDA; without CUDA this is a usage error. Default: the CPU.", flag=True),
    Option(
        "model",
        parse_text,
        "bundled preset (tiny-sd, tiny-sdxl, tiny-flux, sd15-arch, sdxl-arch, flux-arch), a local diffusers "
        "folder or a hub id. Default: tiny-sd.",
        metavar="ID_OR_PATH",
    ),
    Option(
        "techniques",
        parse_list,
        "comma-separated technique specs; join registry names with + (bf16+compile); presets expand "
        "(diffusion-fast). Default: every built-in technique on its own.",
        metavar="LIST",
        marker=True,
    ),
    Option(
        "steps",
        parse_positive_int,
        "denoising steps of the generation call (default: the model preset's)",
        metavar="N",
        marker=True,
    ),
    Option("size", parse_size, "image size HEIGHTxWIDTH (default: the model preset's)", metavar="HxW", marker=True),
    Option("seed", parse_int, "seed of the initial noise (default 0)", metavar="N", marker=True),
    Option(
        "prompt",
        parse_prompts,
        "a prompt; repeat the option for several (default: the preset's)",
        metavar="TEXT",
        repeatable=True,
        marker=True,
    ),
    Option("batch", parse_positive_int, "images per prompt (default 1)", metavar="N", marker=True),
    Option("guidance", parse_positive_float, "guidance scale (default: the preset's)", metavar="X", marker=True),
    Option(
        "baselines",
        parse_location,
        "baseline folder (default: baselines/ under the rootdir), or a shared store's URL (s3://bucket/prefix, "
        "gs://, az://, file://: any fsspec protocol) that CI runners save into at once",
        metavar="DIR|URL",
    ),
    Option(
        "save",
        parse_choice(SAVE_MODES),
        "write baselines of the tests that ran and passed the fidelity gate: all (replace) or missing "
        "(only new entries). The only way a baseline changes.",
        choices=SAVE_MODES,
    ),
    Option(
        "machine", parse_text, "machine key for baselines (default: derived from the GPU or CPU model)", metavar="NAME"
    ),
    Option(
        "require_baseline",
        parse_bool,
        "for CI: fail every test not judged against its history, whatever the reason (no baseline for this "
        "environment, a history recorded for another call, model or weights, a stored picture that can't be "
        "read), or whose latency verdict is undecided (beyond max-slowdown but the history is too short to "
        "tell), naming the command that records one; without it such a test passes and says so",
        flag=True,
    ),
    Option(
        "save_runs",
        parse_positive_int,
        "with --diffaccel-save: record N runs in one command, each in a fresh pytest process (the run, not the "
        "round, is the unit of noise), to calibrate a new machine's run-to-run spread (default 1)",
        metavar="N",
    ),
    Option(
        "history",
        parse_positive_int,
        "runs kept per test in the baseline history; the verdict's spread comes from them (default 10)",
        metavar="N",
    ),
    Option(
        "base",
        parse_text,
        "judge the working tree against this git ref (origin/main, a tag, a sha), both measured in this job on "
        "this machine: runs of the base and the head alternate, one fresh process each; no stored history needed",
        metavar="REF",
    ),
    Option(
        "base_python",
        parse_text,
        "the base arm's interpreter (another virtualenv: a dependency upgrade); alone, the base is the same tree "
        "run with it; with --diffaccel-base, the base commit run with it",
        metavar="PATH",
    ),
    Option(
        "base_runs",
        parse_positive_int,
        "pairs of runs (one of each arm) a base-vs-head job starts with (default 3, the fewest that met the "
        "targets in docs/base-vs-head.md); undecided tests, and a failure to confirm, get two more at a time, "
        "up to five times this",
        metavar="N",
    ),
    Option(
        "max_slowdown",
        lambda v, n: parse_percent(v, n),
        "latency regression threshold on the run-level ratio vs the history, e.g. 5% (default 10%)",
        metavar="PCT",
        marker=True,
    ),
    Option(
        "fidelity_seeds",
        parse_positive_int,
        "seeds the fidelity gates judge (the call's seed and the next ones, untimed), worst case over all (default 2)",
        metavar="N",
        marker=True,
    ),
    Option(
        "max_compile_increase",
        lambda v, n: parse_percent(v, n),
        "threshold of the compile-time and cold-start gates vs their history, e.g. 50% (default 50%)",
        metavar="PCT",
        marker=True,
    ),
    Option(
        "max_blocks",
        parse_positive_int,
        "independent blocks a suspect technique may be measured in before its latency verdict: block 1, a "
        "confirmation, a third when they disagree (default 3; 1 judges block 1 alone)",
        metavar="N",
        marker=True,
    ),
    Option(
        "floors",
        parse_floors_file,
        "SSIM floors per class of technique measured on your model (benchmarks/fidelity_floors.py --model ... "
        "--out FILE); default: the floors measured on the bundled presets",
        metavar="FILE",
    ),
    Option(
        "min_ssim",
        parse_fraction,
        "SSIM threshold vs the fp32 reference, overriding the technique's own",
        metavar="X",
        marker=True,
    ),
    Option(
        "max_memory_increase",
        lambda v, n: parse_percent(v, n),
        "memory regression threshold vs the baseline peak, e.g. 10% (default 10%)",
        metavar="PCT",
        marker=True,
    ),
    Option(
        "min_speedup",
        parse_positive_float,
        "fail when the speed-up vs the fp32 reference of this run is below X (default: no gate)",
        metavar="X",
        marker=True,
    ),
    Option(
        "alpha",
        parse_fraction,
        "per-test false-alarm level of the latency and compile gates (default 0.0005); what it means for a whole "
        "matrix depends on how well the history knows each test's spread (docs/verdict-quality.md measures it)",
        metavar="P",
        marker=True,
    ),
    Option(
        "max_syncs",
        lambda v, n: float(parse_positive_float(v, n)) if str(v).strip() not in ("0", "0.0") else 0.0,
        "fail when a CUDA call makes more host-device synchronizations per denoising step than this "
        "(counted with torch.cuda.set_sync_debug_mode; default: reported, no gate)",
        metavar="N",
        marker=True,
    ),
    Option(
        "compare",
        parse_choice(COMPARE_MODES),
        "how latency is compared with the baseline: absolute (seconds) or relative (over the fp32 reference "
        "timed in the same run, which cancels the machine's speed of the day)",
        choices=COMPARE_MODES,
        marker=True,
    ),
    Option(
        "interleave",
        parse_choice(INTERLEAVE_MODES),
        "time the fp32 reference in alternation with each technique (A B B A pairs), so that the speed-up and "
        "the relative comparison cancel the machine's drift: on, off, or auto (default: on the CPU, off on "
        "CUDA, where it would keep a second full-size pipeline in GPU memory). Doubles the timed calls.",
        metavar="{auto,on,off}",
        choices=INTERLEAVE_MODES,
        marker=True,
    ),
    Option(
        "rounds",
        parse_positive_int,
        "minimum timed rounds per test (default 8; at least 6 keeps the test able to reach p<0.01)",
        metavar="N",
        marker=True,
    ),
    Option("max_rounds", parse_positive_int, "maximum timed rounds per test (default 30)", metavar="N", marker=True),
    Option(
        "max_time",
        parse_positive_float,
        "time budget per test for timed rounds beyond the minimum, seconds (default 10)",
        metavar="SECONDS",
        marker=True,
    ),
    Option(
        "warmup",
        parse_positive_int,
        "minimum warm-up calls before timing (default 1; compiled techniques warm up until steady)",
        metavar="N",
        marker=True,
    ),
    Option("json", parse_path, "write a pytest-benchmark compatible JSON report", metavar="PATH"),
    Option(
        "md", parse_path, "write a Markdown report (also appended to $GITHUB_STEP_SUMMARY when set)", metavar="PATH"
    ),
    Option("html", parse_path, "write a self-contained HTML report with the images", metavar="PATH"),
    Option(
        "gpus",
        parse_gpu_ids,
        "GPUs for pytest-xdist workers, e.g. 0,1,2,3 (default: all visible); worker gwN uses the Nth; "
        "workers sharing a GPU take turns measuring",
        metavar="LIST",
    ),
    Option(
        "allow_pickle",
        parse_bool,
        "allow a model whose weights are pickle files (.bin/.ckpt); they can run code when loaded. "
        "trust_remote_code is never turned on.",
        flag=True,
    ),
    Option(
        "report_only",
        parse_gates,
        "gates that are judged and reported but never fail a test, e.g. latency,compile-time,cold-start,memory "
        "on a shared runner whose noise does not allow gating them (default: none)",
        metavar="GATES",
    ),
    Option(
        "accept",
        parse_accept,
        "with --diffaccel-save all: accept an intended change as the new baseline. fidelity: the fidelity "
        "regression gate (the picture moved vs the technique's own stored one) is judged and reported, not "
        "failing, and this run's picture and SSIM are saved; the broken-image and fidelity-floor gates still "
        "fail, and the latency history is kept (default: nothing accepted)",
        metavar="WHAT",
    ),
    Option(
        "search",
        parse_bool,
        "instead of the matrix, search for the fastest combination of techniques that passes every gate, "
        "within --diffaccel-search-budget; the recipe found is measured and gated like a test",
        flag=True,
    ),
    Option(
        "search_budget",
        parse_positive_float,
        "minutes the search may spend, the recipe's own measurement included (default 5)",
        metavar="MIN",
    ),
    Option(
        "search_space",
        parse_list,
        "technique families (precision, attention, compile, quantization, caching, structure, memory) or "
        "specs the search combines (default: every technique that can run here, memory savers aside)",
        metavar="LIST",
    ),
    Option(
        "search_min_ssim",
        parse_fraction,
        "the search's picture floor: a candidate holding a lossy-by-design technique (tiny VAE, VAE tiling, "
        "whose class floor only catches a broken image) is chosen only at this SSIM vs fp32 or above; "
        "below it the search summary lists it as left out (default 0.9)",
        metavar="X",
    ),
    Option(
        "list_techniques",
        parse_bool,
        "list every technique, what it needs and whether it can run here, then exit",
        flag=True,
    ),
)
OPTIONS_BY_NAME: Mapping[str, Option] = {o.name: o for o in OPTIONS}
MARKER_KEYS: frozenset[str] = frozenset(o.name for o in OPTIONS if o.marker) | {"prompts"}


DEFAULTS: Mapping[str, Any] = {
    "gpu": False,
    "model": "tiny-sd",
    "techniques": None,  # the plugin fills in the built-in list
    "steps": None,
    "size": None,
    "seed": 0,
    "prompt": None,
    "batch": 1,
    "guidance": None,
    "baselines": None,  # <rootdir>/baselines
    "save": None,
    "machine": None,
    "require_baseline": False,
    "save_runs": 1,
    "history": 10,
    "base": None,
    "base_python": None,
    "base_runs": 3,
    "max_slowdown": 0.10,
    "max_compile_increase": 0.50,
    "fidelity_seeds": 2,
    "max_blocks": 3,
    "floors": None,
    "min_ssim": None,
    "max_memory_increase": 0.10,
    "min_speedup": None,
    "alpha": 0.0005,
    "max_syncs": None,
    "compare": "relative",
    "interleave": "auto",
    "rounds": 8,
    "max_rounds": 30,
    "max_time": 10.0,
    "warmup": 1,
    "json": None,
    "md": None,
    "html": None,
    "gpus": None,
    "allow_pickle": False,
    "report_only": (),
    "accept": (),
    "search": False,
    "search_budget": 5.0,
    "search_space": None,
    "search_min_ssim": 0.9,
    "list_techniques": False,
}


@dataclass(frozen=True)
class Settings:
    """The effective settings of a session or, with a marker applied, of one test."""

    gpu: bool = False
    model: str = "tiny-sd"
    techniques: tuple[str, ...] | None = None
    steps: int | None = None
    size: tuple[int, int] | None = None
    seed: int = 0
    prompt: tuple[str, ...] | None = None
    batch: int = 1
    guidance: float | None = None
    baselines: Path | str | None = None
    save: str | None = None
    machine: str | None = None
    require_baseline: bool = False
    save_runs: int = 1
    history: int = 10
    base: str | None = None
    base_python: str | None = None
    base_runs: int = 3
    max_slowdown: float = 0.10
    max_compile_increase: float = 0.50
    fidelity_seeds: int = 2
    max_blocks: int = 3
    floors: Path | None = None
    min_ssim: float | None = None
    max_memory_increase: float = 0.10
    min_speedup: float | None = None
    alpha: float = 0.0005
    max_syncs: float | None = None
    compare: str = "relative"
    interleave: str = "auto"
    rounds: int = 8
    max_rounds: int = 30
    max_time: float = 10.0
    warmup: int = 1
    json: Path | None = None
    md: Path | None = None
    html: Path | None = None
    gpus: tuple[int, ...] | None = None
    allow_pickle: bool = False
    report_only: tuple[str, ...] = ()
    accept: tuple[str, ...] = ()
    search: bool = False
    search_budget: float = 5.0
    search_space: tuple[str, ...] | None = None
    search_min_ssim: float = 0.9
    list_techniques: bool = False
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def device(self) -> str:
        return "cuda" if self.gpu else "cpu"

    @property
    def interleaved(self) -> bool:
        """Interleave the fp32 reference? 'auto' means on the CPU (benchmarks/verdict_quality.py)."""
        return self.interleave == "on" or (self.interleave == "auto" and not self.gpu)

    def with_marker(self, kwargs: Mapping[str, Any]) -> Settings:
        """These settings with a ``diffaccel`` marker's keyword arguments applied on top."""
        unknown = set(kwargs) - MARKER_KEYS
        if unknown:
            raise SettingError(
                f"@pytest.mark.diffaccel: unknown argument(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(MARKER_KEYS))}"
            )
        changes: dict[str, Any] = {}
        sources = dict(self.sources)
        for key, value in kwargs.items():
            name = "prompt" if key == "prompts" else key
            option = OPTIONS_BY_NAME[name]
            changes[name] = option.parse(value, f"@pytest.mark.diffaccel({key}=...)")
            sources[name] = "marker"
        return dataclasses.replace(self, sources=sources, **changes)

    def describe(self) -> str:
        """One line that reproduces the run (printed in the report header)."""
        parts = [f"device={self.device}", f"model={self.model}"]
        if self.techniques:
            parts.append(f"techniques={','.join(self.techniques)}")
        for name in ("steps", "size", "seed", "batch", "guidance"):
            value = getattr(self, name)
            if value is None:
                parts.append(f"{name}=preset")
            elif name == "size":
                parts.append(f"size={value[0]}x{value[1]}")
            else:
                parts.append(f"{name}={value}")
        parts.append(f"max-slowdown={self.max_slowdown:.0%}")
        parts.append(f"alpha={self.alpha:g}")
        parts.append(f"max-blocks={self.max_blocks}")
        parts.append(f"history={self.history}")
        parts.append(f"max-compile-increase={self.max_compile_increase:.0%}")
        parts.append(f"compare={self.compare}{'+interleaved' if self.interleaved else ''}")
        parts.append(f"rounds={self.rounds}..{self.max_rounds}")
        parts.append(f"max-time={self.max_time:g}s")
        parts.append(f"fidelity-seeds={self.fidelity_seeds}")
        if self.floors is not None:
            parts.append(f"floors={self.floors}")
        if self.min_ssim is not None:
            parts.append(f"min-ssim={self.min_ssim:g}")
        if self.min_speedup is not None:
            parts.append(f"min-speedup={self.min_speedup:g}")
        if self.report_only:
            parts.append("report-only=" + ",".join(g.replace(" ", "-") for g in self.report_only))
        if self.search:
            space = ",".join(self.search_space) if self.search_space else "all"
            parts.append(f"search={self.search_budget:g}min space={space}")
        if self.save:
            parts.append(f"save={self.save}")
            if self.save_runs > 1:
                parts.append(f"save-runs={self.save_runs}")
            if self.accept:
                parts.append("accept=" + ",".join(self.accept))
        if self.machine:
            parts.append(f"machine={self.machine}")
        if self.base or self.base_python:
            against = " ".join(x for x in (self.base, self.base_python and f"python={self.base_python}") if x)
            parts.append(f"base={against} base-runs={self.base_runs}")
        if self.require_baseline:
            parts.append("require-baseline")
        return " ".join(parts)


# ----------------------------------------------------------------------------- pytest glue


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup(PREFIX, "diffaccel: acceleration regression tests for diffusers pipelines")
    for option in OPTIONS:
        kwargs: dict[str, Any] = {
            "dest": f"{PREFIX}_{option.name}",
            "help": option.help.replace("%", "%%"),
            "default": None,
        }
        if option.flag:
            kwargs["action"] = "store_true"
        elif option.repeatable:
            kwargs["action"] = "append"
        if option.metavar and not option.flag:
            kwargs["metavar"] = option.metavar
        if option.choices:
            kwargs["choices"] = list(option.choices)
        group.addoption(option.cli, **kwargs)
        parser.addini(
            option.ini, help=f"ini twin of {option.cli}", type="bool" if option.flag else "string", default=None
        )


def _ini_value(config: pytest.Config, option: Option) -> Any:
    try:
        value = config.getini(option.ini)
    except ValueError:
        return None
    if option.flag:
        return value if value is not None else None
    if value in (None, "", []):
        return None
    return value


def settings_from_config(config: pytest.Config) -> Settings:
    """Command line > ini > default, each value through its option's parser."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        cli_value = config.getoption(f"{PREFIX}_{option.name}", default=None)
        if option.flag and cli_value is False:
            cli_value = None
        if cli_value is not None:
            raw, source, where = cli_value, "command line", option.cli
        else:
            ini_value = _ini_value(config, option)
            if ini_value is None:
                continue
            raw, source, where = ini_value, "ini", f"ini option {option.ini}"
        try:
            values[option.name] = option.parse(raw, where)
        except SettingError as error:
            raise pytest.UsageError(str(error)) from None
        sources[option.name] = source
    settings = Settings(**{**DEFAULTS, **values}, sources=sources)
    if settings.accept and settings.save != "all":
        raise pytest.UsageError(
            "--diffaccel-accept: saves this run's picture as the new baseline, so it needs --diffaccel-save all"
            + (" (missing keeps the stored entries: nothing would be accepted)" if settings.save else "")
        )
    rootdir = Path(str(config.rootpath))
    baselines = settings.baselines or Path("baselines")
    if isinstance(baselines, Path) and not baselines.is_absolute():
        baselines = rootdir / baselines
    return dataclasses.replace(settings, baselines=baselines)
