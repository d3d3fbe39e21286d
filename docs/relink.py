"""Line links to the code in README.md, generated from the code.

A README link to code quotes the code, then names its line: "`loss.backward()`, [agent.py line 203](agent.py#L203)".
Nobody counts lines: :func:`relink` finds the quoted code in the file and writes its line number,
and a test fails when README.md is not what it writes. After moving code, ``python docs/generate.py``
rewrites the README's line numbers (and docs/flags.md, the ``--help`` of ``main.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# "`code`, [agent.py line 123](agent.py#L123)": the quoted code, then a link to its line. "(...)" in the
# quote stands for arguments left out: what comes before it must stand on the line.
QUOTED_LINK = re.compile(r"`(?P<code>[^`]+)`,\s+\[(?P<file>\w+\.py) line \d+\]\((?P=file)#L\d+\)")


def line_of(code: str, text: str, where: str) -> int:
    """The number of the one line of ``text`` that holds ``code`` (up to any "(...)"); ValueError if not one."""
    needle = code.split("(...)")[0]
    found = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    if len(found) != 1:
        raise ValueError(f"`{code}` stands on {len(found)} lines of {where}, not 1: quote more of the line")
    return found[0]


def relink(markdown: str, root: Path = ROOT) -> str:
    """``markdown`` with every quoted-code link pointing at the line that holds the quoted code now."""

    def link(match: re.Match[str]) -> str:
        code, name = match["code"], match["file"]
        n = line_of(code, (root / name).read_text(), name)
        return f"`{code}`, [{name} line {n}]({name}#L{n})"

    return QUOTED_LINK.sub(link, markdown)
