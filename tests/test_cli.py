"""The command line: flags from the Config fields, four --help groups, no abbreviations, resuming's rules."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import main
from dqnkit import cli
from dqnkit.errors import UserError
from dqnkit.saved_config import resumed_config

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
    assert beyond[-4:] == ["--eval-target", "--eval-landed", "--eval-from-average", "--preset"]
    assert sections["actions"] == [
        "--help",
        "--config",
        "--resume",
        "--seeds",
        "--evaluate",
        "--video",
        "--plot",
        "--progress",
    ]
    every_field = {
        "--no-video" if f.name == "video" else "--" + f.name.replace("_", "-") for f in dataclasses.fields(main.Config)
    }
    assert every_field == {flag for flags in sections.values() for flag in flags} - {
        "--help",
        "--config",
        "--preset",
        "--resume",
        "--seeds",
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
    assert "--resume PATH [PATH ...] continue the run saved in PATH (a training_state.pth); several:" in text


def test_option_refuses_an_unknown_group() -> None:
    with pytest.raises(ValueError, match="unknown --help group"):
        cli.setting(1, "help", group="misc")


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
        "seeds": None,
    }
    assert cfg.n_step == 2 and cfg.double_dqn and cfg.learning_rate == main.PRESETS["fast"]["learning_rate"]


def test_resumed_config_takes_only_what_may_change() -> None:
    saved = main.Config(episodes=100, learning_rate=1e-3)
    asked = main.Config(episodes=300, learning_rate=1e-3, quiet=True)
    cfg = resumed_config(asked, {"episodes", "learning_rate"}, saved, "state.pth")
    assert cfg == dataclasses.replace(saved, episodes=300)  # quiet was not given: the saved value stays
    with pytest.raises(UserError, match=r"^--learning-rate, --seed cannot change when resuming: .* state\.pth$"):
        resumed_config(main.Config(learning_rate=0.1, seed=3), {"learning_rate", "seed"}, saved, "state.pth")


# ---------------------------------------------------------------- --config FILE


def _parse(argv: list[str]) -> main.Config:
    return cli.parse_command_line(argv, main.Config, main.PRESETS)[0]


def test_config_file_gives_the_settings_and_typed_flags_override_them(tmp_path: Path) -> None:
    path = tmp_path / "best_config.json"
    path.write_text(json.dumps({"learning_rate": 1e-3, "n_step": 3, "double_dqn": True, "eval_target": None}))
    cfg = _parse(["--config", str(path), "--n-step", "5"])
    assert (cfg.learning_rate, cfg.n_step, cfg.double_dqn) == (1e-3, 5, True)
    assert cfg.episodes == main.Config().episodes  # not in the file, not typed: the default
    run_config = dataclasses.asdict(main.Config(seed=7, learning_rate=2e-4, eval_every=10, eval_target=150.0))
    path.write_text(json.dumps(run_config))  # a run's config.json names every setting
    assert _parse(["--config", str(path)]) == main.Config(**run_config)
    path.write_text(json.dumps({"learning_rate": 1}))  # JSON has no 1.0: a whole number is a number
    assert _parse(["--config", str(path)]).learning_rate == 1.0


BAD_CONFIGS = [
    ("not JSON", "episodes = 3", [], "is not JSON (Expecting value at line 1)"),
    ("not an object", "[1, 2]", [], "must hold one JSON object of settings, not list"),
    ("unknown names", '{"episods": 3, "x": 1}', [], "names settings this version does not have: episods, x"),
    ("a string for a number", '{"learning_rate": "fast"}', [], "learning_rate must be float, got 'fast'"),
    ("a number for a switch", '{"double_dqn": 1}', [], "double_dqn must be bool, got 1"),
    ("a float for a count", '{"episodes": 3.5}', [], "episodes must be int, got 3.5"),
    ("a value the flag refuses", '{"episodes": 0}', [], "episodes (--episodes) must be at least 1, got 0"),
    ("an unknown choice", '{"loss": "l1"}', [], "loss must be one of mse, huber, got 'l1'"),
    ("settings that do not fit", '{"minibatch_size": 512, "replay_buffer_size": 100}', [], "must be more than"),
    ("with --resume", "{}", ["--resume", "x.pth"], "--config goes with a new run"),
    ("with --preset", "{}", ["--preset", "fast"], "--config and --preset cannot be used together"),
    ("with --evaluate", "{}", ["--evaluate", "x.pth"], "--config and --evaluate cannot be used together"),
]


@pytest.mark.parametrize("case, text, extra, message", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_a_bad_config_file_is_one_line(case: str, text: str, extra: list[str], message: str, tmp_path: Path, capsys):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(SystemExit) as stopped:
        _parse(["--config", str(path), *extra])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert err.startswith("main.py: error: ") and err.rstrip().endswith("(see --help)")


def test_a_missing_config_file_is_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        _parse(["--config", str(tmp_path / "nope.json")])
    assert (
        capsys.readouterr().err
        == f"main.py: error: --config {tmp_path / 'nope.json'}: No such file or directory (see --help)\n"
    )


def test_config_of_a_run_repeats_its_first_60_episodes_exactly(root: Path, tmp_path: Path) -> None:
    """Acceptance: ``python main.py --config runs/<run>/config.json`` repeats that run: metrics.csv columns 1-6."""
    first = ["--episodes", "60", "--max-steps", "60", "--no-video", "--seed", "1", "--quiet"]
    first += ["--learning-rate", "1e-3", "--n-step", "3", "--minibatch-size", "32", "--eval-every", "20"]
    for argv in (first, None):
        if argv is None:
            (run,) = (tmp_path / "runs").iterdir()
            argv = ["--config", str(run / "config.json")]
        done = subprocess.run(
            [sys.executable, str(root / "main.py"), *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2

    def columns(run: Path) -> list[list[str]]:
        return [line.split(",")[:6] for line in (run / "metrics.csv").read_text().splitlines()]

    assert columns(runs[0])[0] == ["episode", "total_steps", "score", "length", "epsilon", "average_100"]
    assert len(columns(runs[0])) == 61 and columns(runs[0]) == columns(runs[1])
