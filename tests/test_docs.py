"""The docs: the options reference is generated from the code and fails when stale, the README stays
short and its links resolve, the commands it gives run files that exist, the jargon is defined, and
the site builds strictly."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "scripts"))

# The file the README's "your own model" section has the user create in their repository.
USERS_TEST_FILE = "tests/test_diffaccel.py"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """A heading's anchor as GitHub and MkDocs's toc make it (lower case, punctuation dropped)."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return re.sub(r"\s+", "-", text)


def anchors(page: Path) -> set[str]:
    text = page.read_text()
    if page.name == "changelog.md":  # the docs page includes CHANGELOG.md
        text = (ROOT / "CHANGELOG.md").read_text()
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_options_reference_is_current():
    import docs_reference

    assert docs_reference.main(["--check"]) == 0, "run: python scripts/docs_reference.py"


def test_options_reference_goes_stale_when_an_option_is_added(monkeypatch):
    """The check can fail: an option added to config.OPTIONS and not yet in the page is caught."""
    import docs_reference

    from pytest_diffaccel import config

    extra = config.Option("no_such_option", config.parse_bool, "an option nobody documented yet", flag=True)
    monkeypatch.setattr(config, "OPTIONS", (*config.OPTIONS, extra))
    assert "`--diffaccel-no-such-option`" in docs_reference.render()
    assert docs_reference.main(["--check"]) == 1


def test_the_readme_is_read_in_five_minutes():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move reference material to docs/"


def test_readme_and_changelog_links_resolve():
    for page in (ROOT / "README.md", ROOT / "CHANGELOG.md"):
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("#"):
                continue
            path, _, anchor = target.partition("#")
            file = ROOT / path
            assert file.exists(), f"{page.name} links to {path}, which does not exist"
            if anchor and file.suffix == ".md":
                assert anchor in anchors(file), f"{page.name} links to {target}: no such heading"


def test_commands_run_files_that_exist():
    """No command in the README or the docs runs a test file that is neither in this repository nor the
    one the README has the user create (a `pytest tests/test_speed.py` that never existed, say)."""
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    for page in pages:
        for path in re.findall(r"pytest\s+(?:-\S+\s+)*([\w./-]+\.py)\b", page.read_text()):
            assert path == USERS_TEST_FILE or (ROOT / path).exists(), f"{page.name}: pytest {path}: no such file"


def test_the_jargon_is_defined_in_the_glossary_and_the_readme_links_it():
    defined = anchors(DOCS / "glossary.md")
    for term in ("block", "run", "level", "aa-run", "moderated-spread", "alpha", "theil-sen-slope",
                 "successive-halving", "undecided", "history"):  # fmt: skip
        assert term in defined, f"docs/glossary.md does not define {term}"
    readme = (ROOT / "README.md").read_text()
    assert "docs/glossary.md#block" in readme and "docs/glossary.md#run" in readme


def test_the_docs_site_builds_strictly(tmp_path):
    """mkdocs build --strict: a broken link or anchor, or a page left out of the nav, fails."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
