"""Long checks that the agent really learns. Run with ``python -m pytest -m slow`` (a few minutes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import main
from agent import Agent
from dqnkit.envs import make_env
from dqnkit.settings import apply_preset


@pytest.mark.slow
def test_default_run_solves_lunar_lander(tmp_path: Path) -> None:
    """The original hyperparameters reach a 100-episode average of 200 within 2,000 episodes."""
    cfg = main.Config(seed=0, video=False, checkpoint=str(tmp_path / "checkpoint.pth"))
    result = main.train(cfg, out=lambda _: None, root=tmp_path)
    assert result.solved_episode is not None, f"not solved; last average {np.mean(result.scores[-100:]):.1f}"
    assert np.mean(result.scores[-100:]) >= 200.0

    # The saved weights fly a greedy lander well too.
    agent = Agent(8, 4, rng=np.random.default_rng(0))
    agent.local_qnetwork.load_state_dict(torch.load(cfg.checkpoint, weights_only=True))
    env = make_env("LunarLander-v3", 1000)
    scores = []
    for episode in range(10):
        state, _ = env.reset(seed=10_000 + episode)
        score, done = 0.0, False
        while not done:
            state, reward, terminated, truncated, _ = env.step(agent.greedy_action(state))
            score += float(reward)
            done = terminated or truncated
        scores.append(score)
    assert np.mean(scores) >= 150.0, scores


@pytest.mark.slow
def test_preset_saves_an_agent_that_lands_fast_and_sure(tmp_path: Path) -> None:
    """--preset fast, seed 3: its stopping rule saves an agent that passes issue 15's bar on unseen seeds."""
    from dqnkit.report.evaluation import evaluate

    cfg = apply_preset(main.Config(seed=3, video=False, checkpoint=str(tmp_path / "checkpoint.pth")), "fast")
    result = main.train(cfg, out=lambda _: None, root=tmp_path)
    assert result.solved_episode is not None, "the stopping rule never passed"
    unseen = evaluate(cfg.checkpoint, episodes=100, seed=2_000_000, out=lambda _: None)
    landed = unseen.outcomes.count("landed") / 100
    assert np.mean(unseen.scores) >= 250.0 and landed >= 0.95 and np.mean(unseen.lengths) < 350, (
        f"mean {np.mean(unseen.scores):.1f}, landed {landed:.0%}, length {np.mean(unseen.lengths):.0f}"
    )
