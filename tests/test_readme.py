"""The README and the docs say what the code does: their figures match the committed files that produced
them, and every option they name exists (and every option is documented, in the generated reference)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def documentation() -> dict[Path, str]:
    """What a user reads: the README, the changelog (the docs site includes it) and every docs page."""
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return {page: page.read_text() for page in pages}


def test_readme_figures_match_their_committed_files(capsys):
    import readme_figures

    assert readme_figures.main(["--check"]) == 0, capsys.readouterr().err
    for name, pages in readme_figures.placed().items():
        assert pages, f"figure section {name} is in no page (README.md or docs/)"
        for page in pages:
            body = readme_figures.pattern(name).search(page.read_text())
            assert body is not None and body.group(2).strip(), f"{page.name}: section {name} is empty"


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
