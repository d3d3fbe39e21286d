"""The command line: flags from the Config fields, four --help groups, no abbreviations, resuming's rules."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

import main
from dqnkit import cli
from dqnkit.errors import UserError

GROUPS = ["the original hyperparameters", "run and output", "beyond the original", "actions"]


def _help() -> str:
    return cli.build_parser(main.Config, main.PRESETS).format_help()


def _sections(help_text: str) -> dict[str, list[str]]:
    """Each ``--help`` group's title and the flags listed under it, in order."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in help_text.splitlines():
        if re.match(r"^\S.*:$", line):
            current = sections.setdefault(line[:-1], [])
        elif match := re.match(r"^  (-\w, )?(--[\w-]+)", line):
            current.append(match.group(2))
    return sections


def test_help_shows_four_groups_each_flag_in_its_own() -> None:
    sections = _sections(_help())
    assert list(sections) == GROUPS
    assert sections["the original hyperparameters"] == [
        "--episodes",
        "--max-steps",
        "--epsilon-start",
        "--epsilon-end",
        "--epsilon-decay",
        "--learning-rate",
        "--minibatch-size",
        "--discount-factor",
        "--replay-buffer-size",
        "--interpolation-parameter",
        "--learn-every",
        "--hidden-size",
    ]
    assert sections["run and output"] == [
        "--env",
        "--seed",
        "--target-score",
        "--keep-training",
        "--checkpoint",
        "--no-video",
        "--video-every",
        "--log-every",
        "--save-every",
        "--quiet",
        "--tensorboard",
        "--device",
        "--backprop",
    ]
    beyond = sections["beyond the original"]
    assert beyond[0] == "--double-dqn"
    assert beyond[-4:] == ["--eval-episodes", "--eval-target", "--eval-landed", "--preset"]
    assert sections["actions"] == ["--help", "--resume", "--evaluate", "--video", "--plot", "--progress"]
    every_field = {
        "--no-video" if f.name == "video" else "--" + f.name.replace("_", "-") for f in dataclasses.fields(main.Config)
    }
    assert every_field == {flag for flags in sections.values() for flag in flags} - {
        "--help",
        "--preset",
        "--resume",
        "--evaluate",
        "--video",
        "--plot",
        "--progress",
    }


def test_each_config_field_declares_its_group() -> None:
    for f in dataclasses.fields(main.Config):
        assert f.metadata["group"] in GROUPS[:3], f.name


def test_help_shows_no_empty_defaults_and_none_for_switches() -> None:
    text = " ".join(_help().split())  # the formatter wraps lines anywhere
    assert "(default: None)" not in text
    assert "(default: True)" not in text and "(default: False)" not in text
    assert "most training episodes (default: 2000)" in text
    assert "--resume PATH continue the run saved in PATH (a training_state.pth) --evaluate" in text


def test_option_refuses_an_unknown_group() -> None:
    with pytest.raises(ValueError, match="unknown --help group"):
        cli.option(1, "help", group="misc")


def test_episode_abbreviation_is_refused_with_one_line(root: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(root / "main.py"), "--episode", "3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["main.py: error: unrecognized arguments: --episode 3 (see --help)"]
    assert not (tmp_path / "runs").exists()  # refused before anything ran


def test_help_exits_at_once_without_torch(root: Path, tmp_path: Path) -> None:
    code = "import sys, main\ntry:\n    main.main(['--help'])\nexcept SystemExit:\n    print('torch' in sys.modules)\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "False"


def test_given_flags_and_preset() -> None:
    cfg, actions, given = cli.parse_command_line(["--preset", "fast", "--n-step", "2"], main.Config, main.PRESETS)
    assert given == {"n_step"} and actions == {
        "resume": None,
        "evaluate": None,
        "eval_video": False,
        "plot": None,
        "progress": None,
    }
    assert cfg.n_step == 2 and cfg.dueling and cfg.learning_rate == main.PRESETS["fast"]["learning_rate"]


def test_resumed_config_takes_only_what_may_change() -> None:
    saved = main.Config(episodes=100, learning_rate=1e-3)
    asked = main.Config(episodes=300, learning_rate=1e-3, quiet=True)
    cfg = cli.resumed_config(asked, {"episodes", "learning_rate"}, saved, "state.pth")
    assert cfg == dataclasses.replace(saved, episodes=300)  # quiet was not given: the saved value stays
    with pytest.raises(UserError, match=r"^--learning-rate, --seed cannot change when resuming: .* state\.pth$"):
        cli.resumed_config(main.Config(learning_rate=0.1, seed=3), {"learning_rate", "seed"}, saved, "state.pth")
