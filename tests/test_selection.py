"""benchmarks/selection.py: one row per evaluation, on the selection and the test seeds, training untouched."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import selection  # noqa: E402


def test_rows_at_every_evaluation_and_the_training_of_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    flags = ["--seed", "2", "--episodes", "4", "--every", "2", "--selection-episodes", "2", "--test-episodes", "1"]
    result = selection.run([*flags, "--no-preset", "--set", "max_steps=60", "minibatch_size=16"])
    assert [row["episode"] for row in result["rows"]] == [2, 4]
    assert all(len(row["selection"]) == 3 and 0 <= row["test"]["landed_share"] <= 1 for row in result["rows"])
    cfg = main.Config(seed=2, episodes=4, max_steps=60, minibatch_size=16, video=False, quiet=True)
    assert result["scores"] == main.train(cfg, out=lambda _: None).scores  # evaluating changed nothing
    assert len(capsys.readouterr().err.splitlines()) == 2


def test_a_bad_override_is_one_line() -> None:
    with pytest.raises(SystemExit, match=r"^selection.py: error: --set wants FIELD=VALUE"):
        selection.overrides(["no_such_field=3"], main.Config())
    assert selection.overrides(["n_step=3", "dueling=true"], main.Config()) == {"n_step": 3, "dueling": True}
