"""The README's code references and flag table stay true as the code moves."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import main
from dqnkit.cli import markdown_flags

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
# "`code`, [agent.py line 123](agent.py#L123)": the quoted code must stand on that line.
QUOTED_LINK = re.compile(r"`([^`]+)`,\s+\[(\w+\.py) line (\d+)\]\(\2#L\3\)")
ANY_LINK = re.compile(r"\[(\w+\.py) line (\d+)\]\((\w+\.py)#L(\d+)\)")


def test_quoted_code_stands_on_the_linked_line(root: Path) -> None:
    found = QUOTED_LINK.findall(README)
    assert len(found) >= 6
    for code, name, line in found:
        text = (root / name).read_text().splitlines()[int(line) - 1]
        assert code.split("(...)")[0] in text, f"README quotes {code!r} at {name} line {line}, which reads {text!r}"


def test_every_line_link_is_consistent(root: Path) -> None:
    for name, line, target, anchor in ANY_LINK.findall(README):
        assert (name, line) == (target, anchor)
        assert int(line) <= len((root / name).read_text().splitlines())


def test_the_flags_page_is_the_help(root: Path) -> None:
    """docs/flags.md is what --help says, flag for flag and default for default."""
    expected = markdown_flags(main.Config, main.PRESETS)
    assert (root / "docs" / "flags.md").read_text() == expected, (
        "docs/flags.md is out of date: python -c 'import main; from dqnkit.cli import markdown_flags; "
        "print(markdown_flags(main.Config, main.PRESETS), end=\"\")' > docs/flags.md"
    )
    for f in dataclasses.fields(main.Config):
        flag = "--no-video" if f.name == "video" else "--" + f.name.replace("_", "-")
        assert f"| `{flag}" in expected, f"{flag} is missing from docs/flags.md"
