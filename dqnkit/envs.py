"""The Gymnasium environment: creating it with one-line errors, and reading how an episode ended."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dqnkit.errors import UserError, first_line

if TYPE_CHECKING:
    import gymnasium as gym

SOLVED_SCORE = 200.0  # LunarLander-v3's reward threshold, over a 100-episode average


def make_env(env_id: str, max_steps: int, render_mode: str | None = None) -> gym.Env:
    """Create the environment, turning Gymnasium's errors about the id into a :class:`UserError`."""
    import gymnasium as gym

    if env_id.startswith("LunarLander-v") and env_id != "LunarLander-v3":
        raise UserError(f"{env_id} is not available: Gymnasium 1.x has only LunarLander-v3; use --env LunarLander-v3")
    try:
        env = gym.make(env_id, max_episode_steps=max_steps, render_mode=render_mode)
    except gym.error.Error as exc:
        raise UserError(f"cannot create environment {env_id!r}: {first_line(exc)}") from None
    if not isinstance(env.action_space, gym.spaces.Discrete) or len(env.observation_space.shape or ()) != 1:
        env.close()
        raise UserError(f"{env_id} needs a discrete action space and a flat observation vector for a DQN")
    return env


GENERIC_OUTCOMES = {"terminated", "timed out", ""}  # what an environment other than LunarLander can say


def is_lunar_lander(env: gym.Env) -> bool:
    """Whether ``env`` is LunarLander, whose lander and pad say how an episode ended."""
    return hasattr(env.unwrapped, "lander") and hasattr(env.unwrapped, "helipad_x1")


def episode_outcome(env: gym.Env, state: np.ndarray, terminated: bool) -> str:
    """How an episode ended, read from the environment as its step() decides it.

    LunarLander's: landed, crashed, out of bounds or timed out. Any other environment's:
    terminated, or timed out (cut off by the time limit).
    """
    lander = env.unwrapped
    if not terminated:
        return "timed out"
    if not is_lunar_lander(env):
        return "terminated"
    if not lander.lander.awake:  # the engine checks this last, and its +100 wins
        return "landed"
    if abs(float(state[0])) >= 1.0:
        return "out of bounds"
    return "crashed"


def on_pad(env: gym.Env) -> bool:
    """Whether the lander stands between the two flags (the pad); meaningful once it has landed."""
    if not is_lunar_lander(env):
        return False
    lander = env.unwrapped
    return bool(lander.helipad_x1 <= lander.lander.position.x <= lander.helipad_x2)


def final_outcome(env: gym.Env, terminated: bool) -> tuple[str, bool]:
    """How the episode that just ended went, and whether it came to rest on the pad.

    Read from the environment before its next reset (for another environment than LunarLander:
    terminated or timed out, never on the pad). The lander's x in the observation is its distance
    from the centre in half-widths of the screen, so the world position gives the same "out of bounds" test.
    """
    if not is_lunar_lander(env):
        return episode_outcome(env, np.zeros(1), terminated), False
    lander = env.unwrapped.lander
    centre = (env.unwrapped.helipad_x1 + env.unwrapped.helipad_x2) / 2  # the pad sits in the middle
    x = (lander.position.x - centre) / centre
    outcome = episode_outcome(env, np.array([x]), terminated)
    return outcome, outcome == "landed" and on_pad(env)
