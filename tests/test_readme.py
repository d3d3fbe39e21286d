"""The README's code references and flag table stay true as the code moves, with no line counted by hand."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import main
from docs.flags_page import markdown_flags
from docs.relink import QUOTED_LINK, line_of, relink
from docs.tuning_page import SECTION, open_journal, rewrite

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
ANY_LINK = re.compile(r"\[(\w+\.py) line (\d+)\]\((\w+\.py)#L(\d+)\)")


def test_every_line_link_quotes_its_code_and_points_at_it(root: Path) -> None:
    """README.md is what ``python docs/generate.py`` writes: each link names the line of the code it quotes."""
    found = QUOTED_LINK.findall(README)
    assert len(found) >= 6
    assert len(ANY_LINK.findall(README)) == len(found), "a line link without the code it points at"
    assert relink(README, root) == README, "README.md's line links are out of date: python docs/generate.py"
    for code, name in found:
        n = line_of(code, (root / name).read_text(), name)
        assert code.split("(...)")[0] in (root / name).read_text().splitlines()[n - 1]


def test_relink_moves_a_link_with_its_code(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n\ny = f(x)\n")
    text = "the call `y = f(...)`, [a.py line 1](a.py#L1), and more"
    assert relink(text, tmp_path) == "the call `y = f(...)`, [a.py line 3](a.py#L3), and more"
    (tmp_path / "a.py").write_text("y = f(x)\ny = f(x)\n")
    with pytest.raises(ValueError, match="stands on 2 lines of a.py"):
        relink(text, tmp_path)
    (tmp_path / "a.py").write_text("z = 2\n")
    with pytest.raises(ValueError, match="stands on 0 lines"):
        relink(text, tmp_path)


def test_the_flags_page_is_the_help(root: Path) -> None:
    """docs/flags.md is what --help says, flag for flag and default for default."""
    expected = markdown_flags(main.Config, main.PRESETS)
    assert (root / "docs" / "flags.md").read_text() == expected, "docs/flags.md is out of date: python docs/generate.py"
    for f in dataclasses.fields(main.Config):
        flag = "--no-video" if f.name == "video" else "--" + f.name.replace("_", "-")
        assert f"| `{flag}" in expected, f"{flag} is missing from docs/flags.md"


def test_the_studies_on_the_tuning_page_are_what_their_journals_hold(root: Path) -> None:
    """docs/tuning.md's study sections are written from the journals: no figure of them is typed by hand."""
    page = (root / "docs" / "tuning.md").read_text()
    journals = [m["journal"] for m in SECTION.finditer(page)]
    assert len(journals) >= 2
    assert rewrite(page, root, main.Config) == page, "docs/tuning.md's studies are out of date: python docs/generate.py"
    for journal in journals:
        assert (root / journal).is_file()
        assert (root / "docs" / f"tuning-{open_journal(root / journal).study_name}-pareto.png").is_file()
