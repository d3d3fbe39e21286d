"""Many seeds at once (``dqnkit.learn.batched``): each seed of the stack learns as its own plain agent would.

The expectations come from N separate agents (``agent.Agent``, ``OptionsAgent``) fed the same transitions,
and from numbers known by hand (a clipped gradient's first Adam moment). Bitwise equality is not asked for:
the stack multiplies all seeds' matrices in one batched product and updates all rows in one Adam call, and
another BLAS or CPU may block those products differently from N separate ones, rounding differently (on the
machine these tests were written on they happen to agree bit for bit). Float tolerance, rtol 1e-5, is.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import main
from agent import Agent
from dqnkit.learn import make_agent
from dqnkit.learn.batched import BatchedAgents
from dqnkit.settings import PRESETS

SIZES = (8, 4)
DEFAULT = main.Config()
PRESET = dataclasses.replace(DEFAULT, **{k: v for k, v in PRESETS["fast"].items() if hasattr(DEFAULT, k)})
CONFIGS = {"default": DEFAULT, "preset": PRESET, "preset_huber": dataclasses.replace(PRESET, loss="huber")}


def _plain(cfg: main.Config, seeds: list[int]) -> list[Agent]:
    """N separate agents, each built as ``main.train`` builds it."""
    return [make_agent(cfg, *SIZES, "cpu", main.seed_everything(s)) for s in seeds]


def _batched(cfg: main.Config, seeds: list[int]) -> BatchedAgents:
    return BatchedAgents.from_seeds(cfg, seeds, SIZES, main.seed_everything)


def _transitions(rounds: int, n: int, seed: int = 7, reward_scale: list[float] | None = None):
    """For each round, one transition per seed: random states, actions and rewards, about 5% terminal."""
    rng = np.random.default_rng(seed)
    scale = reward_scale or [1.0] * n
    for _ in range(rounds):
        yield [
            (
                rng.standard_normal(8, dtype=np.float32),
                int(rng.integers(4)),
                float(rng.standard_normal()) * scale[i],
                rng.standard_normal(8, dtype=np.float32),
                bool(rng.random() < 0.05),
            )
            for i in range(n)
        ]


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to float tolerance, relative to the tensor's scale (Adam's second moments are ~1e-8)."""
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()) + 1e-12)


def _assert_same_agent(state: dict, plain: Agent) -> None:
    """``state`` (a seed of the stack, as ``Agent.state_dict()``) against the separate agent ``plain``."""
    expected = plain.state_dict()
    for net in ("local_qnetwork", "target_qnetwork"):
        for name, value in expected[net].items():
            _close(state[net][name], value)
    opt, expected_opt = state["optimizer"]["state"], expected["optimizer"]["state"]
    assert opt.keys() == expected_opt.keys()
    for k, saved in expected_opt.items():
        assert float(opt[k]["step"]) == float(saved["step"])  # the seed's own step count
        _close(opt[k]["exp_avg"], saved["exp_avg"])
        _close(opt[k]["exp_avg_sq"], saved["exp_avg_sq"])
    assert (state["t_step"], state["learn_steps"]) == (expected["t_step"], expected["learn_steps"])
    assert state["rng"] == expected["rng"]  # the same draws, in the same order
    for column in ("states", "actions", "rewards", "dones"):
        assert torch.equal(state["memory"][column], expected["memory"][column])


def _feed(batched: BatchedAgents, plain: list[Agent], transitions, active) -> list[int]:
    """Step every active seed in both; check each learning step's loss; the seeds that learned, per round."""
    learned = []
    for t, round_ in enumerate(transitions):
        for i in active(t):
            state, action, reward, next_state, done = round_[i]
            plain[i].step(state, action, reward, next_state, done)
            batched.step(i, state, action, reward, next_state, done)
            if done:
                plain[i].end_episode()
                batched.end_episode(i)
        losses = batched.learn()
        for i, loss in losses.items():
            assert loss == pytest.approx(plain[i].last_loss, rel=1e-5)
        learned.append(len(losses))
    return learned


# ---------------------------------------------------------------- (a) each seed learns as its separate agent


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_seed_learns_as_its_own_agent_even_when_only_some_learn(name: str) -> None:
    cfg, seeds = CONFIGS[name], [0, 1, 2]
    plain, batched = _plain(cfg, seeds), _batched(cfg, seeds)
    for i in range(3):  # the initial weights of a plain run with that seed
        for key, value in plain[i].local_qnetwork.state_dict().items():
            assert torch.equal(batched.local_state_dict(i)[key], value)
    # Seed 2 starts late, seed 0 skips a step (its rhythm then differs), seed 1 stops early (a seed that
    # solved): rounds where one, two or three seeds learn.
    skip = {2: range(0, 60), 0: range(200, 201), 1: range(330, 420)}
    active = lambda t: [i for i in range(3) if t not in skip[i]]  # noqa: E731
    learned = _feed(batched, plain, _transitions(420, 3), active)
    assert {1, 2, 3} <= set(learned), learned  # rounds with one, two and all three seeds learning
    steps = [a.learn_steps for a in plain]
    assert len(set(steps)) == 3 and min(steps) > 20, steps  # Adam's step counts differ between seeds
    for i in range(3):
        _assert_same_agent(batched.agent_state(i), plain[i])


def test_a_plain_agent_loading_a_seed_continues_as_the_seed() -> None:
    cfg, seeds = PRESET, [3, 4]
    plain, batched = _plain(cfg, seeds), _batched(cfg, seeds)
    rounds = list(_transitions(300, 2))
    _feed(batched, plain, rounds[:150], lambda t: [0, 1])
    for i in range(2):  # between episodes, where main.train saves a training state (n-step queues empty)
        batched.end_episode(i)
    resumed = _plain(cfg, [9, 9])  # other initial weights and generators: the state replaces them all
    for i in range(2):
        resumed[i].load_state_dict(batched.agent_state(i))
    _feed(batched, resumed, rounds[150:], lambda t: [0, 1])
    for i in range(2):
        _assert_same_agent(batched.agent_state(i), resumed[i])


# ---------------------------------------------------------------- (b) gradient clipping is per seed


def _clip_run(huge: bool) -> BatchedAgents:
    """Three seeds, clipping at 10, one learning step each; seed 1's rewards a million times larger if ``huge``."""
    cfg = dataclasses.replace(DEFAULT, grad_clip=10.0, minibatch_size=16, learn_every=17)
    batched = _batched(cfg, [0, 1, 2])
    for round_ in _transitions(17, 3, reward_scale=[1.0, 1e6 if huge else 1.0, 1.0]):
        for i, transition in enumerate(round_):
            batched.step(i, *transition)
    assert sorted(batched.learn()) == [0, 1, 2]
    return batched


def test_clipping_caps_each_seed_over_its_own_parameters() -> None:
    huge, calm = _clip_run(True), _clip_run(False)
    # Seed 1 is clipped: after the first Adam step the first moment is (1 - beta1) times the clipped
    # gradient, whose norm is 10 * norm / (norm + 1e-6), i.e. 10 to float precision: a norm of 1.0.
    assert float(huge.adam.exp_avg[1].norm()) == pytest.approx(1.0, rel=1e-5)
    assert float(calm.adam.exp_avg[1].norm()) < 1.0  # its ordinary gradient was below the cap
    for i in (0, 2):  # the other seeds are untouched by seed 1's gradient: the same numbers, bit for bit
        assert float(huge.adam.exp_avg[i].norm()) < 1.0
        assert torch.equal(huge.theta[i], calm.theta[i]) and torch.equal(huge.adam.exp_avg[i], calm.adam.exp_avg[i])
    plain = _plain(dataclasses.replace(DEFAULT, grad_clip=10.0, minibatch_size=16, learn_every=17), [0, 1, 2])
    for round_ in _transitions(17, 3, reward_scale=[1.0, 1e6, 1.0]):
        for i, transition in enumerate(round_):
            plain[i].step(*transition)
    for i in range(3):  # and each seed as its own agent clipping its own gradient
        _assert_same_agent(huge.agent_state(i), plain[i])


def test_a_loss_that_is_not_finite_stops_before_any_weight_moves() -> None:
    cfg = dataclasses.replace(DEFAULT, minibatch_size=16, learn_every=17)
    batched = _batched(cfg, [0, 1])
    before = batched.theta.clone()
    for round_ in _transitions(17, 2, reward_scale=[1.0, float("nan")]):
        for i, transition in enumerate(round_):
            batched.step(i, *transition)
    with pytest.raises(FloatingPointError, match="the loss became nan at learning step 1"):
        batched.learn()
    assert torch.equal(batched.theta, before) and [a.learn_steps for a in batched.agents] == [0, 0]


# ---------------------------------------------------------------- (c) acting


def test_greedy_actions_are_each_plain_agents() -> None:
    cfg, seeds = PRESET, [0, 1, 2, 3]
    plain, batched = _plain(cfg, seeds), _batched(cfg, seeds)
    states = np.random.default_rng(3).standard_normal((50, 4, 8)).astype(np.float32) * 3
    for row in states:
        expected = [a.greedy_action(s) for a, s in zip(plain, row, strict=True)]
        assert batched.act(row, [0.0] * 4).tolist() == expected


def test_exploration_draws_each_seeds_numbers_as_agent_act() -> None:
    cfg, seeds = DEFAULT, [0, 1, 2]
    plain, batched = _plain(cfg, seeds), _batched(cfg, seeds)
    rng = np.random.default_rng(11)
    for _ in range(200):
        states = rng.standard_normal((3, 8)).astype(np.float32)
        epsilons = [1.0, 0.5, float(rng.random())]
        acting = [i for i in range(3) if rng.random() < 0.8]  # some rounds leave a seed out: it draws nothing
        actions = batched.act(states[acting], [epsilons[i] for i in acting], seeds=acting)
        assert actions.tolist() == [plain[i].act(states[i], epsilons[i]) for i in acting]
    for i in range(3):
        assert batched.agents[i].rng.bit_generator.state == plain[i].rng.bit_generator.state


# ---------------------------------------------------------------- (d) resuming


def test_state_dict_round_trip_resumes_to_the_same_numbers(tmp_path) -> None:
    cfg, seeds = PRESET, [0, 1, 2]
    batched = _batched(cfg, seeds)
    rounds = list(_transitions(260, 3))
    twin = _plain(cfg, seeds)  # only to drive _feed; the resumed batch is compared with the original
    _feed(batched, twin, rounds[:160], lambda t: [0, 1, 2] if t >= 40 else [0, 1])
    for i in range(3):  # between episodes, where main.train saves a training state (n-step queues empty)
        batched.end_episode(i)
    torch.save(batched.state_dict(), tmp_path / "batch.pth")
    resumed = _batched(cfg, [7, 8, 9])
    resumed.load_state_dict(torch.load(tmp_path / "batch.pth", weights_only=True))
    for t, round_ in enumerate(rounds[160:]):
        for i in range(3):
            batched.step(i, *round_[i])
            resumed.step(i, *round_[i])
        assert batched.learn() == resumed.learn(), t  # the same losses from the same state
    for a, b in zip(batched.state_dict()["agents"], resumed.state_dict()["agents"], strict=True):
        for net in ("local_qnetwork", "target_qnetwork"):
            assert all(torch.equal(a[net][k], b[net][k]) for k in a[net])
        assert a["rng"] == b["rng"] and a["learn_steps"] == b["learn_steps"]


# ---------------------------------------------------------------- (e) what the stack refuses


@pytest.mark.parametrize(
    "options",
    [
        {"dueling": True},
        {"prioritized_replay": True},
        {"target_update_every": 5},
        {"lr_decay_steps": 100, "learning_rate_end": 1e-5},
        {"gradient_steps": 2},
        {"backprop": "numpy"},
    ],
    ids=lambda o: next(iter(o)),
)
def test_a_refused_option_is_one_line(options: dict) -> None:
    cfg = dataclasses.replace(DEFAULT, replay_buffer_size=1000, **options)
    with pytest.raises(ValueError) as exc:
        _batched(cfg, [0, 1])
    message = str(exc.value)
    assert "\n" not in message and message.startswith("BatchedAgents cannot batch")
    assert ("NumpyAgent" if "backprop" in options else next(iter(options))) in message


def test_agents_of_different_configurations_are_refused() -> None:
    agents = _plain(DEFAULT, [0]) + _plain(dataclasses.replace(DEFAULT, hidden_size=32), [1])
    with pytest.raises(ValueError, match="^BatchedAgents cannot batch unlike agents$"):
        BatchedAgents(agents)
