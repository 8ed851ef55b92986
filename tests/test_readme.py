"""The README and the docs say what the code does: their figures match the committed files that produced
them, and every option they name exists (and every option is documented, in the generated reference)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def documentation() -> dict[Path, str]:
    """What a user reads: the README, the changelog (the docs site includes it) and every docs page."""
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return {page: page.read_text() for page in pages}


REWRITTEN_WHOLE = {"gpu-results"}


def test_readme_figures_match_their_committed_files(capsys):
    import readme_figures

    assert readme_figures.main(["--check"]) == 0, capsys.readouterr().err
    for name, pages in readme_figures.placed().items():
        # docs/gpu-results.md is rewritten whole by scripts/gpu-proof.sh (its own generated page, its command
        # in it): until the new run's reports are committed under docs/gpu-results/, the section is gone
        assert pages or name in REWRITTEN_WHOLE, f"figure section {name} is in no page (README.md or docs/)"
        for page in pages:
            body = readme_figures.pattern(name).search(page.read_text())
            assert body is not None and body.group(2).strip(), f"{page.name}: section {name} is empty"


@pytest.mark.parametrize(
    ("page", "name"),
    [("README.md", "quickstart"), ("docs/environments.md", "one-run"), ("CHANGELOG.md", "one-run-catches")],
)
def test_the_check_fails_on_a_page_edited_by_hand(tmp_path, monkeypatch, capsys, page, name):
    """The check can fail: a copy of a page with one digit of a rendered section (a block, an inline figure)
    changed by hand is reported, by page and section, and left as it is."""
    import readme_figures

    where = ROOT / page
    text = where.read_text()
    section = readme_figures.pattern(name).search(text)
    assert section is not None, f"{page} has no section {name}"
    digit = re.search(r"\d", section.group(2))
    assert digit is not None
    at = section.start(2) + digit.start()
    edited = text[:at] + str((int(digit.group()) + 1) % 10) + text[at + 1 :]
    copy = tmp_path / where.name
    monkeypatch.setattr(readme_figures, "sources", lambda: [(copy, where)])
    copy.write_text(text)
    assert readme_figures.main(["--check"]) == 0, capsys.readouterr().err  # the page as committed passes
    copy.write_text(edited)
    assert readme_figures.main(["--check"]) == 1
    assert f"{page}: {name}" in capsys.readouterr().err
    assert copy.read_text() == edited  # --check rewrites nothing


def test_an_inline_figure_that_starts_a_line_is_refused():
    """A line that starts with an HTML comment is an HTML block in Markdown, which would end the paragraph
    the figure stands in: the script refuses it instead of rendering a broken page."""
    import readme_figures

    text = "The gate catches\n<!-- figures:one-run-catches --><!-- /figures:one-run-catches --> on one run.\n"
    with pytest.raises(ValueError, match="starts a line"):
        readme_figures.rendered(text, ROOT / "docs" / "environments.md")
    fine = text.replace("catches\n", "catches ")
    assert readme_figures.rendered(fine, ROOT / "docs" / "environments.md")[1] == ["one-run-catches"]


def test_every_option_named_in_the_docs_exists_and_every_option_is_documented():
    import docs_reference

    from pytest_diffaccel.config import OPTIONS

    known = {option.cli for option in OPTIONS}
    for page, text in documentation().items():
        named = set(re.findall(r"--diffaccel-[a-z-]+[a-z]", text))
        assert named - known == set(), f"{page.relative_to(ROOT)} names options that do not exist"
    reference = docs_reference.pattern().search(docs_reference.PAGE.read_text())
    assert reference is not None
    documented = set(re.findall(r"--diffaccel-[a-z-]+[a-z]", reference.group(2)))
    assert known - documented == set(), "options missing from docs/options.md: run scripts/docs_reference.py"
