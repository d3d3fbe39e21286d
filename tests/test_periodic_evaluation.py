"""Evaluation during training: unseen seeds, the best weights kept, and nothing else changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dqnkit.report import evaluation
from dqnkit.report.evaluation import EvalResult, PeriodicEvaluation
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

    def fake_play(network, envs, seeds):
        seen.append(list(seeds))
        return EvalResult(next(scores), [100, 100], ["landed", "landed"], 2)

    monkeypatch.setattr(evaluation, "play_greedy_together", fake_play)
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


@pytest.mark.parametrize("dueling", [False, True], ids=["network", "dueling"])
def test_episodes_played_together_are_those_played_one_by_one(dueling: bool) -> None:
    """The batched evaluation gives play_greedy's scores, lengths and outcomes, episode by episode."""
    from dqnkit.envs import make_env
    from dqnkit.report.videos import greedy_policy
    from nnetwork import DuelingNetwork

    torch.manual_seed(7)
    net = DuelingNetwork(8, 4, hidden_size=128) if dueling else Network(8, 4)
    if not dueling:
        with torch.no_grad():  # a policy that fires its engines: some episodes run long, some end early
            net.fc3.bias.add_(torch.tensor([0.0, 0.3, 0.6, 0.3]))
    envs = [make_env("LunarLander-v3", 400) for _ in range(6)]
    try:
        seeds = range(50, 56)
        together = evaluation.play_greedy_together(net, envs, seeds)
        one_by_one = evaluation.play_greedy(greedy_policy(net), envs[0], seeds)
        with pytest.raises(ValueError, match="7 seeds for 6 environments"):
            evaluation.play_greedy_together(net, envs, range(7))
    finally:
        for env in envs:
            env.close()
    assert together == one_by_one
    assert len(set(together.lengths)) > 1  # the episodes did not all end together


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


def test_a_run_with_evaluation_keeps_its_best_weights_and_trains_the_same(tmp_path: Path) -> None:
    import main
    from dqnkit.report.logs import read_metrics
    from dqnkit.report.videos import greedy_policy

    cfg = main.Config(episodes=6, max_steps=80, minibatch_size=16, video=False, quiet=True, seed=3)
    plain = main.train(cfg, out=lambda _: None, root=tmp_path)
    with_evaluation = main.Config(**{**cfg.__dict__, "eval_every": 2, "eval_episodes": 2})
    evaluated = main.train(with_evaluation, out=lambda _: None, root=tmp_path)
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
            greedy_policy(best), periodic.envs[0], range(periodic.SEED_BASE, periodic.SEED_BASE + 2)
        )
    finally:
        periodic.close()
    assert float(np.mean(again.scores)) == pytest.approx(np.nanmax(scores), abs=1e-9)
    assert set(b["outcome"]) <= {"landed", "crashed", "out of bounds", "timed out"}


def test_the_stopping_rule_needs_the_mean_and_the_landings() -> None:
    """--eval-target 250 --eval-landed 0.75: hand-known evaluations on either side of each bound."""
    four_landed = EvalResult([260.0, 250.0, 240.0, 250.0], [300] * 4, ["landed"] * 4, 4)
    one_crash = EvalResult([300.0, 300.0, 300.0, 100.0], [300] * 4, ["landed"] * 3 + ["crashed"], 3)
    two_crashes = EvalResult([350.0, 350.0, 350.0, -50.0], [300] * 4, ["landed"] * 2 + ["crashed"] * 2, 2)
    assert (one_crash.mean_score, one_crash.landed_share, one_crash.mean_length) == (250.0, 0.75, 300.0)
    assert evaluation.passes(four_landed, 250.0, 0.75)  # mean exactly 250, all landed
    assert not evaluation.passes(four_landed, 250.5, 0.75)
    assert evaluation.passes(one_crash, 250.0, 0.75)  # mean 250, three of four landed
    assert not evaluation.passes(one_crash, 250.0, 0.8)
    assert not evaluation.passes(two_crashes, 250.0, 0.75)  # mean 250, but only half landed


@pytest.mark.parametrize("target", [-1e6, 1e6], ids=["passes", "never"])
def test_a_run_with_an_eval_target_saves_the_agent_that_passed(tmp_path: Path, target: float) -> None:
    """The checkpoint is the evaluated network that passed, and the run stops there; never passing saves none."""
    import main

    cfg = main.Config(
        episodes=6, max_steps=60, minibatch_size=16, video=False, quiet=True, seed=4,
        checkpoint=str(tmp_path / "agent.pth"), eval_every=2, eval_episodes=2, eval_target=target, eval_landed=0.0,
    )  # fmt: skip
    messages: list[str] = []
    result = main.train(cfg, out=messages.append, root=tmp_path)
    if target < 0:
        assert result.solved_episode == 2 and len(result.scores) == 2  # the first evaluation passed: stop
        saved = torch.load(tmp_path / "agent.pth", weights_only=True)
        best = torch.load(result.run_dir / "best.pth", weights_only=True)
        assert saved.keys() == best.keys() and all(torch.equal(saved[k], best[k]) for k in saved)
        assert any(m.startswith("solved: greedy evaluation mean ") for m in messages)
    else:
        assert result.solved_episode is None and len(result.scores) == 6
        assert not (tmp_path / "agent.pth").exists() and (result.run_dir / "best.pth").exists()


def test_the_eval_target_needs_evaluations(capsys: pytest.CaptureFixture[str]) -> None:
    import main

    with pytest.raises(SystemExit) as stop:
        main.parse_config(["--eval-target", "250"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--eval-target needs --eval-every" in err
    assert main.parse_config(["--eval-target", "250", "--eval-every", "20"]).eval_target == 250.0


def test_evaluations_wait_for_the_training_average_and_change_nothing_else(tmp_path: Path) -> None:
    """--eval-from-average: due episodes whose training average is below it are skipped, the training is the same."""
    import main
    from dqnkit.report.logs import read_metrics

    periodic = PeriodicEvaluation(
        "LunarLander-v3", 100, every=5, episodes=2, best_path=tmp_path / "b.pth", from_average=-50.0
    )
    try:
        assert [periodic.due(e, a) for e, a in ((5, -50.01), (5, -50.0), (10, 20.0), (11, 20.0))] == [
            False,
            True,
            True,
            False,
        ]
    finally:
        periodic.close()
    cfg = main.Config(episodes=6, max_steps=80, minibatch_size=16, video=False, quiet=True, seed=3, eval_every=1)
    cfg = main.Config(**{**cfg.__dict__, "eval_episodes": 2})
    every = read_metrics(main.train(cfg, out=lambda _: None, root=tmp_path).run_dir / "metrics.csv")
    gate = float(np.median(every["average_100"]))  # half the episodes reach it
    gated = main.train(main.Config(**{**cfg.__dict__, "eval_from_average": gate}), out=lambda _: None, root=tmp_path)
    b = read_metrics(gated.run_dir / "metrics.csv")
    for column in ("score", "length", "epsilon", "total_steps", "average_100"):
        assert np.array_equal(every[column], b[column]), f"the gate changed the training's {column}"
    reached = every["average_100"] >= gate
    assert 0 < reached.sum() < 6 and np.array_equal(np.isfinite(b["eval_score"]), reached)
    assert np.array_equal(b["eval_score"][reached], every["eval_score"][reached])
