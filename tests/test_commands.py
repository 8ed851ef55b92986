"""Every pytest command in the README and the docs runs as written: its options exist and their values
parse; its files exist; the ones that can run on a CPU collect for real in this repository (a
subprocess, ``--collect-only``: the options are validated, the matrix is parametrized, nothing is
timed or saved); the GPU ones are checked for their paths and options only."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_diffaccel import config

ROOT = Path(__file__).resolve().parent.parent
USERS_TEST_FILE = "tests/test_diffaccel.py"  # the file the README's "your own model" has the user create
BLOCK = re.compile(r"```(?:bash|sh|shell|console)\n(.*?)```", re.S)
# recording and reports write files: a collect-only check drops them (their values are still parsed)
WRITES = ("--diffaccel-save", "--diffaccel-save-runs", "--diffaccel-accept", "--diffaccel-html", "--diffaccel-md",
          "--diffaccel-json")  # fmt: skip


def commands() -> list[tuple[str, dict[str, str], list[str]]]:
    """(page, environment, pytest arguments) of every pytest command in a shell block."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for block in BLOCK.findall(page.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if "pytest" not in words:
                    continue
                at = words.index("pytest")
                env = dict(w.split("=", 1) for w in words[:at] if "=" in w)
                found.append((page.name, env, words[at + 1 :]))
    return found


def options(args: list[str]) -> list[tuple[str, str | None]]:
    """(--diffaccel-name, value or None) of the arguments; a value may be the next word."""
    by_cli = {o.cli: o for o in config.OPTIONS}
    out = []
    for i, arg in enumerate(args):
        if not arg.startswith("--diffaccel-"):
            continue
        name, _, value = arg.partition("=")
        option = by_cli.get(name)
        if option is not None and not value and not option.flag and i + 1 < len(args):
            value = args[i + 1]
        out.append((name, value or None))
    return out


ALL = commands()


def test_the_docs_hold_commands_to_check():
    assert len(ALL) >= 10 and any(args and args[0] == "examples" for _, _, args in ALL)


@pytest.mark.parametrize(("page", "env", "args"), ALL, ids=[f"{p}:{' '.join(a)[:60]}" for p, _, a in ALL])
def test_options_exist_and_parse_and_files_exist(page, env, args):
    by_cli = {o.cli: o for o in config.OPTIONS}
    for name, value in options(args):
        assert name in by_cli, f"{page}: pytest {' '.join(args)}: no option {name}"
        option = by_cli[name]
        if not option.flag and name not in ("--diffaccel-baselines", "--diffaccel-floors"):
            assert value is not None, f"{page}: {name} needs a value"
            option.parse(value, name)  # SettingError names a bad value
    for arg in args:
        if arg.endswith(".py") and not arg.startswith("-"):
            assert arg == USERS_TEST_FILE or (ROOT / arg).exists(), f"{page}: pytest {arg}: no such file"


def _runs_here(args: list[str]) -> bool:
    """A CPU command on a path of this repository (a command without a path runs in a user's project,
    with the user's own registered techniques)."""
    paths = [a for a in args if not a.startswith("-") and (ROOT / a.split("::")[0]).exists()]
    return "--diffaccel-gpu" not in args and USERS_TEST_FILE not in args and bool(paths)


def _collect_args(args: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in WRITES:
            skip = "=" not in arg  # "--diffaccel-save all": its value is the next word
            continue
        kept.append(arg)
    return kept


CPU = sorted({(tuple(sorted(env.items())), tuple(_collect_args(a))) for _, env, a in ALL if _runs_here(a)})


@pytest.mark.parametrize(("env", "args"), CPU, ids=[" ".join(a)[:70] for _, a in CPU])
def test_cpu_commands_collect_in_this_repository(env, args):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args, "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env={**os.environ, **dict(env), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"pytest {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert re.search(r"\d+ tests? collected|::diffaccel-search\n", done.stdout), done.stdout[-1000:]
