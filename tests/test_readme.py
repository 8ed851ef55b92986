"""The README says what the code does: its figures match the committed files that produced them, and
every option it names exists (and every option is documented)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_figures_match_their_committed_files(capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    import readme_figures

    assert readme_figures.main(["--check"]) == 0, capsys.readouterr().err
    text = (ROOT / "README.md").read_text()
    for name in readme_figures.SECTIONS:
        body = readme_figures.pattern(name).search(text)
        assert body is not None and body.group(2).strip(), f"README section {name} is missing or empty"


def test_every_option_in_the_readme_exists_and_every_option_is_in_the_readme():
    from pytest_diffaccel.config import OPTIONS

    text = (ROOT / "README.md").read_text()
    named = set(re.findall(r"--diffaccel-[a-z-]+[a-z]", text))
    known = {option.cli for option in OPTIONS}
    assert named - known == set()
    assert known - named == set()
