"""What the episode loop stores: a time-limit cut-off is never a terminal transition.

``main.play_episode`` drives a real agent (built as ``main.train`` builds it: the textbook agent,
the options' memories, the NumPy twin) through a stub environment whose observation is the step
count, so every stored row says which step it came from; the test reads the replay memory.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers import TimeLimit

import main
from dqnkit.agents import build_agent

MAX_STEPS = 5


class Countdown(gym.Env):
    """Observation ``t`` (all 8 numbers) after ``t`` steps and reward 1 each; terminates at ``terminate_at``."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (8,), np.float32)
    action_space = gym.spaces.Discrete(4)

    def __init__(self, terminate_at: int | None) -> None:
        self.terminate_at = terminate_at

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(8, dtype=np.float32), {}

    def step(self, action: int):
        self.t += 1
        return np.full(8, self.t, dtype=np.float32), 1.0, self.t == self.terminate_at, False, {}


# Each episode as (terminate_at, what env.step says at the last step: terminated, truncated), with a
# TimeLimit of MAX_STEPS around it as make_env puts one.
EPISODES = {
    "cut off by the time limit": (None, False, True),
    "terminated before the limit": (3, True, False),
    "terminated on the last allowed step": (MAX_STEPS, True, True),
}

# The rows the memory must hold after one episode, as (state, next_state, reward, done), with
# discount factor 0.5. One-step transitions: done only where the episode terminated.
ONE_STEP = {
    "cut off by the time limit": [(0, 1, 1.0, 0), (1, 2, 1.0, 0), (2, 3, 1.0, 0), (3, 4, 1.0, 0), (4, 5, 1.0, 0)],
    "terminated before the limit": [(0, 1, 1.0, 0), (1, 2, 1.0, 0), (2, 3, 1.0, 1)],
    "terminated on the last allowed step": [
        (0, 1, 1.0, 0),
        (1, 2, 1.0, 0),
        (2, 3, 1.0, 0),
        (3, 4, 1.0, 0),
        (4, 5, 1.0, 1),
    ],
}
# Three-step transitions, return 1 + 0.5 + 0.25 = 1.75: a cut-off episode stores only the three whose
# return is complete (never done); a terminated one stores all, the last ones with their shorter
# returns (1.5, 1.0) and done, as nothing lies beyond the end.
THREE_STEP = {
    "cut off by the time limit": [(0, 3, 1.75, 0), (1, 4, 1.75, 0), (2, 5, 1.75, 0)],
    "terminated before the limit": [(0, 3, 1.75, 1), (1, 3, 1.5, 1), (2, 3, 1.0, 1)],
    "terminated on the last allowed step": [
        (0, 3, 1.75, 0),
        (1, 4, 1.75, 0),
        (2, 5, 1.75, 1),
        (3, 5, 1.5, 1),
        (4, 5, 1.0, 1),
    ],
}

# Agents as main.train builds them, by the Config fields that differ from the default.
AGENTS = {
    "textbook": {},
    "prioritized replay": {"prioritized_replay": True},
    "numpy twin": {"backprop": "numpy"},
    "numpy twin, prioritized replay": {"backprop": "numpy", "prioritized_replay": True},
    "n-step": {"n_step": 3},
    "n-step, prioritized replay": {"n_step": 3, "prioritized_replay": True},
    "numpy twin, n-step, prioritized replay, double dqn": {
        "backprop": "numpy",
        "n_step": 3,
        "prioritized_replay": True,
        "double_dqn": True,
    },
}


def stored_rows(memory) -> list[tuple[float, float, float, float]]:
    """The memory's rows in the order they were pushed, as (state, next_state, reward, done)."""
    n = len(memory)
    columns = (memory.states[:n, 0], memory.next_states[:n, 0], memory.rewards[:n, 0], memory.dones[:n, 0])
    return [tuple(float(x) for x in row) for row in zip(*columns, strict=True)]


@pytest.mark.parametrize("agent_name", AGENTS)
@pytest.mark.parametrize("episode_name", EPISODES)
def test_play_episode_stores_terminated_never_truncated(agent_name: str, episode_name: str) -> None:
    """Two episodes in a row: each stores its rows with done = terminated, and none reaches into the next."""
    changes = AGENTS[agent_name]
    cfg = main.Config(max_steps=MAX_STEPS, discount_factor=0.5, replay_buffer_size=50, **changes)
    terminate_at, terminated, truncated = EPISODES[episode_name]
    env = TimeLimit(Countdown(terminate_at), MAX_STEPS)
    agent = build_agent(cfg, env, torch.device("cpu"), np.random.default_rng(0))
    length = terminate_at or MAX_STEPS
    for reset_seed in (0, None):
        result = main.play_episode(env, agent, cfg, 1.0, 0, reset_seed)
        assert result == (float(length), length, terminated, truncated, 1.0)
    expected = (THREE_STEP if cfg.n_step == 3 else ONE_STEP)[episode_name]
    assert stored_rows(agent.memory) == expected * 2
