"""pytest hooks and fixtures of pytest-diffaccel. Thin: the work lives in the modules it imports lazily.

pytest imports this module in every run of the environment (the ``pytest11`` entry point), an
unrelated suite's included: it imports only pytest and the light config, calibration, keys and
holder modules. At configure the plugin keeps the parsed settings (holder.Holder); the registry and
the session, with numpy and the rest, are built on first use (holder.py says when).
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from . import config as cfg
from .calibration import RUN_ENV  # "k/N" in the further runs of --diffaccel-save-runs
from .holder import Holder
from .keys import APPLIED, FIXTURES, HOLDER, JOB, PIPELINE, RESULTS, STATE
from .versus.env import in_arm, remember_environment

# ----------------------------------------------------------------------------- options and configuration


def pytest_addoption(parser: pytest.Parser) -> None:
    cfg.add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    remember_environment()  # before any conftest runs: what a base-vs-head job's arms start from


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspec

    pluginmanager.add_hookspecs(hookspec)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "diffaccel(techniques=..., min_ssim=..., max_slowdown=..., steps=..., size=..., ...): "
        "per-test settings of pytest-diffaccel (marker > command line > ini > default)",
    )
    if config.option.help:
        return
    settings = cfg.settings_from_config(config)
    if settings.gpu:
        _require_cuda()
    if settings.save_runs > 1 and not settings.save:
        raise pytest.UsageError(
            "--diffaccel-save-runs: records runs into the baselines, so it needs --diffaccel-save all (or missing)"
        )
    if settings.html:
        _require_html_modules(settings.html)
    from .drill import DrillError, requested

    try:
        drills = requested()
    except DrillError as error:
        raise pytest.UsageError(str(error)) from None
    if _versus(settings):
        from .versus.hooks import conflicts

        conflict = conflicts(settings, config)
        if conflict:
            raise pytest.UsageError(conflict)
    holder = Holder(config, settings, drills, "warm" if _inductor_cache_entries() else "cold")
    config.stash[HOLDER] = holder
    if holder.validates_at_configure:
        holder.session()  # a bad spec is a usage error (exit 4) before collection
    if not _is_worker(config) and config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistRelay(config), "diffaccel-xdist-relay")
    if settings.gpu and _is_worker(config):
        _pin_worker_gpu(config, settings)


def _versus(settings: cfg.Settings) -> bool:
    """A base-vs-head job's controller: --diffaccel-base or --diffaccel-base-python, and not itself an arm."""
    return bool(settings.base or settings.base_python) and not in_arm()


def _pin_worker_gpu(config: pytest.Config, settings: cfg.Settings) -> None:
    """pytest-xdist worker gwN takes GPU number N of --diffaccel-gpus (all visible GPUs by default)."""
    import torch

    worker = str(config.workerinput.get("workerid", "gw0"))  # type: ignore[attr-defined]
    number = int("".join(ch for ch in worker if ch.isdigit()) or 0)
    gpus = settings.gpus or tuple(range(torch.cuda.device_count()))
    bad = [g for g in gpus if g >= torch.cuda.device_count()]
    if bad:
        raise pytest.UsageError(
            f"--diffaccel-gpus: GPU {bad[0]} does not exist; this machine has {torch.cuda.device_count()}"
        )
    torch.cuda.set_device(gpus[number % len(gpus)])


def _require_html_modules(path: object) -> None:
    """--diffaccel-html needs the [html] extra: said before anything is timed, not at the session's end."""
    from .report import html_modules_missing

    missing = html_modules_missing()
    if missing:
        raise pytest.UsageError(
            f"--diffaccel-html {path}: the HTML report needs {' and '.join(missing)}, which the plugin's base "
            "install does not bring: pip install 'pytest-diffaccel[html]' (nothing was run)"
        )


def _require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise pytest.UsageError(
            "--diffaccel-gpu: CUDA is not available on this machine (torch "
            f"{torch.__version__}, built for CUDA {torch.version.cuda}); run without --diffaccel-gpu to use the CPU"
        )


def _state(config: pytest.Config) -> Any:
    """The session, built on first use (UsageError when it can't be)."""
    state = config.stash.get(STATE, None)
    if state is not None:
        return state
    try:
        holder = config.stash[HOLDER]
    except KeyError:
        raise pytest.UsageError("pytest-diffaccel is not configured (was pytest_configure skipped?)") from None
    return holder.session()


def pytest_report_header(config: pytest.Config) -> list[str]:
    holder = config.stash.get(HOLDER, None)  # the settings only: a header builds no session
    if holder is None:
        return []
    settings = holder.settings
    lines = [
        f"diffaccel: {settings.describe()}",
        f"diffaccel: latency gate at alpha {settings.alpha:g} per test; a whole matrix's false-alarm rate depends on "
        "how many runs its history holds (measured in docs/verdict-quality.md)",
    ]
    if holder.drills:
        drills = ", ".join(f"{name} +{fraction:.0%}" for name, fraction in holder.drills.items())
        lines.append(f"diffaccel: FIRE DRILL (DIFFACCEL_SLOWDOWN): real extra work injected into {drills}")
    run = os.environ.get(RUN_ENV)
    if run:
        lines.append(f"diffaccel: run {run} of --diffaccel-save-runs")
    elif settings.save and settings.save_runs > 1:
        lines.append(
            f"diffaccel: recording {settings.save_runs} runs (--diffaccel-save-runs): this process is run 1, then "
            f"{settings.save_runs - 1} fresh process(es), about {settings.save_runs} times one run; timing gates of "
            "runs 2 and on are reported only (they measure the noise)"
        )
    cache = _inductor_cache()
    if cache:
        lines.append(f"diffaccel: compile cache {cache}")
    return lines


def _inductor_cache_path() -> Any:
    import getpass
    import tempfile
    from pathlib import Path

    configured = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if configured:
        return Path(configured)
    try:
        return Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}"
    except (KeyError, OSError):
        return Path(tempfile.gettempdir()) / "torchinductor"


def _inductor_cache_entries() -> int:
    path = _inductor_cache_path()
    return sum(1 for _ in path.iterdir()) if path.is_dir() else 0


def _inductor_cache() -> str | None:
    """Where torch.compile keeps its cache across runs, and whether it is warm (no torch import)."""
    configured = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    path = _inductor_cache_path()
    if not path.is_dir():
        return f"{path} (empty: compiled techniques compile cold)" if configured else None
    entries = _inductor_cache_entries()
    source = "TORCHINDUCTOR_CACHE_DIR" if configured else "default location"
    return f"{path} ({source}; {entries} entries: compile times of this run may come from it)"


def pytest_cmdline_main(config: pytest.Config) -> int | None:
    if not config.getoption("diffaccel_list_techniques", default=False):
        return None
    config._do_configure()
    try:
        from .report.listing import list_techniques

        state = _state(config)
        _check_inputs(state, load=False)  # the listing loads what it needs
        print(list_techniques(state))
    finally:
        config._ensure_unconfigure()
    return 0


# ----------------------------------------------------------------------------- collection


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "diffaccel_technique" not in metafunc.fixturenames:
        return
    try:
        state = _state(metafunc.config)  # the first diffaccel test builds the session
    except pytest.UsageError:
        return  # the holder keeps the reason: a usage error once collection is over
    from .techniques import SpecError

    # pytest turns an exception raised here into a collection error (exit 2); a bad marker or spec is a
    # usage error (exit 4), raised once collection is over (pytest_collection_modifyitems)
    try:
        settings = state.settings_for(metafunc.definition)
        specs = settings.techniques or _with_recipes(state, metafunc.definition.nodeid)
        parsed = state.registry.parse_all(specs)
    except pytest.UsageError as error:
        state.usage_errors.append(str(error))
        return
    except SpecError as error:
        state.usage_errors.append(f"{metafunc.definition.nodeid}: {error}")
        return
    names = [spec.name for spec in parsed]
    metafunc.parametrize("diffaccel_technique", names, ids=names, indirect=True)


def _with_recipes(state: Any, base: str) -> tuple[str, ...]:
    """The default matrix, plus the recipes a --diffaccel-search saved for this test."""
    from .search_item import saved_recipes

    defaults = tuple(state.registry.defaults())
    return defaults + tuple(r for r in saved_recipes(state, base) if r not in defaults)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    holder = config.stash.get(HOLDER, None)
    if holder is None:
        return
    if holder.failure is not None:
        raise pytest.UsageError(holder.failure)
    state = config.stash.get(STATE, None)
    if state is not None and state.usage_errors:
        raise pytest.UsageError("\n".join(state.usage_errors))
    if in_arm():
        from .versus.child import select

        select(config, items)  # the tests the job asked this run for
    if not any(FIXTURES & set(getattr(item, "fixturenames", ())) for item in items):
        return
    state = holder.session()
    state.used = True
    versus = _versus(state.settings) and not config.option.collectonly
    _check_inputs(state, load=not config.option.collectonly and not versus)  # the arms load the model
    if versus:
        from .versus.hooks import start

        start(session, config, items, state)  # the base checked before any timing; its items in place
        return
    _environment_lines(config, state)
    if state.settings.search:
        from .search_item import replace_matrix

        replace_matrix(session, config, items, state)


def _check_inputs(state: Any, load: bool) -> None:
    """Model and baseline problems stop the run before anything is measured (exit 4)."""
    from .baselines import BaselineError
    from .models import ModelError

    try:
        info = state.info  # resolves the model: a bad path is a usage error
        if load and info.kind != "arch":
            state.source().base()  # a model the libraries can't load, or load other than as saved
        state.baseline_entries()
    except (BaselineError, ModelError) as error:
        raise pytest.UsageError(str(error)) from None


def _environment_lines(config: pytest.Config, state: Any) -> None:
    """The run's hardware fingerprint and which baseline file it reads, or what differs from those there are."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or _is_worker(config):
        return
    from .report.environment import environment_lines

    for line in environment_lines(state):
        reporter.write_line(f"diffaccel: {line}")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def diffaccel_technique(request: pytest.FixtureRequest) -> Any:
    """The technique spec of this test; skips the test where this device or model can't run it."""
    state = _state(request.config)
    spec = state.registry.parse(getattr(request, "param", None) or "fp32")
    from .techniques import unmet

    reasons = unmet(spec.requirements, state.environment())
    if reasons:
        pytest.skip(f"{spec.name}: " + "; ".join(reasons))
    return spec


@pytest.fixture
def diffaccel_reference(request: pytest.FixtureRequest) -> Any:
    """The fp32 reference of this test's call: images and latency samples, once per session."""
    state = _state(request.config)
    settings = state.settings_for(request.node)
    progress = _progress(request, "fp32 reference")
    try:
        return state.reference(state.call_for(settings), settings, progress)
    finally:
        progress.close()


@pytest.fixture
def diffaccel_pipeline(
    request: pytest.FixtureRequest, diffaccel_technique: Any, diffaccel_reference: Any
) -> Generator[Any, None, None]:
    """A fresh pipeline with this test's technique applied; released after the test."""
    state = _state(request.config)
    settings = state.settings_for(request.node)
    from .session import TechniqueFailed, release_memory

    failure = None
    started = time.perf_counter()
    try:
        pipe, applied = state.apply(diffaccel_technique, settings)
    except TechniqueFailed as error:
        failure = str(error)
    if failure is not None:  # outside the except block: the one-line reason, no chained traceback
        _record_failure(request.node, diffaccel_technique.name, failure)
        pytest.fail(failure, pytrace=False)
    request.node.stash[APPLIED] = applied
    request.node.stash[PIPELINE] = (pipe, time.perf_counter() - started)
    yield pipe
    request.node.stash[PIPELINE] = (None, None)
    del pipe
    release_memory(state.device, compiled=diffaccel_technique.compiles)


@pytest.fixture
def diffaccel_benchmark(request: pytest.FixtureRequest, diffaccel_technique: Any) -> Iterator[Any]:
    """``diffaccel_benchmark(pipe, **call_kwargs) -> Result``; the verdict fails the test at its end."""
    state = _state(request.config)
    from .benchmark import Benchmark

    bench = Benchmark(
        state,
        request.node,
        diffaccel_technique,
        state.settings_for(request.node),
        applied=request.node.stash.get(APPLIED, None),
        progress=_progress(request),
    )
    request.node.stash[RESULTS] = bench
    yield _guarded(bench, request.node)


def _guarded(bench: Any, node: pytest.Item) -> Any:
    from .session import TechniqueFailed

    def run(pipe: Any, **call_kwargs: Any) -> Any:
        if bench.applied is None:
            bench.applied = node.stash.get(APPLIED, None)
        if bench.fixture_pipe is None:
            bench.fixture_pipe, bench.apply_seconds = node.stash.get(PIPELINE, (None, None))
        failure = None
        try:
            return bench(pipe, **call_kwargs)
        except TechniqueFailed as error:
            failure = str(error)
        _record_failure(node, bench.spec.name, failure)
        pytest.fail(failure, pytrace=False)

    run.results = bench.results  # type: ignore[attr-defined]
    return run


def _progress(request: pytest.FixtureRequest, label: str | None = None) -> Any:
    from .report.progress import progress_for

    spec = request.node.callspec.params.get("diffaccel_technique") if hasattr(request.node, "callspec") else None
    return progress_for(request.config, request.node, label or spec)


def _record_failure(node: pytest.Item, technique: str, reason: str) -> None:
    from .results import Result

    state = node.config.stash.get(STATE, None)
    if state is not None and not any(r.test_id == node.nodeid for r in state.results):
        state.results.append(Result(test_id=node.nodeid, technique=technique, outcome="failed", reason=reason))


# ----------------------------------------------------------------------------- reporting


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    state = item.config.stash.get(STATE, None)
    if state is None or "diffaccel_technique" not in getattr(item, "fixturenames", ()):
        return report
    technique = _technique_of(item)
    if report.when == "teardown":
        if _is_worker(item.config):  # pytest-xdist: the controller writes reports and baselines
            from .results import to_payload

            mine = [r for r in state.results if r.test_id.split("#")[0] == item.nodeid]
            report.diffaccel_results = [to_payload(r) for r in mine]
        elif state.settings.json and state.results:
            from .report.jsonreport import write_json

            write_json(state, state.settings.json)  # after every test: a killed run still leaves its numbers
    if report.when == "setup" and report.skipped:
        from .results import Result

        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        state.results.append(Result(test_id=item.nodeid, technique=technique, outcome="skipped", reason=reason))
    elif report.when == "call":
        bench = item.stash.get(RESULTS, None)
        results = bench.results if bench is not None else []
        for result in results:
            state.results.append(result)
        failing = [r for r in results if r.verdict is not None and r.verdict.failed]
        if report.passed and failing:
            report.outcome = "failed"
            report.longrepr = "\n\n".join(r.failure_message() for r in failing)
        elif report.failed and not results and not any(r.test_id == item.nodeid for r in state.results):
            from .results import Result

            reason = call.excinfo.exconly().splitlines()[0] if call.excinfo else "failed"
            state.results.append(Result(test_id=item.nodeid, technique=technique, outcome="failed", reason=reason))
    return report


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class XdistRelay:
    """On the pytest-xdist controller: gathers the workers' results from their teardown reports."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        payloads = getattr(report, "diffaccel_results", None)
        if not payloads:
            return
        try:
            state = _state(self.config)  # the controller collects nothing: the first results build its session
        except pytest.UsageError:
            return  # the workers stopped on it and said why
        from .results import from_payload

        state.used = True
        state.results.extend(from_payload(p) for p in payloads)
        if state.settings.json:
            from .report.jsonreport import write_json

            write_json(state, state.settings.json)


def _technique_of(item: pytest.Item) -> str:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "diffaccel_technique" in callspec.params:
        return str(callspec.params["diffaccel_technique"])
    return "fp32"


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, object, object]:
    """A base-vs-head job runs its pairs before its items report their decisions."""
    job = session.config.stash.get(JOB, None)
    if job is not None and not session.config.option.collectonly:
        from .versus.hooks import run

        run(session, job)
    return (yield)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(STATE, None)
    if in_arm() and not _is_worker(session.config):  # a run of an arm: the job reads its results, nothing else
        from .versus.child import write

        write(session.config, state, int(session.exitstatus))
        return
    job = session.config.stash.get(JOB, None)
    if job is not None:
        from .versus.hooks import finish

        finish(session, state, job)
        return
    if state is None or not state.used or _is_worker(session.config) or session.config.option.collectonly:
        return  # --collect-only runs nothing: nothing to save, and no further recording runs to start
    from .baselines import BaselineError

    try:
        state.save_baselines()
    except (BaselineError, OSError) as error:  # nothing saved; the reports are still written, the status says so
        state.save_error = str(error) if isinstance(error, BaselineError) else f"{type(error).__name__}: {error}"
        session.exitstatus = pytest.ExitCode.USAGE_ERROR
    if os.environ.get(RUN_ENV):  # a further run of --diffaccel-save-runs: the first run's reports stand
        return
    from .report import write_reports

    write_reports(state)
    if state.settings.save_runs > 1 and state.save_error is None:
        from .calibration import record

        session.exitstatus = record(session, state)  # runs 2..N; non-zero when any run failed


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    job = config.stash.get(JOB, None)
    if job is not None and state is not None:
        from .versus.hooks import summary as versus_summary

        versus_summary(terminalreporter, state, job)
        return
    if state is None or (not state.results and getattr(state, "search", None) is None):
        return
    from .report.terminal import summary

    summary(terminalreporter, state)
