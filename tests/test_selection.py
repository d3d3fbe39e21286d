"""benchmarks/selection.py: one row per evaluation, on the selection and the test seeds, training untouched."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import common  # noqa: E402
import selection  # noqa: E402


def test_rows_at_every_evaluation_and_the_training_of_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--seed", "2", "--episodes", "4", "--every", "2", "--selection-episodes", "2", "--test-episodes", "1"]
    result = selection.run([*flags, "--no-preset", "--set", "max_steps=60", "minibatch_size=16"])
    assert [row["episode"] for row in result["rows"]] == [2, 4]
    keys = {"mean_score", "landed_share", "on_pad_share", "mean_length"}
    assert all(set(row["selection"]) == set(row["test"]) == keys for row in result["rows"])
    assert all(0 <= row["test"]["on_pad_share"] <= row["test"]["landed_share"] <= 1 for row in result["rows"])
    assert all(row["test"]["mean_length"] <= 60 for row in result["rows"])  # --set max_steps=60 took
    assert [line.split(":")[0] for line in capsys.readouterr().err.splitlines()] == ["episode 2", "episode 4"]
    # python main.py itself, in its own process, on the same settings: evaluating changed nothing.
    run = ["--seed", "2", "--episodes", "4", "--max-steps", "60", "--minibatch-size", "16", "--no-video", "--quiet"]
    _, _, expected = common.main_py([*run, "--checkpoint", str(tmp_path / "w.pth")], tmp_path)
    assert result["scores"] == expected["score"].tolist() and len(result["scores"]) == 4


def test_overrides_are_typed_and_checked_like_main_s_flags() -> None:
    cfg = main.Config()
    assert selection.overrides(["n_step=3", "dueling=true"], cfg) == {"n_step": 3, "dueling": True}
    assert selection.overrides(["eval_target=250", "loss=huber", "double_dqn=no"], cfg) == {
        "eval_target": 250.0,
        "loss": "huber",
        "double_dqn": False,
    }


@pytest.mark.parametrize(
    "pair, message",
    [
        ("no_such_field=3", "--set wants FIELD=VALUE with a Config field, got 'no_such_field=3'"),
        ("n_step", "--set wants FIELD=VALUE"),
        ("n_step=abc", "--set n_step=abc: expected a whole number, got 'abc'"),
        ("minibatch_size=0", "--set minibatch_size=0: must be at least 1, got 0"),
        ("learning_rate=nan", "--set learning_rate=nan: expected a finite number"),
        ("dueling=maybe", "--set dueling=maybe: expected true or false"),
        ("loss=l1", "--set loss=l1: expected one of mse, huber"),
    ],
)
def test_a_bad_override_is_one_line(pair: str, message: str) -> None:
    with pytest.raises(SystemExit, match=r"^selection.py: error: ") as exc:
        selection.overrides([pair], main.Config())
    assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "argv, names",
    [
        (["--every", "0"], "--every"),
        (["--episodes", "-3"], "--episodes"),
        (["--selection-episodes", "0"], "--selection-episodes"),
        (["--test-episodes", "x"], "--test-episodes"),
        (["--seed", "-1"], "--seed"),
        (["--no-preset", "--set", "minibatch_size=200", "replay_buffer_size=100"], "--replay-buffer-size (100)"),
    ],
)
def test_bad_arguments_are_one_line_before_training(
    argv: list[str], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        selection.run(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("selection.py: error: ") and err.count("\n") == 1
    assert names in err
