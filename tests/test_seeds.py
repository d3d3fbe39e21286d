"""``python main.py --seeds``: N seeds trained together are N plain runs (``dqnkit/run/batch.py``).

Each seed's run is ``main.train`` itself, its agent's arithmetic stacked with the others'; its folder must hold
what ``python main.py --seed S`` leaves, with the same numbers. Equal to float tolerance (rtol 1e-5), as in
tests/test_batched.py: the stacked products may round differently from N separate ones on another BLAS.
"""

from __future__ import annotations

import csv
import dataclasses
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import main
from dqnkit import cli
from dqnkit.run.batch import memory_problem, seed_checkpoint, seed_configs, train_seeds
from dqnkit.settings import apply_preset

ROOT = Path(__file__).resolve().parent.parent
SMALL = main.Config(episodes=12, max_steps=200, video=False, quiet=True)
NUMBERS = ("episode", "total_steps", "score", "length", "epsilon", "average_100")


def _metrics(run_dir: Path) -> np.ndarray:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return np.array([[float(row[k]) for k in NUMBERS] for row in csv.DictReader(fh)])


def _plain_runs(cfgs: list[main.Config], root: Path) -> list[main.TrainResult]:
    return [main.train(cfg, out=lambda _: None, root=root) for cfg in cfgs]


def _assert_same_runs(together: list, alone: list) -> None:
    for a, b in zip(together, alone, strict=True):
        assert a.run_dir.name.split("__")[1] == b.run_dir.name.split("__")[1]  # seedS
        np.testing.assert_allclose(_metrics(a.run_dir), _metrics(b.run_dir), rtol=1e-5)
        weights_a, weights_b = torch.load(a.last_weights), torch.load(b.last_weights)
        for key in weights_b:
            # Hundreds of Adam steps later: a last-bit difference divided by a tiny sqrt(v) grows to ~1e-5.
            torch.testing.assert_close(weights_a[key], weights_b[key], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("preset", [None, "fast"], ids=["default", "preset"])
def test_seeds_trained_together_are_the_plain_runs_of_those_seeds(tmp_path: Path, preset: str | None) -> None:
    """Metrics, last weights and the saved Adam state of each seed equal its own plain run's. The preset's runs
    check their greedy rule every 4 episodes (3 episodes each), so its evaluations read the stack's weights."""
    cfg = SMALL if preset is None else apply_preset(dataclasses.replace(SMALL, eval_every=4, eval_episodes=3), "fast")
    cfg = dataclasses.replace(cfg, eval_every=4, eval_episodes=3, eval_from_average=None)
    cfgs = seed_configs(cfg, [3, 4, 5])
    together = train_seeds(main.train, cfgs, [None] * 3, root=tmp_path / "together", out=lambda _: None)
    alone = _plain_runs(cfgs, tmp_path / "alone")
    _assert_same_runs(together, alone)
    for a, b in zip(together, alone, strict=True):
        evals = [_column(r.run_dir, "eval_score") for r in (a, b)]
        assert evals[0][3] != "" and np.allclose(np.float64(evals[0][3]), np.float64(evals[1][3]), rtol=1e-5)
        adam_a, adam_b = (torch.load(r.state_path, weights_only=False)["agent"]["optimizer"] for r in (a, b))
        assert adam_a["state"][0]["step"] == adam_b["state"][0]["step"] > 0
        moments = (adam["state"][0]["exp_avg_sq"] for adam in (adam_a, adam_b))
        torch.testing.assert_close(*moments, rtol=1e-4, atol=1e-9)


def _column(run_dir: Path, name: str) -> list[str]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [row[name] for row in csv.DictReader(fh)]


def test_a_batch_of_one_seed_is_the_plain_run(tmp_path: Path) -> None:
    cfg = dataclasses.replace(SMALL, seed=8)
    (together,) = train_seeds(main.train, [cfg], [None], root=tmp_path / "together", out=lambda _: None)
    _assert_same_runs([together], _plain_runs([cfg], tmp_path / "alone"))


def test_each_seed_that_solves_writes_its_own_checkpoint(tmp_path: Path) -> None:
    """A target every run reaches at episode 100 (the original rule needs 100 episodes): two checkpoints."""
    flags = ["--seeds", "0", "1", "--episodes", "150", "--max-steps", "20", "--target-score", "-100000", "--no-video"]
    done = _main(tmp_path, *flags)
    assert done.returncode == 0, done.stderr
    for seed in (0, 1):
        assert (tmp_path / f"checkpoint-seed{seed}.pth").is_file()
        (run,) = (tmp_path / "runs").glob(f"*__seed{seed}__*")
        assert len(_column(run, "episode")) == 100 and (run / "solved.pth").is_file()
    assert not (tmp_path / "checkpoint.pth").exists()
    assert seed_checkpoint("out/best.pth", 7) == str(Path("out/best-seed7.pth"))


def _main(cwd: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "1", "2", "1"], "--seeds names seed 1 twice: each seed is a run of its own"),
        (["--seeds", "4-6", "5"], "--seeds names seed 5 twice"),
        (["--seeds", "3-1"], "a range goes up, got 3-1"),
        (["--seeds", "1", "2", "--seed", "3"], "--seed and --seeds cannot be used together"),
        (["--seeds", "1", "2", "--dueling"], "--seeds cannot train --dueling: the stacked networks"),
        (["--seeds", "1", "--backprop", "numpy"], "--backprop autograd"),
        (["--seeds", "1", "--evaluate", "x.pth"], "--evaluate and --seeds cannot be used together"),
    ],
)
def test_bad_seeds_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    done = _main(tmp_path, *args)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_too_many_seeds_for_the_memory_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    done = _main(tmp_path, "--seeds", "0-3", "--replay-buffer-size", "1000000000", "--no-video")
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    # 4 x (1e9 transitions x 19 floats x 4 bytes + 64 MiB) = 283.4 GiB
    assert "4 seeds need about 283.4 GiB" in done.stderr and "give fewer seeds" in done.stderr
    assert not (tmp_path / "runs").exists()
    cfgs = seed_configs(main.Config(replay_buffer_size=1000, video=False), [0, 1])
    assert memory_problem(cfgs, 8, available=2 * 64 * 2**20 + 2 * 1000 * 19 * 4) is None  # exactly enough
    assert memory_problem(cfgs, 8, available=2 * 64 * 2**20 + 2 * 1000 * 19 * 4 - 1) is not None
    filmed = seed_configs(main.Config(replay_buffer_size=1000), [0, 1])  # each seed's video worker: 400 MiB more
    assert memory_problem(filmed, 8, available=2 * 464 * 2**20 + 2 * 1000 * 19 * 4 - 1) is not None


def test_a_diverging_batch_is_one_line_naming_the_seed_and_every_run_keeps_its_weights(tmp_path: Path) -> None:
    """The stack is shared: a loss that becomes infinite stops every seed's run, each keeping its last good weights."""
    done = _main(tmp_path, "--seeds", "0", "1", "--learning-rate", "1e8", "--episodes", "30", "--no-video")
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("main.py: error: seed 0: training stopped in episode ")
    assert "the loss became inf" in done.stderr
    for seed in (0, 1):
        (run,) = (tmp_path / "runs").glob(f"*__seed{seed}__*")
        assert (run / "last.pth").is_file() and (run / "metrics.csv").is_file()


def test_ctrl_c_stops_every_seed_and_resume_continues_them_together(tmp_path: Path) -> None:
    """A real SIGINT: every run stops after its episode and saves its state; resuming them all gives what one
    uninterrupted batch gives."""
    flags = ["--episodes", "25", "--max-steps", "150", "--no-video", "--log-every", "1"]
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    stopped.mkdir(), whole.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--seeds", "0", "1", *flags],
        cwd=stopped,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _started(stopped, rows=3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err
    (line,) = [x for x in out.splitlines() if x.startswith("continue them together with: ")]
    command = line.split("python main.py ")[1].split()
    assert command[0] == "--resume" and len(command) == 3
    for seed in (0, 1):
        (run,) = (stopped / "runs").glob(f"*__seed{seed}__*")
        assert 3 <= len(_column(run, "episode")) < 25
    resumed = _main(stopped, *command)
    assert resumed.returncode == 0, resumed.stderr
    assert _main(whole, "--seeds", "0", "1", *flags).returncode == 0
    for seed in (0, 1):
        (a,) = (stopped / "runs").glob(f"*__seed{seed}__*")
        (b,) = (whole / "runs").glob(f"*__seed{seed}__*")
        np.testing.assert_allclose(_metrics(a), _metrics(b), rtol=1e-5)
        assert len(_column(a, "episode")) == 25


def _started(cwd: Path, rows: int) -> bool:
    runs = list((cwd / "runs").glob("*/metrics.csv")) if (cwd / "runs").exists() else []
    return len(runs) == 2 and all(len(p.read_text().splitlines()) > rows for p in runs)


def test_seeds_take_single_seeds_and_ranges_in_order() -> None:
    _, actions, _ = cli.parse_command_line(["--seeds", "3", "5-7", "0"], main.Config, main.PRESETS)
    assert actions["seeds"] == [3, 5, 6, 7, 0]
    checkpoints = [c.checkpoint for c in seed_configs(main.Config(), [3, 5])]
    assert checkpoints == ["checkpoint-seed3.pth", "checkpoint-seed5.pth"]


def test_seeds_train_the_settings_of_a_config_file(tmp_path: Path) -> None:
    """tune.py's best_config.json on several seeds: the file's settings, each seed its own."""
    config = tmp_path / "best_config.json"
    config.write_text('{"learning_rate": 0.002, "seed": 7, "double_dqn": true}')
    cfg, actions, _ = cli.parse_command_line(["--config", str(config), "--seeds", "1", "2"], main.Config, main.PRESETS)
    assert actions["seeds"] == [1, 2] and cfg.learning_rate == 0.002 and cfg.double_dqn
    assert [c.seed for c in seed_configs(cfg, actions["seeds"])] == [1, 2]
