"""benchmarks/speed.py: the step breakdown adds up and leaves the code as it was; the calibration counts its steps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import agent
import main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import speed  # noqa: E402


def test_breakdown_parts_add_up_and_restore_the_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = (agent.Agent.act, agent.Agent.learn, agent.ReplayMemory.push, main.play_episode, main.make_env)
    split = speed.breakdown(episodes=3, seed=0)
    assert (agent.Agent.act, agent.Agent.learn, agent.ReplayMemory.push, main.play_episode, main.make_env) == before
    parts = split["seconds"]
    assert set(parts) >= {"environment step", "acting (epsilon-greedy)", "storing the transition"}
    assert split["steps"] > 100 and all(seconds > 0 for seconds in parts.values())  # 100+ steps: it learned
    assert sum(parts.values()) == pytest.approx(split["loop_seconds"])
    assert list(tmp_path.iterdir()) == []  # the run's files went to a temporary folder


def test_env_step_calibration_counts_its_steps() -> None:
    calibration = speed.env_step_us(steps=50, seed=0, chunks=5)
    assert calibration["steps"] == 50 and calibration["chunk_steps"] == 10 and len(calibration["chunks_us"]) == 5
    assert calibration["median_us"] == sorted(calibration["chunks_us"])[2]
    assert all(v > 0 for v in calibration["chunks_us"])


def test_times_env_alone_by_hand() -> None:
    # 100 s for 400,000 steps at 50 us each: the environment alone is 20 s, the run 5 times that.
    assert speed.times_env_alone(100.0, 400_000, 50.0) == pytest.approx(5.0)
