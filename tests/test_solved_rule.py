"""Both stopping rules at their boundary: the original's 100-episode average, and the greedy evaluation's.

Exactly at the target counts, just below does not, and before the 100th episode nothing does; the
same through ``main.train`` with stub environments whose scores are known, where the checkpoint
must appear at the very episode that solves and never before.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers import TimeLimit
from stubs import Lander

import main
from dqnkit.report.evaluation import EvalResult, passes
from dqnkit.run.checkpoints import average_reached
from dqnkit.run.hooks import Episode, Hook


def _episode(number: int, average_100: float) -> Episode:
    """A finished episode ``number`` whose last-100 average is ``average_100`` (the other fields do not matter)."""
    return Episode(number, average_100, 1, True, False, 0.5, 0.5, number, average_100)


@pytest.mark.parametrize(
    ("number", "average", "solved"),
    [
        (100, 200.0, True),
        (100, 199.99, False),
        (100, float(np.nextafter(200.0, 0.0)), False),
        (101, 200.01, True),
        (99, 250.0, False),
        (1, 1000.0, False),
    ],
    ids=[
        "100th episode, exactly at the target",
        "100th episode, 0.01 below",
        "100th episode, the nearest float below",
        "101st episode, above",
        "99th episode, far above",
        "first episode, far above",
    ],
)
def test_average_reached_at_its_boundary(number: int, average: float, solved: bool) -> None:
    assert average_reached(_episode(number, average), 200.0) is solved


def _evaluation(scores: list[float], landed: int, episodes: int) -> EvalResult:
    """An evaluation of ``episodes`` episodes, the first ``landed`` at rest and the rest crashed."""
    outcomes = ["landed"] * landed + ["crashed"] * (episodes - landed)
    return EvalResult(scores, [100] * episodes, outcomes, on_pad=landed)


@pytest.mark.parametrize(
    ("scores", "landed", "solved"),
    [
        ([150.0, 250.0] * 50, 100, True),
        ([150.0, 249.98] * 50, 100, False),
        ([200.0] * 100, 90, True),
        ([200.0] * 100, 89, False),
        ([150.0, 249.98] * 50, 89, False),
    ],
    ids=[
        "mean exactly 200, all landed",
        "mean 199.99, all landed",
        "mean 200, 90 of 100 landed: exactly the share",
        "mean 200, 89 of 100 landed",
        "both just below",
    ],
)
def test_passes_at_its_boundary(scores: list[float], landed: int, solved: bool) -> None:
    """The rule of ``--eval-target 200 --eval-landed 0.9``."""
    assert passes(_evaluation(scores, landed, len(scores)), 200.0, 0.9) is solved


# ---------------------------------------------------------------- through main.train


class ScriptedScores(gym.Env):
    """One-step episodes that score the numbers of ``scores`` in turn.

    Given a list, each environment starts from its first number; given an iterator, environments
    made one after the other (a run and its resumed part) go on where the last one stopped.
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, (8,), np.float32)
    action_space = gym.spaces.Discrete(4)

    def __init__(self, scores: Iterable[float]) -> None:
        self.scores = iter(scores)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return np.zeros(8, dtype=np.float32), {}

    def step(self, action: int):
        return np.ones(8, dtype=np.float32), next(self.scores), True, False, {}


class WatchCheckpoint(Hook):
    """After each episode (the run's own hooks have seen it): whether it solved, and whether the checkpoint exists."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.seen: list[tuple[int, bool, bool]] = []  # (episode, solved, checkpoint on disk)
        self.evaluations: list[tuple[int, float, float]] = []  # (episode, mean score, landed share)
        self.weights_when_solved: dict[str, torch.Tensor] = {}

    def on_start(self, agent) -> None:
        self.network = agent.local_qnetwork

    def on_episode(self, episode: Episode) -> None:
        self.seen.append((episode.episode, episode.solved, self.checkpoint.is_file()))
        if episode.evaluation is not None:
            self.evaluations.append((episode.episode, episode.evaluation.mean_score, episode.evaluation.landed_share))
        if episode.solved:
            self.weights_when_solved = {k: v.clone() for k, v in self.network.state_dict().items()}


def _cfg(tmp_path: Path, **changes) -> main.Config:
    """A quiet, video-free configuration with a tiny memory and minibatch, the checkpoint in ``tmp_path``."""
    base = dict(video=False, quiet=True, minibatch_size=4, replay_buffer_size=500, checkpoint=str(tmp_path / "c.pth"))
    return main.Config(**{**base, **changes})


def test_train_solves_at_the_episode_whose_average_reaches_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 episodes of 1 then episodes of 2: the average after episode 100 + k is 1 + k / 100.

    At a target of 1.5 that is exactly the target at episode 150 and 1.49 at 149. With
    --keep-training the run goes on to 160, and the checkpoint holds the weights of episode 150.
    """
    scores = [1.0] * 100 + [2.0] * 60
    monkeypatch.setattr(main, "make_env", lambda env_id, max_steps: TimeLimit(ScriptedScores(scores), max_steps))
    cfg = _cfg(tmp_path, episodes=160, target_score=1.5, keep_training=True)
    watch = WatchCheckpoint(Path(cfg.checkpoint))
    result = main.train(cfg, out=lambda _: None, hooks=[watch], root=tmp_path)
    assert result.scores == scores and result.solved_episode == 150
    assert [e for e, solved, _ in watch.seen if solved] == [150]
    assert [e for e, _, on_disk in watch.seen if on_disk] == list(range(150, 161))  # written at 150, not before
    saved = torch.load(cfg.checkpoint, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in watch.weights_when_solved.items())
    last = torch.load(result.run_dir / "last.pth", weights_only=True)
    assert not all(torch.equal(saved[k], v) for k, v in last.items())  # it learned on after 150; the checkpoint stayed


def test_a_resumed_run_solves_at_the_same_episode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped after episode 120 and resumed: the last 100 scores come back with the run (80 ones, 20 twos),
    so it solves at 150 as the uninterrupted run does, not at 121 on the scores since the resume alone."""
    scores = iter([1.0] * 100 + [2.0] * 60)  # one stream for both parts of the run
    monkeypatch.setattr(main, "make_env", lambda env_id, max_steps: TimeLimit(ScriptedScores(scores), max_steps))
    cfg = _cfg(tmp_path, episodes=120, target_score=1.5)
    first = main.train(cfg, out=lambda _: None, root=tmp_path)
    assert first.solved_episode is None and not Path(cfg.checkpoint).exists()
    watch = WatchCheckpoint(Path(cfg.checkpoint))
    more = dataclasses.replace(cfg, episodes=160)
    resumed = main.train(more, out=lambda _: None, resume=first.state_path, hooks=[watch], root=tmp_path)
    assert resumed.solved_episode == 150 and len(resumed.scores) == 150
    assert [e for e, solved, _ in watch.seen if solved] == [150]


def test_train_never_solves_before_the_100th_episode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every episode scores the target, so the average is at it from the first: the run stops at 100."""
    scores = [5.0] * 120
    monkeypatch.setattr(main, "make_env", lambda env_id, max_steps: TimeLimit(ScriptedScores(scores), max_steps))
    cfg = _cfg(tmp_path, episodes=120, target_score=5.0)
    watch = WatchCheckpoint(Path(cfg.checkpoint))
    result = main.train(cfg, out=lambda _: None, hooks=[watch], root=tmp_path)
    assert result.solved_episode == 100 and len(result.scores) == 100  # stopped there
    assert [e for e, _, on_disk in watch.seen if on_disk] == [100]


@pytest.mark.parametrize(
    ("eval_target", "eval_landed", "solved_episode"),
    [(3.0, 0.9, 2), (3.01, 0.9, None), (3.0, 0.91, None)],
    ids=["mean and landed share exactly at the bar", "mean just below", "landed share just below"],
)
def test_train_with_eval_target_solves_at_the_evaluation_that_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, eval_target: float, eval_landed: float, solved_episode: int | None
) -> None:
    """Every evaluation plays 10 three-step episodes (mean score 3.0): 9 come to rest, the 10th crashes."""
    monkeypatch.setattr(main, "make_env", lambda env_id, max_steps: TimeLimit(Lander(3, True), max_steps))
    landings = itertools.cycle([True] * 9 + [False])  # PeriodicEvaluation makes its 10 environments once
    monkeypatch.setattr(
        "dqnkit.report.evaluation.make_env", lambda env_id, max_steps: TimeLimit(Lander(3, next(landings)), max_steps)
    )
    cfg = _cfg(tmp_path, episodes=4, eval_every=2, eval_episodes=10, eval_target=eval_target, eval_landed=eval_landed)
    watch = WatchCheckpoint(Path(cfg.checkpoint))
    result = main.train(cfg, out=lambda _: None, hooks=[watch], root=tmp_path)
    assert watch.evaluations[0] == (2, 3.0, 0.9)
    assert result.solved_episode == solved_episode
    if solved_episode is None:
        assert len(result.scores) == 4 and not Path(cfg.checkpoint).exists()
    else:
        assert len(result.scores) == solved_episode and watch.seen[-1] == (solved_episode, True, True)
        assert [on_disk for _, _, on_disk in watch.seen] == [False] * (solved_episode - 1) + [True]
