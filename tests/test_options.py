"""The options beyond the original DQN, each checked with numbers worked out by hand.

One configurable agent, ``OptionsAgent``: each option changes one named step of ``agent.Agent.learn``
(checked by running every step of an agent with the option and of one without it on the same inputs),
with every option off it learns exactly as ``agent.Agent``, and every option gives the same numbers
on the NumPy twin as with autograd.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

import main
from agent import Agent, Experiences, ReplayMemory
from dqnkit.learn import CORE_FIELDS, OFF, OPTION_EXTRAS, OPTION_FIELDS, make_agent, options_on
from dqnkit.learn.memory import OptionsMemory, SumTree, n_step_return
from dqnkit.learn.numpy_adam import clip_grad_norm_
from dqnkit.learn.options import (
    OptionsAgent,
    double_dqn_next_q,
    option_problem,
    row_max,
    scheduled_learning_rate,
)
from dqnkit.learn.twin import NumpyAgent, numpy_q_values, numpy_views
from nnetwork import DuelingNetwork, Network, dueling_q_values

BOTH = pytest.mark.parametrize("backprop", ["autograd", "numpy"])

EXTRA_OPTIONS = {
    "double_dqn": {"double_dqn": True},
    "dueling": {"dueling": True},
    "n_step": {"n_step": 3},
    "huber": {"loss": "huber"},
    "grad_clip": {"grad_clip": 10.0},
    "hard_target": {"target_update_every": 5},
    "prioritized": {"prioritized_replay": True},
    "gradient_steps": {"gradient_steps": 2},
    "lr_decay": {"lr_decay_steps": 200, "learning_rate_end": 1e-4},
}


def _agent(backprop: str = "numpy", **options) -> Agent:
    """The agent ``main.Config(**options)`` asks for, built as a run builds it."""
    torch.manual_seed(0)
    cfg = main.Config(backprop=backprop, **{"minibatch_size": 1000, **options})  # a big minibatch: step() never learns
    return make_agent(cfg, 8, 4, "cpu", np.random.default_rng(0))


def _state(i: float) -> np.ndarray:
    return np.full(8, i, dtype=np.float32)


def _batch(agent: Agent, states, next_states, actions, rewards, dones) -> Experiences:
    """A minibatch in the form ``agent`` learns from: NumPy arrays for the twin, tensors otherwise."""
    dtypes = (np.float32, np.float32, np.int64, np.float32, np.float32)
    columns = (states, next_states, actions, rewards, dones)
    arrays = [np.asarray(a, dtype=t) for a, t in zip(columns, dtypes, strict=True)]
    if getattr(agent.memory, "arrays", False):
        return Experiences(*arrays)
    return Experiences(*(torch.from_numpy(a) for a in arrays))


def _constant_q(net: Network, values: list[float]) -> None:
    """Make ``net`` give ``values`` as the Q-values of every state: zero weights, ``fc3``'s bias."""
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.fc3.bias.copy_(torch.tensor(values))


# ---------------------------------------------------------------- one agent, each option one named step

NAMED_STEPS = ("bellman_targets", "td_loss", "optimizer_step", "update_target")


def _overridden(cls: type) -> set[str]:
    """The methods of agent.Agent that ``cls`` itself defines (not ``__init__``: building is no step)."""
    return {name for name, value in vars(cls).items() if callable(value) and name in vars(Agent) and name != "__init__"}


def test_options_agent_overrides_the_named_steps_and_never_the_learning_step_itself() -> None:
    assert issubclass(OptionsAgent, Agent) and all(callable(vars(Agent)[step]) for step in NAMED_STEPS)
    # The four named steps, learn as a loop of learning steps, and end_episode for the n-step queue.
    assert _overridden(OptionsAgent) == {*NAMED_STEPS, "learn", "end_episode"}
    # One learning step stays agent.Agent.learn: no option computes a gradient or calls the optimizer itself.
    assert "backward" not in inspect.getsource(OptionsAgent)
    assert "super().learn(" in inspect.getsource(OptionsAgent.learn_once)
    assert "learn_once(" in inspect.getsource(OptionsAgent.learn)


def _prepared(batch_size: int = 32, **options) -> OptionsAgent:
    """An OptionsAgent with ``options``, its target network apart from the local one, 40 transitions stored.

    Everything but the options is the same from one call to the next: weights, memory, generator.
    """
    torch.manual_seed(0)
    agent = OptionsAgent(8, 4, minibatch_size=8, replay_buffer_size=64, rng=np.random.default_rng(0), **options)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in agent.target_qnetwork.parameters():  # a target that trails: it picks other actions than the local
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
    rng = np.random.default_rng(2)
    for i in range(40):
        agent.memory.push((rng.standard_normal(8), i % 4, float(rng.standard_normal()), rng.standard_normal(8), False))
    if agent.memory.prioritized:  # unequal priorities: unequal importance weights
        agent.memory.update_priorities(np.arange(len(agent.memory)), np.linspace(0.1, 4.0, len(agent.memory)))
    agent.memory.sample(batch_size)  # a draw: under prioritized replay, the indices and weights td_loss reads
    agent.learn_steps = 30  # a scheduled rate has moved by now; 31 is no multiple of a hard update's 5
    return agent


def _run_step(step: str, agent: OptionsAgent) -> list[torch.Tensor]:
    """What the named ``step`` of ``agent`` gives on fixed inputs, as tensors to compare."""
    rng = np.random.default_rng(5)
    batch = _batch(
        agent, rng.standard_normal((32, 8)), rng.standard_normal((32, 8)), rng.integers(4, size=(32, 1)),
        rng.standard_normal((32, 1)), rng.random((32, 1)) < 0.2,
    )  # fmt: skip
    if step == "bellman_targets":
        return [agent.bellman_targets(batch, 0.9)]
    if step == "td_loss":
        q_expected = agent.local_qnetwork(batch.states).gather(1, batch.actions)
        return [agent.td_loss(q_expected, torch.from_numpy(rng.standard_normal((32, 1)).astype(np.float32)))]
    if step == "optimizer_step":
        generator = torch.Generator().manual_seed(3)
        for p in agent.local_qnetwork.parameters():
            p.grad = torch.randn(p.shape, generator=generator)
        agent.optimizer_step()
        rate = torch.tensor(agent.optimizer.param_groups[0]["lr"])
        return [rate, *(p.grad for p in agent.local_qnetwork.parameters()), *agent.local_qnetwork.parameters()]
    if step == "update_target":
        agent.update_target()
        return list(agent.target_qnetwork.parameters())
    assert step == "learn"
    calls = []
    learn_once = agent.learn_once
    agent.learn_once = lambda *args: calls.append(1) or learn_once(*args)
    agent.learn(batch, 0.9)
    return [torch.tensor(len(calls))]


# Each option, and the one named step it changes (n-step returns and prioritized replay change the memory too).
STEP_OF_OPTION = {
    "double_dqn": ({"double_dqn": True}, "bellman_targets"),
    "n_step": ({"n_step": 3}, "bellman_targets"),
    "huber": ({"loss": "huber"}, "td_loss"),
    "prioritized": ({"prioritized_replay": True}, "td_loss"),
    "grad_clip": ({"grad_clip": 0.5}, "optimizer_step"),
    "lr_decay": ({"lr_decay_steps": 100, "learning_rate_end": 1e-5}, "optimizer_step"),
    "hard_target": ({"target_update_every": 5}, "update_target"),
    "gradient_steps": ({"gradient_steps": 3}, "learn"),
}


@pytest.mark.parametrize("name", STEP_OF_OPTION)
def test_an_option_changes_exactly_its_one_named_step(name: str) -> None:
    """Each named step run on an agent with the option and on one with every option off, from the same state."""
    options, step = STEP_OF_OPTION[name]
    changed = set()
    for each in (*NAMED_STEPS, "learn"):
        with_option, without = _run_step(each, _prepared(**options)), _run_step(each, _prepared())
        assert len(with_option) == len(without)
        if not all(torch.equal(a, b) for a, b in zip(with_option, without, strict=True)):
            changed.add(each)
    assert changed == {step}


def test_dueling_changes_the_network_and_the_steps_read_it() -> None:
    """With a dueling head the targets and the loss are those of the textbook formulas on the dueling Q-values."""
    dueling, plain = _prepared(dueling=True), _prepared()
    assert type(dueling.local_qnetwork) is type(dueling.target_qnetwork) is DuelingNetwork
    assert type(plain.local_qnetwork) is Network
    states, next_states = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(6))
    actions, rewards, dones = torch.tensor([[0], [1], [2], [3], [0], [1]]), torch.ones(6, 1), torch.zeros(6, 1)
    with torch.no_grad():
        next_q = dueling.target_qnetwork(next_states)
        expected = 1.0 + 0.5 * next_q.max(dim=1, keepdim=True).values
    targets = dueling.bellman_targets(Experiences(states, next_states, actions, rewards, dones), 0.5)
    torch.testing.assert_close(targets, expected, rtol=0, atol=0)
    q_expected = dueling.local_qnetwork(states).gather(1, actions)
    torch.testing.assert_close(dueling.td_loss(q_expected, targets), ((q_expected - expected) ** 2).mean())


def test_options_own_their_fields() -> None:
    assert set(OPTION_FIELDS) == {
        "double_dqn",
        "dueling",
        "n_step",
        "loss",
        "grad_clip",
        "target_update_every",
        "gradient_steps",
        "prioritized_replay",
        "priority_alpha",
        "priority_beta",
        "learning_rate_end",
        "lr_decay_steps",
    }
    assert not set(OPTION_FIELDS) & set(CORE_FIELDS) and len(OPTION_FIELDS) == 12
    assert set(OPTION_FIELDS) == set(OFF) | set(OPTION_EXTRAS)
    # OptionsAgent takes each option by its Config name (and `arrays`, the twin's), off by default as OFF says;
    # agent.Agent takes the core fields.
    parameters = inspect.signature(OptionsAgent.__init__).parameters
    assert set(parameters) - {"self", "args", "kwargs"} == {*OPTION_FIELDS, "arrays"}
    assert {name: parameters[name].default for name in OFF} == OFF
    assert set(CORE_FIELDS) <= set(inspect.signature(Agent.__init__).parameters)


@BOTH
def test_every_option_field_reaches_the_agent(backprop: str) -> None:
    cfg = main.Config(
        backprop=backprop, double_dqn=True, dueling=True, n_step=3, loss="huber", prioritized_replay=True,
        priority_alpha=0.7, priority_beta=0.5, grad_clip=5.0, target_update_every=7, lr_decay_steps=1000,
        learning_rate_end=1e-4, gradient_steps=2, replay_buffer_size=100,
    )  # fmt: skip
    assert options_on(cfg) == list(OFF)
    agent = make_agent(cfg, 8, 4, "cpu", np.random.default_rng(0))
    assert type(agent) is (NumpyAgent if backprop == "numpy" else OptionsAgent)
    seen = {
        "double_dqn": agent.double_dqn,
        "dueling": type(agent.local_qnetwork) is DuelingNetwork,
        "n_step": agent.memory.n_step,
        "loss": agent.loss,
        "prioritized_replay": agent.memory.prioritized and agent.memory.tree is not None,
        "priority_alpha": agent.memory.alpha,
        "priority_beta": agent.memory.beta_start,
        "grad_clip": agent.grad_clip,
        "target_update_every": agent.target_update_every,
        "lr_decay_steps": agent.lr_decay_steps,
        "learning_rate_end": agent.learning_rate_end,
        "gradient_steps": agent.gradient_steps,
    }
    assert seen == {name: getattr(cfg, name) for name in OPTION_FIELDS}
    assert agent.memory.discount_factor == cfg.discount_factor and agent.memory.arrays == (backprop == "numpy")


def test_a_bad_option_value_is_refused() -> None:
    assert option_problem("mse", 0.0, 0, 0, None, 1) is None  # every option off
    bad_values = (
        {"loss": "l1"},
        {"n_step": 0},
        {"grad_clip": -1.0},
        {"gradient_steps": 0},
        {"lr_decay_steps": -5},
        {"target_update_every": -1},
        {"lr_decay_steps": 10, "learning_rate_end": 0.0},
    )
    for bad in bad_values:
        for backprop in ("autograd", "numpy"):
            with pytest.raises(ValueError, match="bad"):
                _agent(backprop, **bad)


# ---------------------------------------------------------------- Double DQN


def test_double_dqn_values_the_local_networks_choice_with_the_target_network() -> None:
    next_q_local = [[1.0, 3.0, 2.0], [5.0, 0.0, 4.0]]
    next_q_target = [[10.0, 20.0, 30.0], [7.0, 9.0, 8.0]]
    # Local picks action 1 in the first row and 0 in the second; plain DQN would take 30 and 9.
    assert double_dqn_next_q(torch.tensor(next_q_local), torch.tensor(next_q_target)).tolist() == [[20.0], [7.0]]
    assert double_dqn_next_q(np.array(next_q_local), np.array(next_q_target)).tolist() == [[20.0], [7.0]]
    assert row_max(torch.tensor(next_q_target)).tolist() == row_max(np.array(next_q_target)).tolist() == [[30.0], [9.0]]


@BOTH
def test_double_dqn_target_inside_the_loss(backprop: str) -> None:
    """One transition: r = 1, gamma = 0.5, the local network prefers action 0, the target values it at 2."""
    agent = _agent(backprop, double_dqn=True, discount_factor=0.5)
    _constant_q(agent.local_qnetwork, [9.0, 1.0, 1.0, 1.0])
    _constant_q(agent.target_qnetwork, [2.0, 8.0, 0.0, 0.0])
    batch = _batch(agent, _state(0)[None], _state(1)[None], [[1]], [[1.0]], [[0.0]])
    loss = agent.learn(batch, 0.5)
    # target = 1 + 0.5 * Q_target(s', argmax Q_local) = 1 + 0.5 * 2 = 2; Q_local(s, 1) = 1; (1 - 2)^2 = 1
    assert loss == pytest.approx(1.0)


@BOTH
def test_without_double_dqn_the_target_network_chooses_and_values(backprop: str) -> None:
    """The same transition with another option on: plain DQN's target 1 + 0.5 * 8 = 5, (1 - 5)^2 = 16."""
    agent = _agent(backprop, loss="huber", discount_factor=0.5)  # an option on: OptionsAgent's bellman_targets
    _constant_q(agent.local_qnetwork, [9.0, 1.0, 1.0, 1.0])
    _constant_q(agent.target_qnetwork, [2.0, 8.0, 0.0, 0.0])
    batch = _batch(agent, _state(0)[None], _state(1)[None], [[1]], [[1.0]], [[0.0]])
    assert agent.learn(batch, 0.5) == pytest.approx(4.0 - 0.5)  # Huber of an error of 4


# ---------------------------------------------------------------- dueling


def test_dueling_aggregation_by_hand() -> None:
    value = np.array([[1.0]])
    advantages = np.array([[1.0, 2.0, 3.0, 6.0]])  # mean 3
    assert dueling_q_values(value, advantages).tolist() == [[-1.0, 0.0, 1.0, 4.0]]
    q = dueling_q_values(torch.tensor([[1.0]]), torch.tensor([[1.0, 2.0, 3.0, 6.0]]))
    assert q.tolist() == [[-1.0, 0.0, 1.0, 4.0]]


def test_dueling_network_forward_and_numpy_agree() -> None:
    net = DuelingNetwork(8, 4, 3, hidden_size=16)
    states = torch.randn(5, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        h = torch.relu(net.fc2(torch.relu(net.fc1(states))))
        advantages, value = net.fc3(h), net.value(h)
        expected = value + advantages - advantages.mean(dim=1, keepdim=True)
        assert torch.allclose(net(states), expected)
    views = numpy_views(net)
    assert len(views) == 4
    np.testing.assert_allclose(numpy_q_values(views, states.numpy()), expected.numpy(), atol=1e-6)
    np.testing.assert_allclose(numpy_q_values(views, states[0].numpy()), expected[0].numpy(), atol=1e-6)


@BOTH
def test_dueling_agent_acts_greedily_on_the_dueling_values(backprop: str) -> None:
    agent = _agent(backprop, dueling=True)
    states = np.random.default_rng(3).normal(size=(50, 8)).astype(np.float32)
    with torch.no_grad():
        expected = agent.local_qnetwork(torch.from_numpy(states)).numpy()
    assert isinstance(agent.local_qnetwork, DuelingNetwork)
    assert [agent.greedy_action(s) for s in states] == expected.argmax(axis=1).tolist()


# ---------------------------------------------------------------- n-step returns


def test_n_step_return_by_hand() -> None:
    assert n_step_return([1.0, 2.0, 3.0], 0.5) == 1 + 0.5 * 2 + 0.25 * 3  # 2.75
    assert n_step_return([4.0], 0.5) == 4.0


@BOTH
def test_n_step_transitions_stop_at_the_episode_end(backprop: str) -> None:
    """n = 3, gamma = 0.5; state i is all i, the reward of step i is i + 1, the 4th step terminates."""
    agent = _agent(backprop, n_step=3, discount_factor=0.5)
    for i in range(4):
        agent.step(_state(i), i % 4, float(i + 1), _state(i + 1), done=(i == 3))
    m = agent.memory
    assert len(m) == 4
    assert m.states[:4, 0].tolist() == [0, 1, 2, 3]
    assert m.actions[:4, 0].tolist() == [0, 1, 2, 3]
    # s0: 1 + 0.5*2 + 0.25*3, bootstraps from s3; the rest see the terminal step and stop there.
    assert m.rewards[:4, 0].tolist() == [2.75, 2 + 0.5 * 3 + 0.25 * 4, 3 + 0.5 * 4, 4.0]
    assert m.next_states[:4, 0].tolist() == [3, 4, 4, 4]
    assert m.dones[:4, 0].tolist() == [0, 1, 1, 1]
    # Next episode: two steps, then the time limit cuts it; nothing half-counted is stored ...
    agent.step(_state(10), 0, 1.0, _state(11), False)
    agent.step(_state(11), 0, 1.0, _state(12), False)
    agent.end_episode()
    assert len(m) == 4
    # ... and the episode after starts afresh: its first transition holds only its own rewards.
    for i in range(3):
        agent.step(_state(20 + i), 1, 1.0, _state(21 + i), False)
    assert len(m) == 5
    assert (m.states[4, 0], m.rewards[4, 0], m.next_states[4, 0], m.dones[4, 0]) == (20, 1.75, 23, 0)


@BOTH
def test_n_step_target_discounts_by_gamma_to_the_n(backprop: str) -> None:
    agent = _agent(backprop, n_step=3, discount_factor=0.5)
    for net in (agent.local_qnetwork, agent.target_qnetwork):
        _constant_q(net, [8.0] * 4)  # every Q-value is 8
    loss = agent.learn(_batch(agent, np.zeros((1, 8)), np.zeros((1, 8)), [[0]], [[1.0]], [[0.0]]), 0.5)
    # target = 1 + 0.5**3 * 8 = 2, estimate 8: (8 - 2)^2 = 36
    assert loss == pytest.approx(36.0)


# ---------------------------------------------------------------- Huber loss, clipping, hard target update


@BOTH
def test_huber_loss_by_hand(backprop: str) -> None:
    """TD errors of 0.5 and 3: Huber gives 0.5 * 0.5^2 = 0.125 and 3 - 0.5 = 2.5, mean 1.3125."""
    agent = _agent(backprop, loss="huber", discount_factor=0.0)
    _constant_q(agent.local_qnetwork, [0.0] * 4)
    # gamma 0: the target is the reward; Q is 0
    batch = _batch(agent, np.zeros((2, 8)), np.zeros((2, 8)), [[0], [0]], [[0.5], [-3.0]], [[1.0], [1.0]])
    assert agent.learn(batch, 0.0) == pytest.approx(1.3125)
    # The slope of the Huber loss is the error clipped to [-1, 1], over the batch: the bias of Q(s, 0)
    # receives -(0.5 + (-1)) / 2 = 0.25 as its gradient.
    assert agent.local_qnetwork.fc3.bias.grad.tolist() == pytest.approx([0.25, 0.0, 0.0, 0.0])


@BOTH
def test_gradient_norm_is_clipped(backprop: str) -> None:
    agent = _agent(backprop, grad_clip=0.01)
    states, next_states = np.random.default_rng(0).normal(size=(2, 32, 8))
    batch = _batch(agent, states, next_states, np.zeros((32, 1)), np.full((32, 1), 100.0), np.zeros((32, 1)))
    agent.learn(batch, 0.99)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in agent.local_qnetwork.parameters()]))
    assert norm.item() == pytest.approx(0.01, rel=1e-4)


def test_numpy_gradient_clipping_by_hand() -> None:
    grad = np.array([3.0, 4.0], dtype=np.float32)  # norm 5
    assert clip_grad_norm_(grad, 10.0) == pytest.approx(5.0)
    np.testing.assert_array_equal(grad, [3.0, 4.0])  # under the limit: untouched
    clip_grad_norm_(grad, 1.0)
    np.testing.assert_allclose(grad, [0.6, 0.8], rtol=1e-5)


@BOTH
def test_hard_target_update_copies_every_n_learning_steps(backprop: str) -> None:
    agent = _agent(backprop, target_update_every=3)
    states, next_states = np.random.default_rng(0).normal(size=(2, 16, 8))
    experiences = _batch(agent, states, next_states, np.zeros((16, 1)), np.ones((16, 1)), np.zeros((16, 1)))
    before = [p.clone() for p in agent.target_qnetwork.parameters()]
    for _ in range(2):
        agent.learn(experiences, 0.99)
    assert all(torch.equal(a, b) for a, b in zip(before, agent.target_qnetwork.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(before, agent.local_qnetwork.parameters(), strict=True))
    agent.learn(experiences, 0.99)
    for a, b in zip(agent.local_qnetwork.parameters(), agent.target_qnetwork.parameters(), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- prioritized replay


def test_sum_tree_samples_in_proportion_to_priority() -> None:
    tree = SumTree(5)  # 8 leaves, 5 used
    tree.update(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))
    assert tree.total() == 10.0
    # Boundaries: [0, 1) -> 0, [1, 3) -> 1, [3, 6) -> 2, [6, 10) -> 3.
    assert tree.find(np.array([0.0, 0.99, 1.0, 2.99, 3.0, 5.99, 6.0, 9.99])).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # An even grid of 1,000 values lands 100, 200, 300 and 400 times.
    grid = (np.arange(1000) + 0.5) / 1000 * tree.total()
    assert np.bincount(tree.find(grid), minlength=5).tolist() == [100, 200, 300, 400, 0]
    tree.update(np.array([1]), np.array([0.0]))  # a zero priority is never drawn
    assert 1 not in tree.find(np.linspace(0, tree.total() - 1e-9, 500))


def test_prioritized_memory_draws_by_priority_with_importance_weights() -> None:
    memory = OptionsMemory(4, 8, "cpu", np.random.default_rng(0), prioritized=True, alpha=1.0, beta=1.0)
    for i in range(4):
        memory.push((_state(i), 0, 0.0, _state(i), False))
    memory.update_priorities(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]) - 1e-5)  # alpha 1: p = |delta|
    counts = np.zeros(4)
    for _ in range(2000):
        counts += np.bincount(memory.sample_indices(2), minlength=4)
    assert counts / counts.sum() == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=0.02)
    memory.sample_indices(4)
    # beta 1: w = (N P(i))^-1 / max = (p_min / p_i); here that is 1 / p_i, normalised by the batch's largest.
    expected = {0: 1.0, 1: 0.5, 2: 1 / 3, 3: 0.25}
    weights = memory.last_weights / memory.last_weights.max() * max(expected[i] for i in memory.last_indices)
    assert weights == pytest.approx([expected[i] for i in memory.last_indices], rel=1e-5)


def test_prioritized_memory_round_trips_its_priorities() -> None:
    memory = OptionsMemory(8, 8, "cpu", np.random.default_rng(0), prioritized=True)
    for i in range(5):
        memory.push((_state(i), 0, 0.0, _state(i), False))
    memory.update_priorities(np.array([2]), np.array([7.0]))
    memory.sample_indices(3)
    copy_ = OptionsMemory(8, 8, prioritized=True)
    copy_.load_state_dict(memory.state_dict())
    assert np.array_equal(copy_.tree.tree, memory.tree.tree) and copy_.max_priority == memory.max_priority
    assert copy_.draws == memory.draws == 1 and len(copy_) == 5


@BOTH
@pytest.mark.parametrize("loss, expected", [("mse", (4 + 0.5 * 16) / 2), ("huber", (1.5 + 0.5 * 3.5) / 2)])
def test_prioritized_loss_weights_each_error_and_makes_it_a_priority(backprop: str, loss: str, expected: float) -> None:
    """Q = 0, gamma 0: TD errors 2 and -4, importance weights 1 and 0.5; alpha 1, so a priority is |error|."""
    agent = _agent(backprop, prioritized_replay=True, priority_alpha=1.0, loss=loss, discount_factor=0.0)
    _constant_q(agent.local_qnetwork, [0.0] * 4)
    for i in range(2):
        agent.memory.push((_state(i), 0, 0.0, _state(i), False))
    agent.memory.last_indices, agent.memory.last_weights = np.array([0, 1]), np.array([1.0, 0.5], dtype=np.float32)
    batch = _batch(agent, np.zeros((2, 8)), np.zeros((2, 8)), [[0], [0]], [[2.0], [-4.0]], [[1.0], [1.0]])
    assert agent.learn(batch, 0.0) == pytest.approx(expected)
    assert agent.memory.tree.priorities(np.array([0, 1])) == pytest.approx([2.0 + 1e-5, 4.0 + 1e-5])
    assert agent.memory.max_priority == pytest.approx(4.0 + 1e-5)


def _index_event(i: int, done: bool = False) -> tuple:
    """Observation = index, reward = 1: state i, next state i + 1."""
    return _state(i), i % 4, 1.0, _state(i + 1), done


def test_n_step_memory_by_hand() -> None:
    """n = 3, gamma = 0.5, reward 1 each step: a full return is 1 + 0.5 + 0.25 = 1.75, bootstrapping from i + 3."""
    memory = OptionsMemory(10, 8, "cpu", np.random.default_rng(0), n_step=3, discount_factor=0.5)
    memory.push(_index_event(0))
    memory.push(_index_event(1))
    assert len(memory) == 0 and len(memory.pending) == 2  # no return is known yet
    for i in range(2, 5):
        memory.push(_index_event(i, done=i == 4))
    # 0, 1 and 2 have all three rewards; at the terminal step 3 and 4 are stored with what is left.
    assert memory.states[:5, 0].tolist() == [0, 1, 2, 3, 4]
    assert memory.rewards[:5, 0].tolist() == [1.75, 1.75, 1.75, 1.5, 1.0]
    assert memory.next_states[:5, 0].tolist() == [3, 4, 5, 5, 5]
    assert memory.dones[:5, 0].tolist() == [0, 0, 1, 1, 1]
    assert not memory.pending
    for i in (10, 11):  # two steps, then the time limit: nothing half-counted is stored
        memory.push(_index_event(i))
    memory.end_episode()
    assert len(memory) == 5 and not memory.pending
    state = memory.state_dict()  # the queue is not part of the saved state: it is empty between episodes
    assert set(state) == {"capacity", "pos", "full", "states", "next_states", "actions", "rewards", "dones"}


def test_n_step_memory_over_prioritized_replay() -> None:
    """Both on, the n-step queue stores into the prioritized memory: each stored transition gets a priority."""
    cfg = main.Config(n_step=2, discount_factor=0.5, prioritized_replay=True, priority_alpha=1.0, replay_buffer_size=8)
    memory = make_agent(cfg, 8, 4, "cpu", np.random.default_rng(0)).memory
    assert type(memory) is OptionsMemory and memory.n_step == 2 and memory.prioritized
    for i in range(4):
        memory.push(_index_event(i))
    assert len(memory) == 3 and memory.rewards[:3, 0].tolist() == [1.5, 1.5, 1.5]  # 1 + 0.5 * 1
    assert memory.next_states[:3, 0].tolist() == [2, 3, 4]
    assert memory.tree.priorities(np.arange(4)).tolist() == [1.0, 1.0, 1.0, 0.0]  # the highest so far, 1
    memory.update_priorities(np.array([1]), np.array([3.0 - 1e-5]))  # alpha 1: priority = |TD error|
    assert memory.tree.total() == pytest.approx(5.0)
    counts = np.bincount(np.concatenate([memory.sample_indices(3) for _ in range(500)]), minlength=3)
    assert counts[1] > counts[0] and counts[1] > counts[2]
    # A terminal step stores the queued transition too, with its shorter return, at the highest priority so far.
    memory.push(_index_event(4, done=True))
    assert len(memory) == 5 and memory.rewards[3:5, 0].tolist() == [1.5, 1.0]
    assert memory.dones[3:5, 0].tolist() == [1, 1]
    assert memory.tree.priorities(np.array([3, 4])) == pytest.approx([3.0, 3.0])


# ---------------------------------------------------------------- with every option off, and on both paths


def _feed(agents: tuple[Agent, ...], steps: int, seed: int) -> None:
    """The same ``steps`` random transitions for every agent, an episode ending every 20 steps."""
    rng = np.random.default_rng(seed)
    for i in range(steps):
        state, next_state, reward = rng.standard_normal(8), rng.standard_normal(8), float(rng.standard_normal())
        action, done = int(rng.integers(4)), i % 20 == 19
        for agent in agents:
            agent.step(state, action, reward, next_state, done)  # same rng seed: the same minibatches
            if done:
                agent.end_episode()


def _trained_pair(options: dict) -> tuple[Agent, Agent]:
    """The same agent on the NumPy and the autograd path, fed the same 120 transitions (with episode ends)."""
    options = options | {"minibatch_size": 16}  # small, so that 120 steps learn often
    agents = (_agent("numpy", **options), _agent("autograd", **options))
    _feed(agents, 120, 1)
    return agents


@pytest.mark.parametrize(
    "options",
    [*EXTRA_OPTIONS.values(), main.PRESETS["fast"] | {"prioritized_replay": True, "loss": "huber"}],
    ids=[*EXTRA_OPTIONS.keys(), "all_together"],
)
def test_every_option_gives_the_same_numbers_in_numpy_and_autograd(options: dict) -> None:
    options = {k: v for k, v in options.items() if k in CORE_FIELDS + OPTION_FIELDS}  # the agent's fields
    fast, plain = _trained_pair(options)
    assert type(fast) is NumpyAgent and type(plain) is OptionsAgent
    assert fast.learn_steps == plain.learn_steps > 20 and np.isfinite(fast.last_loss)
    assert fast.last_loss == pytest.approx(plain.last_loss, rel=1e-3, abs=1e-6)
    for net in ("local_qnetwork", "target_qnetwork"):
        for a, b in zip(getattr(fast, net).parameters(), getattr(plain, net).parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert fast.optimizer.param_groups[0]["lr"] == pytest.approx(plain.optimizer.param_groups[0]["lr"])
    if options.get("prioritized_replay"):
        np.testing.assert_allclose(fast.memory.tree.tree, plain.memory.tree.tree, rtol=1e-3, atol=1e-5)


def test_with_no_option_on_the_agent_is_the_textbook_agent() -> None:
    """Every option off: the agent is agent.Agent itself (or the twin), its memory ReplayMemory (or the twin's)."""
    textbook = _agent("autograd")
    assert type(textbook) is Agent and type(textbook.memory) is ReplayMemory and options_on(main.Config()) == []
    twin = _agent("numpy")
    assert type(twin) is NumpyAgent and type(twin.memory) is OptionsMemory and twin.memory.arrays
    twin, textbook = _trained_pair({})
    assert type(textbook) is Agent and type(twin) is NumpyAgent and textbook.learn_steps == twin.learn_steps > 20
    for net in ("local_qnetwork", "target_qnetwork"):
        for a, b in zip(getattr(twin, net).parameters(), getattr(textbook, net).parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_with_every_option_off_options_agent_learns_exactly_as_agent() -> None:
    """OptionsAgent with its defaults and agent.Agent, fed the same transitions: the same numbers to the bit."""
    agents = []
    for cls in (Agent, OptionsAgent):
        torch.manual_seed(0)
        agents.append(cls(8, 4, minibatch_size=16, replay_buffer_size=500, rng=np.random.default_rng(0)))
    textbook, options = agents
    _feed((textbook, options), 300, 2)
    assert textbook.learn_steps == options.learn_steps > 60
    assert options.last_loss == textbook.last_loss
    assert np.array_equal(options.memory.data, textbook.memory.data)
    for net in ("local_qnetwork", "target_qnetwork"):
        for a, b in zip(getattr(options, net).parameters(), getattr(textbook, net).parameters(), strict=True):
            assert torch.equal(a, b)
    for moments, reference in zip(options.optimizer.state.values(), textbook.optimizer.state.values(), strict=True):
        assert all(torch.equal(moments[k], reference[k]) for k in ("exp_avg", "exp_avg_sq"))


@BOTH
def test_an_agent_with_options_resumes_from_its_state_dict_exactly(backprop: str) -> None:
    """Saved after 100 steps into a fresh agent: both then compute the same next 60 steps to the bit."""
    options = {
        "minibatch_size": 16, "replay_buffer_size": 300, "double_dqn": True, "n_step": 3, "prioritized_replay": True,
        "target_update_every": 3, "lr_decay_steps": 400, "learning_rate_end": 1e-4, "gradient_steps": 2,
    }  # fmt: skip
    first = _agent(backprop, **options)
    _feed((first,), 100, 3)  # the 100th step ends an episode: no n-step queue is left waiting
    saved = copy.deepcopy(first.state_dict())
    assert {"tree", "max_priority", "draws"} <= set(saved["memory"])
    second = _agent(backprop, **options)
    second.load_state_dict(saved)
    _feed((first, second), 60, 4)
    assert first.learn_steps == second.learn_steps > 20 and first.last_loss == second.last_loss
    assert first.optimizer.param_groups[0]["lr"] == second.optimizer.param_groups[0]["lr"] < 5e-4
    for net in ("local_qnetwork", "target_qnetwork"):
        for a, b in zip(getattr(first, net).parameters(), getattr(second, net).parameters(), strict=True):
            assert torch.equal(a, b)
    assert np.array_equal(first.memory.tree.tree, second.memory.tree.tree)


# ---------------------------------------------------------------- gradient steps, learning-rate schedule


@BOTH
def test_gradient_steps_learn_that_many_times_on_fresh_minibatches(backprop: str) -> None:
    one = _agent(backprop, minibatch_size=8, learn_every=4)
    two = _agent(backprop, minibatch_size=8, learn_every=4, gradient_steps=2)
    drawn = []
    sample = two.memory.sample_arrays
    two.memory.sample_arrays = lambda n: drawn.append(sample(n)) or drawn[-1]
    rng = np.random.default_rng(5)
    for _ in range(40):
        state, next_state = rng.standard_normal(8), rng.standard_normal(8)
        for agent in (one, two):
            agent.step(state, int(rng.integers(4)), 1.0, next_state, False)
    assert one.learn_steps == 8 and two.learn_steps == 16  # learns at steps 12, 16, ..., 40
    assert len(drawn) == 16 and not np.array_equal(drawn[0].states, drawn[1].states)  # each step its own minibatch


def test_learning_rate_schedule_by_hand() -> None:
    """Linear from 1e-3 to 1e-4 over 100 environment steps, then flat."""
    for env_steps, expected in [(0, 1e-3), (50, 5.5e-4), (100, 1e-4), (1000, 1e-4)]:
        assert scheduled_learning_rate(1e-3, 1e-4, env_steps, 100) == pytest.approx(expected)


@BOTH
def test_the_optimizer_step_sets_the_scheduled_rate(backprop: str) -> None:
    """Learning every 2 steps, 2 updates each time: 50 updates are 50 environment steps."""
    schedule = {"learning_rate": 1e-3, "learning_rate_end": 1e-4, "lr_decay_steps": 100}
    agent = _agent(backprop, learn_every=2, gradient_steps=2, **schedule)
    for learn_steps, expected in [(0, 1e-3), (50, 5.5e-4), (100, 1e-4), (1000, 1e-4)]:
        agent.learn_steps = learn_steps
        agent.optimizer_step()
        assert agent.optimizer.param_groups[0]["lr"] == pytest.approx(expected)


@BOTH
def test_learning_rate_schedule_reaches_the_optimizer(backprop: str) -> None:
    """Each update uses the scheduled rate; without a schedule the rate never moves."""
    scheduled = _agent(backprop, minibatch_size=8, learning_rate=1e-3, learning_rate_end=1e-4, lr_decay_steps=20)
    constant = _agent(backprop, minibatch_size=8, learning_rate=1e-3)
    rates = []
    step = scheduled.optimizer.step
    scheduled.optimizer.step = lambda: rates.append(scheduled.optimizer.param_groups[0]["lr"]) or step()
    rng = np.random.default_rng(6)
    for _ in range(40):
        state, next_state = rng.standard_normal(8), rng.standard_normal(8)
        for agent in (scheduled, constant):
            agent.step(state, int(rng.integers(4)), 1.0, next_state, False)
    # 40 steps, learning at 12, 16, ..., 40 (a memory of more than 8): update k uses 1e-3 - 9e-4 * 4k / 20.
    np.testing.assert_allclose(rates, [1e-3 - 9e-4 * min(1.0, 4 * k / 20) for k in range(8)])
    assert constant.learn_steps == 8 and constant.optimizer.param_groups[0]["lr"] == 1e-3


def test_linear_epsilon_by_hand() -> None:
    assert main.linear_epsilon(0, 1.0, 0.01, 100) == 1.0
    assert main.linear_epsilon(50, 1.0, 0.01, 100) == pytest.approx(0.505)
    assert main.linear_epsilon(100, 1.0, 0.01, 100) == pytest.approx(0.01)
    assert main.linear_epsilon(10_000, 1.0, 0.01, 100) == pytest.approx(0.01)


# ---------------------------------------------------------------- the preset


def test_preset_sets_fields_and_flags_override_it() -> None:
    assert main.parse_config([]) == main.Config()
    fast = main.parse_config(["--preset", "fast"])
    for key, value in main.PRESETS["fast"].items():
        assert getattr(fast, key) == value
    mine = main.parse_config(["--preset", "fast", "--learning-rate", "1e-3", "--n-step", "1"])
    assert (mine.learning_rate, mine.n_step, mine.double_dqn) == (1e-3, 1, True)


def _count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[int]:
    """Count the calls of ``owner.name`` while still running it."""
    calls: list[int] = []
    original = getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    return calls


def test_preset_fast_learns_on_agent_agents_autograd_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """--preset fast builds OptionsAgent on the autograd path: loss.backward() fills the gradients, Adam steps."""
    assert "backprop" not in main.PRESETS["fast"]
    cfg = main.parse_config(["--preset", "fast"])
    assert cfg.backprop == "autograd"
    fast = make_agent(cfg, 8, 4, "cpu", np.random.default_rng(0))
    assert type(fast) is OptionsAgent and type(fast.optimizer) is torch.optim.Adam
    assert (fast.double_dqn, fast.memory.n_step, fast.grad_clip) == (True, 3, 10.0)
    backward_calls = _count_calls(monkeypatch, torch.Tensor, "backward")
    adam_steps = _count_calls(monkeypatch, torch.optim.Adam, "step")
    before = [p.detach().clone() for p in fast.local_qnetwork.parameters()]
    rng = np.random.default_rng(3)
    for i in range(cfg.minibatch_size + 4 * cfg.learn_every + cfg.n_step):
        fast.step(
            rng.standard_normal(8),
            int(rng.integers(4)),
            float(rng.standard_normal()),
            rng.standard_normal(8),
            i % 50 == 49,
        )
    assert fast.learn_steps >= 3 and len(backward_calls) == len(adam_steps) == fast.learn_steps
    assert all(p.grad is not None for p in fast.local_qnetwork.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, fast.local_qnetwork.parameters(), strict=True))


def test_preset_run_resumes_exactly_and_evaluates(tmp_path: Path) -> None:
    """Dueling weights, n-step queues, priorities and the hard target update all survive a resume."""
    fast = {**main.PRESETS["fast"], "prioritized_replay": True, "hidden_size": 32, "epsilon_decay_steps": 300}
    fast |= {"dueling": True, "target_update_every": 10}
    cfg = main.Config(
        episodes=4,
        max_steps=80,
        minibatch_size=16,
        replay_buffer_size=200,
        video=False,
        checkpoint=str(tmp_path / "w.pth"),
        seed=2,
        save_every=1,
        **{k: v for k, v in fast.items() if k != "minibatch_size"},
    )
    whole = main.train(cfg, out=lambda _: None, root=tmp_path)
    first = main.train(dataclasses.replace(cfg, episodes=2), out=lambda _: None, root=tmp_path)
    resumed = main.train(cfg, out=lambda _: None, resume=first.state_path, root=tmp_path)
    assert resumed.scores == whole.scores
    result = main.evaluate(whole.last_weights, episodes=2, seed=0, out=lambda _: None)
    assert len(result.scores) == 2
