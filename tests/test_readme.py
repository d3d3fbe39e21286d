"""The README's code references and flag table stay true as the code moves."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import main
from dqnkit.cli import build_parser

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


def test_flag_table_lists_every_config_field() -> None:
    for action in build_parser(main.Config, main.PRESETS)._actions:
        if action.dest in {f.name for f in dataclasses.fields(main.Config)}:
            assert f"| `{action.option_strings[0]}" in README, f"{action.option_strings[0]} is missing from the README"
