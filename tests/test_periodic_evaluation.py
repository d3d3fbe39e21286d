"""Evaluation during training: unseen seeds, the best weights kept, and nothing else changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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


def test_a_run_with_evaluation_keeps_its_best_weights_and_trains_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import main
    from dqnkit.logs import read_metrics
    from dqnkit.videos import greedy_policy

    monkeypatch.chdir(tmp_path)
    cfg = main.Config(episodes=6, max_steps=80, minibatch_size=16, video=False, quiet=True, seed=3)
    plain = main.train(cfg, out=lambda _: None)
    evaluated = main.train(main.Config(**{**cfg.__dict__, "eval_every": 2, "eval_episodes": 2}), out=lambda _: None)
    a, b = read_metrics(plain.run_dir / "metrics.csv"), read_metrics(evaluated.run_dir / "metrics.csv")
    for column in ("score", "length", "epsilon", "total_steps"):
        assert np.array_equal(a[column], b[column]), f"evaluating changed the training's {column}"
    assert np.isnan(a["eval_score"]).all() and not (plain.run_dir / "best.pth").exists()
    scores = b["eval_score"]
    assert np.isfinite(scores[[1, 3, 5]]).all() and np.isnan(scores[[0, 2, 4]]).all()  # after episodes 2, 4, 6
    best = evaluation.network_from_weights(torch.load(evaluated.run_dir / "best.pth", weights_only=True), "best")
    periodic = PeriodicEvaluation("LunarLander-v3", 80, every=1, episodes=2, best_path=tmp_path / "again.pth")
    try:
        again = evaluation.play_greedy(
            greedy_policy(best), periodic.env, range(periodic.SEED_BASE, periodic.SEED_BASE + 2)
        )
    finally:
        periodic.close()
    assert float(np.mean(again.scores)) == pytest.approx(np.nanmax(scores), abs=1e-9)
    assert set(b["outcome"]) <= {"landed", "crashed", "out of bounds", "timed out"}
