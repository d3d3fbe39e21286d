"""Rewrite the generated parts of the documentation: the README's line links to code, docs/flags.md,
and the study sections of docs/tuning.md with their Pareto plots (from the journals in benchmarks/results/).

    python docs/generate.py

Run it after moving code or changing a flag; tests/test_readme.py fails until it has run.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import main  # noqa: E402
from docs.flags_page import markdown_flags  # noqa: E402
from docs.relink import relink  # noqa: E402
from docs.tuning_page import rewrite  # noqa: E402

if __name__ == "__main__":
    readme = ROOT / "README.md"
    readme.write_text(relink(readme.read_text(), ROOT))
    (ROOT / "docs" / "flags.md").write_text(markdown_flags(main.Config, main.PRESETS))
    tuning = ROOT / "docs" / "tuning.md"
    tuning.write_text(rewrite(tuning.read_text(), ROOT, main.Config, plots=ROOT / "docs"))
    print("rewrote the line links of README.md, docs/flags.md, and the studies of docs/tuning.md")
