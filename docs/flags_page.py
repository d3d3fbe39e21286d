"""``docs/flags.md``: every flag of ``python main.py --help`` as Markdown tables (``python docs/generate.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dqnkit.cli import build_parser


def markdown_flags(config_cls: type, presets: Mapping[str, Mapping[str, Any]]) -> str:
    """Every flag of ``--help`` as Markdown tables, one per group: the text of ``docs/flags.md``."""
    parser = build_parser(config_cls, presets)
    lines = ["# Command-line flags", "", "`python main.py --help` prints the same, grouped the same way.", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.dest != "help"]
        if not actions:
            continue
        title, text = group.title.capitalize(), (group.description or "").capitalize()
        lines += [f"## {title}", "", f"{text}.", "", "| flag | default | meaning |", "|---|---|---|"]
        for action in actions:
            flag = action.option_strings[0] + (f" {action.metavar}" if action.metavar else "")
            if action.choices:
                flag += " {" + ",".join(map(str, action.choices)) + "}"
            default = "" if action.nargs == 0 or action.default is None else f"`{action.default}`"
            meaning = (action.help or "").replace("|", "\\|")
            lines.append(f"| `{flag}` | {default} | {meaning} |")
        lines.append("")
    return "\n".join(lines)
