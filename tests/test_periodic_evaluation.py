"""Evaluation during training: unseen seeds, the best weights kept, and nothing else changed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dqnkit import evaluation
from dqnkit.evaluation import EvalResult, PeriodicEvaluation
from nnetwork import Network


def _network(fill: float) -> Network:
    net = Network(8, 4, hidden_size=4)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(fill)
    return net


def test_best_weights_are_those_that_scored_highest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three evaluations scoring 10, 30 and 20: best.pth holds the second network's weights."""
    scores = iter([[10.0, 10.0], [25.0, 35.0], [20.0, 20.0]])
    seen: list[list[int]] = []

    def fake_play(policy, env, seeds):
        seen.append(list(seeds))
        return EvalResult(next(scores), [100, 100], ["landed", "landed"], 2)

    monkeypatch.setattr(evaluation, "play_greedy", fake_play)
    periodic = PeriodicEvaluation("LunarLander-v3", 100, every=5, episodes=2, best_path=tmp_path / "best.pth")
    try:
        assert [periodic.due(e) for e in (4, 5, 10, 11)] == [False, True, True, False]
        means = [periodic.run(_network(fill)) for fill in (0.1, 0.2, 0.3)]
    finally:
        periodic.close()
    assert means == [10.0, 30.0, 20.0] and periodic.best_score == 30.0
    saved = torch.load(tmp_path / "best.pth", weights_only=True)
    assert all(torch.equal(v, torch.full_like(v, 0.2)) for v in saved.values())
    # The same unseen seeds every time, far from any training or video seed.
    assert seen == [[1_000_000, 1_000_001]] * 3


def test_a_real_evaluation_is_greedy_and_repeatable(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = Network(8, 4)
    periodic = PeriodicEvaluation("LunarLander-v3", 60, every=1, episodes=3, best_path=tmp_path / "best.pth")
    try:
        first, second = periodic.run(net), periodic.run(net)
    finally:
        periodic.close()
    assert first == second  # same seeds, same weights, no exploration: the same scores
    assert len(periodic.last.scores) == 3 and all(length <= 60 for length in periodic.last.lengths)
