"""Stand-in environments for tests that need an episode to end in a known way."""

from __future__ import annotations

from types import SimpleNamespace

import gymnasium as gym
import numpy as np


class Lander(gym.Env):
    """A LunarLander stand-in: reward 1 per step, ending after ``length`` steps at rest on the pad (or crashed).

    It has what :func:`dqnkit.envs.final_outcome` and ``episode_outcome`` read of LunarLander: the
    lander's body (asleep once at rest) and the pad's edges. The observation counts the steps.
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, (8,), np.float32)
    action_space = gym.spaces.Discrete(4)
    helipad_x1, helipad_x2 = 8.0, 12.0

    def __init__(self, length: int, lands: bool = True) -> None:
        self.length, self.lands = length, lands
        self.lander = SimpleNamespace(awake=True, position=SimpleNamespace(x=10.0))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t, self.lander.awake = 0, True
        return np.zeros(8, dtype=np.float32), {}

    def step(self, action: int):
        self.t += 1
        self.lander.awake = not (self.lands and self.t == self.length)
        return np.full(8, self.t / 100, dtype=np.float32), 1.0, self.t == self.length, False, {}
