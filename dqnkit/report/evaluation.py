"""Greedy evaluation of a saved agent: how often it lands, crashes, flies off or runs out of time."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dqnkit.envs import GENERIC_OUTCOMES, episode_outcome, make_env, on_pad
from dqnkit.report.videos import VIDEO_DIR, Policy, greedy_policy, record_video
from dqnkit.run.files import (
    _shape,
    check_network_fits,
    check_writable,
    is_training_state,
    load_file,
    network_from_weights,
    save_torch,
)
from dqnkit.run.hooks import Episode, Hook

if TYPE_CHECKING:
    import gymnasium as gym

    from nnetwork import Network

OUTCOMES = ("landed", "crashed", "out of bounds", "timed out")
# The first reset seed of the greedy evaluations quoted as results (benchmarks/compare.py, tune.py --confirm):
# no run trains (--seed), films (--seed + episode) or selects (PeriodicEvaluation.SEED_BASE) on seeds from here.
UNSEEN_SEED_BASE = 2_000_000


@dataclass
class EvalResult:
    """Greedy evaluation of a saved agent."""

    scores: list[float]
    lengths: list[int]
    outcomes: list[str]  # "landed", "crashed", "out of bounds" or "timed out" per episode
    on_pad: int  # landings that came to rest between the flags

    @classmethod
    def joined(cls, results: list[EvalResult]) -> EvalResult:
        """The episodes of several results as one, in order."""
        lists = ([item for r in results for item in getattr(r, name)] for name in ("scores", "lengths", "outcomes"))
        return cls(*lists, sum(r.on_pad for r in results))

    @property
    def mean_score(self) -> float:
        return float(np.mean(self.scores))

    @property
    def landed_share(self) -> float:
        """The share of episodes that came to rest, on the pad or not."""
        return self.outcomes.count("landed") / len(self.outcomes)

    @property
    def mean_length(self) -> float:
        return float(np.mean(self.lengths))


def evaluate(
    path: str | os.PathLike,
    episodes: int = 100,
    seed: int = 0,
    video: bool = False,
    env_id: str | None = None,
    max_steps: int = 1000,
    out: Callable[[str], None] = print,
) -> EvalResult:
    """Play ``episodes`` greedy episodes, seeds ``seed`` on, of saved weights or a training state; say how it flies."""
    weights = load_file(path)
    if is_training_state(weights):
        weights, env_id = weights["agent"]["local_qnetwork"], env_id or weights["config"]["env"]
    net = network_from_weights(weights, path)
    env_id = env_id or "LunarLander-v3"
    env = make_env(env_id, max_steps)
    check_network_fits(net, env, path)
    policy = greedy_policy(net)
    try:
        result = play_greedy(policy, env, range(seed, seed + episodes))
    finally:
        env.close()
    if video:
        check_writable(VIDEO_DIR, "videos")
        target = VIDEO_DIR / evaluation_video_name(path, seed)
        record_video(policy, env_id, max_steps, target, seed=seed)
        out(f"video of the first episode: {target}")
    kinds = OUTCOMES if set(result.outcomes) - GENERIC_OUTCOMES else ("terminated", "timed out")
    counts = {k: result.outcomes.count(k) for k in kinds}
    share = ", ".join(f"{k} {100 * v / episodes:.0f}%" for k, v in counts.items())
    seeds = f"seeds {seed}..{seed + episodes - 1}"
    out(f"evaluated {path} ({_shape(weights)}) on {env_id}: {episodes} greedy episodes, {seeds}")
    out(f"score: mean {result.mean_score:.2f}, std {np.std(result.scores):.2f}")
    pad = f"; {result.on_pad} of {counts['landed']} landings between the flags" if "landed" in counts else ""
    out(f"outcomes: {share}{pad}")
    out(f"mean episode length: {result.mean_length:.1f} steps")
    return result


def evaluation_video_name(path: str | os.PathLike, seed: int) -> str:
    """``evaluate_<folder>_<name>_<hash>_seed<seed>.mp4``; the full path's hash tells apart every run's ``last.pth``."""
    full = Path(path).resolve()
    digest = hashlib.sha1(str(full).encode()).hexdigest()[:8]
    return f"evaluate_{full.parent.name}_{full.stem}_{digest}_seed{seed}.mp4"


def passes(result: EvalResult, target: float, landed_share: float) -> bool:
    """Whether an evaluation is good enough to stop on: its mean reaches ``target`` and enough episodes landed.

    The mean alone can hide a crash behind high scores elsewhere; the landed share cannot.
    """
    return result.mean_score >= target and result.landed_share >= landed_share


def play_greedy(policy: Policy, env: gym.Env, seeds: Iterable[int]) -> EvalResult:
    """One greedy episode from each reset seed: scores, lengths, outcomes and landings on the pad."""
    return EvalResult.joined([_play_all(lambda states: [policy(states[0])], [env], [seed]) for seed in seeds])


def play_greedy_together(network: Network, envs: list[gym.Env], seeds: Iterable[int]) -> EvalResult:
    """:func:`play_greedy` of ``network``'s greedy policy, one episode per environment, all played at once.

    One forward pass per step for all running episodes (a small network's time is per call, not per row); the
    scores are :func:`play_greedy`'s up to a batched matmul's rounding, which only a near-tie could notice.
    """
    import torch

    def act(states: list[np.ndarray]) -> list[int]:
        with torch.inference_mode():
            return network(torch.from_numpy(np.stack(states).astype(np.float32))).argmax(dim=1).tolist()

    return _play_all(act, envs, seeds)


def _play_all(act: Callable[[list[np.ndarray]], list[int]], envs: list[gym.Env], seeds: Iterable[int]) -> EvalResult:
    """One episode per seed, each in its own environment, all at once: ``act`` chooses the running ones' actions."""
    seeds = list(seeds)
    if len(seeds) > len(envs):
        raise ValueError(f"{len(seeds)} seeds for {len(envs)} environments")
    states = [env.reset(seed=seed)[0] for env, seed in zip(envs, seeds, strict=False)]  # the first len(seeds) envs
    result = EvalResult([0.0] * len(states), [0] * len(states), [""] * len(states), 0)
    running = list(range(len(states)))
    while running:
        for i, action in zip(running, act([states[i] for i in running]), strict=True):
            states[i], reward, terminated, truncated, _ = envs[i].step(action)
            result.scores[i] += float(reward)
            result.lengths[i] += 1
            if terminated or truncated:
                result.outcomes[i] = episode_outcome(envs[i], states[i], terminated)
                result.on_pad += result.outcomes[i] == "landed" and on_pad(envs[i])
        running = [i for i in running if not result.outcomes[i]]  # an ended episode has its outcome
    return result


@dataclass(eq=False)
class PeriodicEvaluation(Hook):
    """Evaluation during training: every ``every`` episodes, ``episodes`` greedy episodes; keeps the best weights.

    Reset seeds from ``SEED_BASE``, which no training run or video uses: unseen worlds, the same each time. Its own
    environments draw nothing from training's generators, so a run computes the same numbers with or without it.
    """

    SEED_BASE = 1_000_000
    MAX_ENVS = 100  # environments of 135 KB, reused batch after batch: 20,000 episodes would otherwise hold 2.7 GB

    env_id: str
    max_steps: int
    every: int
    episodes: int
    best_path: Path
    network: Network | None = None
    best_score: float = -math.inf  # a resumed run's best earlier evaluation
    from_average: float | None = None
    last: EvalResult | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.envs = [make_env(self.env_id, self.max_steps) for _ in range(min(self.episodes, self.MAX_ENVS))]

    def on_episode(self, episode: Episode) -> None:
        if self.network is not None and self.due(episode.episode, episode.average_100):
            self.run(self.network)
            episode.evaluation = self.last

    def due(self, episode: int, average_100: float = math.inf) -> bool:
        """Whether ``episode`` is one after which to evaluate: every ``every`` episodes, from ``from_average`` on.

        The training average gates only the cost: evaluation draws nothing from training's generators,
        so skipping one changes no number of the run, only which evaluations metrics.csv holds.
        """
        reached = self.from_average is None or average_100 >= self.from_average
        return self.every > 0 and episode % self.every == 0 and reached

    def run(self, network: Network) -> float:
        """Evaluate ``network`` greedily; save it as the best if it beats every earlier evaluation."""
        seeds = range(self.SEED_BASE, self.SEED_BASE + self.episodes)
        batches = [seeds[i : i + len(self.envs)] for i in range(0, len(seeds), len(self.envs))]
        self.last = EvalResult.joined([play_greedy_together(network, self.envs, batch) for batch in batches])
        if self.last.mean_score > self.best_score:
            self.best_score = self.last.mean_score
            save_torch(network.state_dict(), self.best_path)  # written now: no copy of the weights needed
        return self.last.mean_score

    def close(self, error: BaseException | None = None) -> None:
        for env in self.envs:
            env.close()
