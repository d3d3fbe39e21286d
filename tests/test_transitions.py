"""What the episode loop stores and hands the agent: a time-limit cut-off is never a terminal transition.

``main.play_episode`` drives a real agent (built as ``main.train`` builds it: the textbook agent,
the options' memories, the NumPy twin) through a stub environment whose observation is the step
count, so every stored row says which step it came from; the test reads the replay memory. Then
the epsilon each step acts with, and how ``main.train`` seeds: once, as the docstrings say.
"""

from __future__ import annotations

import random
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers import TimeLimit

import main
from dqnkit.learn import build_agent
from dqnkit.run.hooks import Episode, Hook

MAX_STEPS = 5


class Countdown(gym.Env):
    """Observation ``t`` (all 8 numbers) after ``t`` steps and reward 1 each; terminates at ``terminate_at``."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (8,), np.float32)
    action_space = gym.spaces.Discrete(4)

    def __init__(self, terminate_at: int | None) -> None:
        self.terminate_at = terminate_at
        self.reset_seeds: list[int | None] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.reset_seeds.append(seed)
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


# ---------------------------------------------------------------- what the loop hands the agent


@pytest.mark.parametrize(
    ("decay_steps", "expected"),
    [(0, [0.3] * 5), (10, [0.505, 0.406, 0.307, 0.208, 0.109])],
    ids=["fixed epsilon", "linear schedule, from step 5 of 10"],
)
def test_play_episode_acts_with_the_epsilon_of_each_step(decay_steps: int, expected: list[float]) -> None:
    """Epsilon 0.3 at every step; or the linear schedule (1.0 to 0.01 over 10 steps) at the run's steps 5 to 9."""
    cfg = main.Config(max_steps=MAX_STEPS, epsilon_decay_steps=decay_steps)
    env = TimeLimit(Countdown(None), MAX_STEPS)
    agent = build_agent(cfg, env, torch.device("cpu"), np.random.default_rng(0))
    seen: list[float] = []
    act = agent.act

    def spy(state: np.ndarray, epsilon: float = 0.0) -> int:
        """The agent's act, recording the epsilon it is given."""
        seen.append(epsilon)
        return act(state, epsilon)

    agent.act = spy
    *_, last_epsilon = main.play_episode(env, agent, cfg, 0.3, 5, 0)
    assert seen == pytest.approx(expected) and last_epsilon == pytest.approx(expected[-1])


class Epsilons(Hook):
    """Keeps each episode's epsilon, then the next episode's, in one list."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_episode(self, episode: Episode) -> None:
        self.seen += [episode.epsilon, episode.next_epsilon]


@pytest.mark.parametrize(
    ("decay_steps", "expected"),
    [
        (0, [1.0, 0.995, 0.995, 0.990025, 0.990025, 0.985074875]),
        (10, [0.802, 0.802, 0.505, 0.505, 0.208, 0.208]),
    ],
    ids=["per episode: times 0.995", "linear over 10 steps: no decay on top"],
)
def test_train_seeds_the_environment_once_and_decays_epsilon_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decay_steps: int, expected: list[float]
) -> None:
    """Three episodes cut off at 3 steps, seed 7: reset seeds 7, None, None; epsilon by its one schedule."""
    made: list[Countdown] = []

    def make_env(env_id: str, max_steps: int) -> gym.Env:
        """A Countdown that never terminates, cut off at ``max_steps`` as make_env does; kept in ``made``."""
        made.append(Countdown(None))
        return TimeLimit(made[-1], max_steps)

    monkeypatch.setattr(main, "make_env", make_env)
    cfg = main.Config(
        episodes=3,
        max_steps=3,
        seed=7,
        epsilon_decay_steps=decay_steps,
        video=False,
        quiet=True,
        minibatch_size=4,
        replay_buffer_size=100,
        checkpoint=str(tmp_path / "c.pth"),
    )
    epsilons = Epsilons()
    main.train(cfg, out=lambda _: None, hooks=[epsilons], root=tmp_path)
    assert [env.reset_seeds for env in made] == [[7, None, None]]  # one world stream, seeded once
    assert epsilons.seen == pytest.approx(expected)


def test_seed_everything_seeds_python_numpy_and_torch_and_returns_the_agents_generator() -> None:
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        rng = main.seed_everything(7)
        assert random.random() == random.Random(7).random()
        assert np.random.random() == np.random.RandomState(7).random_sample()
        assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(7)))
        assert rng.random() == np.random.default_rng(7).random()
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])
