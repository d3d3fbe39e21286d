"""Greedy evaluation of a saved agent: how often it lands, crashes, flies off or runs out of time."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dqnkit.envs import episode_outcome, make_env
from dqnkit.files import _shape, check_network_fits, check_writable, is_training_state, load_file, network_from_weights
from dqnkit.videos import VIDEO_DIR, greedy_policy, record_video

OUTCOMES = ("landed", "crashed", "out of bounds", "timed out")


@dataclass
class EvalResult:
    """Greedy evaluation of a saved agent."""

    scores: list[float]
    lengths: list[int]
    outcomes: list[str]  # "landed", "crashed", "out of bounds" or "timed out" per episode
    on_pad: int  # landings that came to rest between the flags


def evaluate(
    path: str | os.PathLike,
    episodes: int = 100,
    seed: int = 0,
    video: bool = False,
    env_id: str | None = None,
    max_steps: int = 1000,
    out: Callable[[str], None] = print,
) -> EvalResult:
    """Play ``episodes`` greedy episodes with a saved network and report how it flies.

    ``path`` is a weights file or a training state; episode ``i`` starts from seed ``seed + i``.
    ``env_id`` defaults to the training state's environment, else LunarLander-v3.
    """
    obj = load_file(path)
    if is_training_state(obj):
        weights, env_id = obj["agent"]["local_qnetwork"], env_id or obj["config"]["env"]
    else:
        weights = obj
    net = network_from_weights(weights, path)
    env_id = env_id or "LunarLander-v3"
    env = make_env(env_id, max_steps)
    check_network_fits(net, env, path)
    policy = greedy_policy(net)
    result = EvalResult([], [], [], 0)
    try:
        for i in range(episodes):
            state, _ = env.reset(seed=seed + i)
            score, length, terminated, truncated = 0.0, 0, False, False
            while not (terminated or truncated):
                state, reward, terminated, truncated, _ = env.step(policy(state))
                score += float(reward)
                length += 1
            outcome = episode_outcome(env, state, terminated)
            if outcome == "landed":
                lander = env.unwrapped
                result.on_pad += lander.helipad_x1 <= lander.lander.position.x <= lander.helipad_x2
            result.scores.append(score)
            result.lengths.append(length)
            result.outcomes.append(outcome)
    finally:
        env.close()
    if video:
        check_writable(VIDEO_DIR, "videos")
        target = VIDEO_DIR / f"evaluate_{Path(path).stem}_seed{seed}.mp4"
        record_video(policy, env_id, max_steps, target, seed=seed)
        out(f"video of the first episode: {target}")
    _report(result, f"{path} ({_shape(weights)})", env_id, seed, out)
    return result


def _report(result: EvalResult, what: str, env_id: str, seed: int, out: Callable[[str], None]) -> None:
    """The evaluation summary: mean score, the share of each outcome, landings on the pad, episode length."""
    episodes = len(result.scores)
    counts = {k: result.outcomes.count(k) for k in OUTCOMES}
    share = ", ".join(f"{k} {100 * v / episodes:.0f}%" for k, v in counts.items())
    out(f"evaluated {what} on {env_id}: {episodes} greedy episodes, seeds {seed}..{seed + episodes - 1}")
    out(f"score: mean {np.mean(result.scores):.2f}, std {np.std(result.scores):.2f}")
    out(f"outcomes: {share}; {result.on_pad} of {counts['landed']} landings between the flags")
    out(f"mean episode length: {np.mean(result.lengths):.1f} steps")
