"""Greedy evaluation of a saved agent: how often it lands, crashes, flies off or runs out of time."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dqnkit.envs import GENERIC_OUTCOMES, episode_outcome, make_env, on_pad
from dqnkit.report.videos import VIDEO_DIR, greedy_policy, record_video
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
        return cls(
            [score for r in results for score in r.scores],
            [length for r in results for length in r.lengths],
            [outcome for r in results for outcome in r.outcomes],
            sum(r.on_pad for r in results),
        )

    @property
    def mean_score(self) -> float:
        """The mean score over the episodes."""
        return float(np.mean(self.scores))

    @property
    def landed_share(self) -> float:
        """The share of episodes that came to rest, on the pad or not."""
        return self.outcomes.count("landed") / len(self.outcomes)

    @property
    def mean_length(self) -> float:
        """The mean episode length, in steps."""
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
    try:
        result = play_greedy(policy, env, range(seed, seed + episodes))
    finally:
        env.close()
    if video:
        check_writable(VIDEO_DIR, "videos")
        target = VIDEO_DIR / evaluation_video_name(path, seed)
        record_video(policy, env_id, max_steps, target, seed=seed)
        out(f"video of the first episode: {target}")
    _report(result, f"{path} ({_shape(weights)})", env_id, seed, out)
    return result


def evaluation_video_name(path: str | os.PathLike, seed: int) -> str:
    """``evaluate_<folder>_<name>_<hash>_seed<seed>.mp4``; the full path's hash tells apart every run's ``last.pth``."""
    import hashlib

    full = Path(path).resolve()
    digest = hashlib.sha1(str(full).encode()).hexdigest()[:8]
    return f"evaluate_{full.parent.name}_{full.stem}_{digest}_seed{seed}.mp4"


def passes(result: EvalResult, target: float, landed_share: float) -> bool:
    """Whether an evaluation is good enough to stop on: its mean reaches ``target`` and enough episodes landed.

    The mean alone can hide a crash behind high scores elsewhere; the landed share cannot.
    """
    return result.mean_score >= target and result.landed_share >= landed_share


def play_greedy(policy: Callable[[np.ndarray], int], env: gym.Env, seeds: Iterable[int]) -> EvalResult:
    """One greedy episode from each reset seed: scores, lengths, outcomes and landings on the pad."""
    result = EvalResult([], [], [], 0)
    for seed in seeds:
        state, _ = env.reset(seed=seed)
        score, length, terminated, truncated = 0.0, 0, False, False
        while not (terminated or truncated):
            state, reward, terminated, truncated, _ = env.step(policy(state))
            score += float(reward)
            length += 1
        outcome = episode_outcome(env, state, terminated)
        result.on_pad += outcome == "landed" and on_pad(env)
        result.scores.append(score)
        result.lengths.append(length)
        result.outcomes.append(outcome)
    return result


def play_greedy_together(network: Network, envs: list[gym.Env], seeds: Iterable[int]) -> EvalResult:
    """:func:`play_greedy` of ``network``'s greedy policy, one episode per environment, all played at once.

    Each step, one forward pass scores the states of all the episodes still running: a small network's
    time is per call, not per row. The scores are :func:`play_greedy`'s on the same seeds, up to the rounding
    of a batched matrix product, which only a near-tie between two actions could notice (a test holds them equal).
    """
    import torch

    seeds = list(seeds)
    if len(seeds) > len(envs):
        raise ValueError(f"{len(seeds)} seeds for {len(envs)} environments")
    envs = envs[: len(seeds)]
    states = np.stack([env.reset(seed=seed)[0] for env, seed in zip(envs, seeds, strict=True)]).astype(np.float32)
    scores, lengths = np.zeros(len(envs)), np.zeros(len(envs), dtype=int)
    outcomes, pads = [""] * len(envs), [False] * len(envs)
    running = list(range(len(envs)))
    while running:
        with torch.inference_mode():
            actions = network(torch.from_numpy(states[running])).argmax(dim=1).tolist()
        still = []
        for i, action in zip(running, actions, strict=True):
            state, reward, terminated, truncated, _ = envs[i].step(action)
            states[i], scores[i], lengths[i] = state, scores[i] + float(reward), lengths[i] + 1
            if terminated or truncated:
                outcomes[i] = episode_outcome(envs[i], state, terminated)
                pads[i] = outcomes[i] == "landed" and on_pad(envs[i])
            else:
                still.append(i)
        running = still
    return EvalResult(scores.tolist(), lengths.tolist(), outcomes, sum(pads))


class PeriodicEvaluation(Hook):
    """Evaluation during training: every ``every`` episodes, ``episodes`` greedy episodes; keeps the best weights.

    The episodes start from reset seeds ``SEED_BASE``, ``SEED_BASE + 1``, ..., which no training run uses
    (training seeds its environment once with ``--seed``, the videos with ``--seed`` + episode): worlds the
    policy never trained on, the same each time, so evaluations compare like with like. Its own environments,
    played together (:func:`play_greedy_together`), draw nothing from training's generators: a run computes
    the same numbers with or without it. The best weights so far go to ``best_path`` (atomically); the result
    travels in the episode's record (``Episode.evaluation``) to the metrics and the stopping rule.
    ``best_score`` is the best of a resumed run's earlier evaluations.
    """

    SEED_BASE = 1_000_000
    MAX_ENVS = 100

    def __init__(
        self,
        env_id: str,
        max_steps: int,
        every: int,
        episodes: int,
        best_path: Path,
        network: Network | None = None,
        best_score: float = -math.inf,
        from_average: float | None = None,
    ) -> None:
        # At most MAX_ENVS environments (about 135 KB each), reused batch after batch: 20,000 episodes
        # would otherwise hold 2.7 GB for the whole run.
        self.envs = [make_env(env_id, max_steps) for _ in range(min(episodes, self.MAX_ENVS))]
        self.every, self.episodes, self.best_path = every, episodes, best_path
        self.network, self.best_score, self.from_average = network, best_score, from_average
        self.last: EvalResult | None = None

    def on_episode(self, episode: Episode) -> None:
        """Evaluate the network when ``episode`` is due; the result travels in the record."""
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
        results = [play_greedy_together(network, self.envs, batch) for batch in batches]
        self.last = EvalResult.joined(results)
        mean = self.last.mean_score
        if mean > self.best_score:
            self.best_score = mean
            save_torch(network.state_dict(), self.best_path)  # written now: no copy of the weights needed
        return mean

    def close(self, error: BaseException | None = None) -> None:
        """Close the evaluation environments."""
        for env in self.envs:
            env.close()


def _report(result: EvalResult, what: str, env_id: str, seed: int, out: Callable[[str], None]) -> None:
    """The evaluation summary: mean score, the share of each outcome, landings on the pad, episode length."""
    episodes = len(result.scores)
    kinds = OUTCOMES if set(result.outcomes) - GENERIC_OUTCOMES else ("terminated", "timed out")
    counts = {k: result.outcomes.count(k) for k in kinds}
    share = ", ".join(f"{k} {100 * v / episodes:.0f}%" for k, v in counts.items())
    out(f"evaluated {what} on {env_id}: {episodes} greedy episodes, seeds {seed}..{seed + episodes - 1}")
    out(f"score: mean {result.mean_score:.2f}, std {np.std(result.scores):.2f}")
    pad = f"; {result.on_pad} of {counts['landed']} landings between the flags" if "landed" in counts else ""
    out(f"outcomes: {share}{pad}")
    out(f"mean episode length: {result.mean_length:.1f} steps")
