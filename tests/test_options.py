"""The options beyond the original DQN, each checked with numbers worked out by hand."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

import main
from agent import Agent, Experiences, ReplayMemory
from dqnkit.learn import CORE_FIELDS, OPTION_FIELDS, agent_class, compose, make_agent, memory_class
from dqnkit.learn.memory import NStepMemory, PrioritizedReplayMemory, SumTree, n_step_return
from dqnkit.learn.options import (
    OPTIONS,
    DoubleDQN,
    GradientClipping,
    GradientSteps,
    HardTargetUpdate,
    Huber,
    LearningRateDecay,
    double_dqn_next_q,
)
from dqnkit.learn.twin import NumpyAgent, clip_grad_norm_, numpy_dueling_q_values, numpy_views
from nnetwork import DuelingNetwork, dueling_q_values

BOTH = pytest.mark.parametrize("backprop", ["autograd", "numpy"])

EXTRA_OPTIONS = {
    "double_dqn": {"double_dqn": True},
    "dueling": {"dueling": True},
    "n_step": {"n_step": 3},
    "huber": {"loss": "huber"},
    "grad_clip": {"grad_clip": 10.0},
    "hard_target": {"target_update_every": 5},
    "prioritized": {"prioritized_replay": True},
}


def _agent(backprop: str = "numpy", **options) -> Agent:
    """The agent ``main.Config(**options)`` asks for, built as a run builds it."""
    torch.manual_seed(0)
    cfg = main.Config(backprop=backprop, **{"minibatch_size": 1000, **options})  # a big minibatch: step() never learns
    return make_agent(cfg, 8, 4, "cpu", np.random.default_rng(0))


def _state(i: float) -> np.ndarray:
    return np.full(8, i, dtype=np.float32)


# ---------------------------------------------------------------- each option overrides one named step

NAMED_STEPS = ("bellman_targets", "td_loss", "optimizer_step", "update_target")


def _overridden(cls: type) -> set[str]:
    """The methods of agent.Agent that ``cls`` itself defines (not ``__init__``: building is no step)."""
    return {name for name, value in vars(cls).items() if callable(value) and name in vars(Agent) and name != "__init__"}


@pytest.mark.parametrize(
    "option, step",
    [
        (DoubleDQN, "bellman_targets"),
        (Huber, "td_loss"),
        (GradientClipping, "optimizer_step"),
        (HardTargetUpdate, "update_target"),
        (LearningRateDecay, "optimizer_step"),
    ],
    ids=lambda x: x.__name__ if isinstance(x, type) else x,
)
def test_an_option_overrides_exactly_one_named_step(option: type, step: str) -> None:
    assert issubclass(option, Agent) and step in NAMED_STEPS and callable(vars(Agent)[step])
    assert _overridden(option) == {step}


def test_no_option_reimplements_step_or_learn() -> None:
    classes = [c for option in OPTIONS for c in option.__mro__ if c.__module__ == "dqnkit.learn.options"]
    assert {"NStepReturns", "PrioritizedReplay", "Dueling", "GradientSteps", "TDLoss"} <= {c.__name__ for c in classes}
    assert not [c.__name__ for c in classes if "step" in vars(c)]
    # Only the gradient steps define learn, as a loop that calls the inherited one.
    assert [c for c in set(classes) if "learn" in vars(c)] == [GradientSteps]
    source = inspect.getsource(GradientSteps.learn)
    assert source.count("super().learn(") == 2 and "backward" not in source and "optimizer" not in source


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
    cfg = main.Config(double_dqn=True, loss="huber", prioritized_replay=True, n_step=3, backprop="numpy")
    cls = agent_class(cfg)
    assert cls.__name__ == "NumpyAgent+NStepReturns+PrioritizedReplay+Huber+DoubleDQN"
    assert cls is compose(*cls.__bases__) and cls.__mro__[-3:] == (NumpyAgent, Agent, object)


def test_a_bad_option_value_is_refused() -> None:
    for bad in ({"loss": "l1"}, {"n_step": 0}, {"grad_clip": -1.0}, {"gradient_steps": 0}, {"lr_decay_steps": -5}):
        with pytest.raises(ValueError, match="bad"):
            _agent("autograd", **bad)


# ---------------------------------------------------------------- Double DQN


def test_double_dqn_values_the_local_networks_choice_with_the_target_network() -> None:
    next_q_local = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 4.0]])
    next_q_target = torch.tensor([[10.0, 20.0, 30.0], [7.0, 9.0, 8.0]])
    # Local picks action 1 in the first row and 0 in the second; plain DQN would take 30 and 9.
    assert double_dqn_next_q(next_q_local, next_q_target).tolist() == [[20.0], [7.0]]


@BOTH
def test_double_dqn_target_inside_the_loss(backprop: str) -> None:
    """One transition: r = 1, gamma = 0.5, the local network prefers action 0, the target values it at 2."""
    agent = _agent(backprop, double_dqn=True, discount_factor=0.5)
    for net, next_values in ((agent.local_qnetwork, [9.0, 1.0, 1.0, 1.0]), (agent.target_qnetwork, [2.0, 8.0, 0, 0])):
        with torch.no_grad():
            for p in net.parameters():
                p.zero_()
            net.fc3.bias.copy_(torch.tensor(next_values))  # constant Q-values, whatever the state
    batch = (_state(0)[None], _state(1)[None], np.array([[1]]), np.array([[1.0]]), np.array([[0.0]]))
    batch = [torch.as_tensor(np.asarray(a, dtype=np.int64 if i == 2 else np.float32)) for i, a in enumerate(batch)]
    loss = agent.learn(main_experiences(batch), 0.5)
    # target = 1 + 0.5 * Q_target(s', argmax Q_local) = 1 + 0.5 * 2 = 2; Q_local(s, 1) = 1; (1 - 2)^2 = 1
    assert loss == pytest.approx(1.0)


def main_experiences(batch: list[torch.Tensor]) -> Experiences:
    return Experiences(*batch)


# ---------------------------------------------------------------- dueling


def test_dueling_aggregation_by_hand() -> None:
    value = np.array([[1.0]])
    advantages = np.array([[1.0, 2.0, 3.0, 6.0]])  # mean 3
    assert dueling_q_values(value, advantages).tolist() == [[-1.0, 0.0, 1.0, 4.0]]
    q = dueling_q_values(torch.tensor([[1.0]]), torch.tensor([[1.0, 2.0, 3.0, 6.0]]))
    assert q.tolist() == [[-1.0, 0.0, 1.0, 4.0]]


def test_dueling_network_forward_and_numpy_agree() -> None:
    torch.manual_seed(3)
    net = DuelingNetwork(8, 4, 16)
    state = torch.randn(8)
    with torch.no_grad():
        h = torch.relu(net.fc2(torch.relu(net.fc1(state))))
        advantages, value = net.fc3(h), net.value(h)
        expected = value + advantages - advantages.mean()
        assert torch.allclose(net(state), expected)
    assert np.allclose(numpy_dueling_q_values(numpy_views(net), state.numpy()), expected.numpy(), atol=1e-6)


@BOTH
def test_dueling_agent_acts_greedily_on_the_dueling_values(backprop: str) -> None:
    agent = _agent(backprop, dueling=True)
    state = _state(0.3)
    with torch.no_grad():
        expected = agent.local_qnetwork(torch.from_numpy(state)).numpy()
    assert isinstance(agent.local_qnetwork, DuelingNetwork)
    assert agent.greedy_action(state) == int(np.argmax(expected))


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
    with torch.no_grad():
        for net in (agent.local_qnetwork, agent.target_qnetwork):
            for p in net.parameters():
                p.zero_()
            net.fc3.bias.fill_(8.0)  # every Q-value is 8
    batch = [torch.zeros(1, 8), torch.zeros(1, 8), torch.zeros(1, 1, dtype=torch.int64), torch.ones(1, 1)]
    loss = agent.learn(main_experiences([*batch, torch.zeros(1, 1)]), 0.5)
    # target = 1 + 0.5**3 * 8 = 2, estimate 8: (8 - 2)^2 = 36
    assert loss == pytest.approx(36.0)


# ---------------------------------------------------------------- Huber loss, clipping, hard target update


@BOTH
def test_huber_loss_by_hand(backprop: str) -> None:
    """TD errors of 0.5 and 3: Huber gives 0.5 * 0.5^2 = 0.125 and 3 - 0.5 = 2.5, mean 1.3125."""
    agent = _agent(backprop, loss="huber", discount_factor=0.0)
    with torch.no_grad():
        for p in agent.local_qnetwork.parameters():
            p.zero_()
    rewards = torch.tensor([[0.5], [-3.0]])  # gamma 0: the target is the reward; Q is 0
    batch = [torch.zeros(2, 8), torch.zeros(2, 8), torch.zeros(2, 1, dtype=torch.int64), rewards, torch.ones(2, 1)]
    assert agent.learn(main_experiences(batch), 0.0) == pytest.approx(1.3125)


@BOTH
def test_gradient_norm_is_clipped(backprop: str) -> None:
    agent = _agent(backprop, grad_clip=0.01)
    batch = [torch.randn(32, 8), torch.randn(32, 8), torch.zeros(32, 1, dtype=torch.int64), 100 * torch.ones(32, 1)]
    agent.learn(main_experiences([*batch, torch.zeros(32, 1)]), 0.99)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in agent.local_qnetwork.parameters()]))
    assert norm.item() == pytest.approx(0.01, rel=1e-4)


@BOTH
def test_hard_target_update_copies_every_n_learning_steps(backprop: str) -> None:
    agent = _agent(backprop, target_update_every=3)
    batch = [torch.randn(16, 8), torch.randn(16, 8), torch.zeros(16, 1, dtype=torch.int64), torch.ones(16, 1)]
    experiences = main_experiences([*batch, torch.zeros(16, 1)])
    before = [p.clone() for p in agent.target_qnetwork.parameters()]
    for _ in range(2):
        agent.learn(experiences, 0.99)
    assert all(torch.equal(a, b) for a, b in zip(before, agent.target_qnetwork.parameters(), strict=True))
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
    memory = PrioritizedReplayMemory(4, 8, rng=np.random.default_rng(0), alpha=1.0, beta=1.0)
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
    memory = PrioritizedReplayMemory(8, 8, rng=np.random.default_rng(0))
    for i in range(5):
        memory.push((_state(i), 0, 0.0, _state(i), False))
    memory.update_priorities(np.array([2]), np.array([7.0]))
    copy = PrioritizedReplayMemory(8, 8)
    copy.load_state_dict(memory.state_dict())
    assert np.array_equal(copy.tree.tree, memory.tree.tree) and copy.max_priority == memory.max_priority


def _index_event(i: int, done: bool = False) -> tuple:
    """Observation = index, reward = 1: state i, next state i + 1."""
    return _state(i), i % 4, 1.0, _state(i + 1), done


def test_n_step_memory_by_hand() -> None:
    """n = 3, gamma = 0.5, reward 1 each step: a full return is 1 + 0.5 + 0.25 = 1.75, bootstrapping from i + 3."""
    memory = NStepMemory(10, 8, rng=np.random.default_rng(0), n_step=3, discount_factor=0.5)
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
    """Mixed, the n-step queue pushes into the prioritized memory: each stored transition gets a priority."""
    cfg = main.Config(n_step=2, discount_factor=0.5, prioritized_replay=True, priority_alpha=1.0, replay_buffer_size=8)
    memory = memory_class(cfg)(8, 8, "cpu", np.random.default_rng(0))
    assert isinstance(memory, NStepMemory) and isinstance(memory, PrioritizedReplayMemory)
    for i in range(4):
        memory.push(_index_event(i))
    assert len(memory) == 3 and memory.rewards[:3, 0].tolist() == [1.5, 1.5, 1.5]  # 1 + 0.5 * 1
    assert memory.next_states[:3, 0].tolist() == [2, 3, 4]
    assert memory.tree.priorities(np.arange(4)).tolist() == [1.0, 1.0, 1.0, 0.0]  # the highest so far, 1
    memory.update_priorities(np.array([1]), np.array([3.0 - 1e-5]))  # alpha 1: priority = |TD error|
    assert memory.tree.total() == pytest.approx(5.0)
    counts = np.bincount(np.concatenate([memory.sample_indices(3) for _ in range(500)]), minlength=3)
    assert counts[1] > counts[0] and counts[1] > counts[2]


# ---------------------------------------------------------------- schedule, agent wiring, preset


def test_linear_epsilon_by_hand() -> None:
    assert main.linear_epsilon(0, 1.0, 0.01, 100) == 1.0
    assert main.linear_epsilon(50, 1.0, 0.01, 100) == pytest.approx(0.505)
    assert main.linear_epsilon(100, 1.0, 0.01, 100) == pytest.approx(0.01)
    assert main.linear_epsilon(10_000, 1.0, 0.01, 100) == pytest.approx(0.01)


def _trained_pair(options: dict) -> tuple[Agent, Agent]:
    """The same agent on the NumPy and the autograd path, fed the same 120 transitions (with episode ends)."""
    options = options | {"minibatch_size": 16}  # small, so that 120 steps learn often
    agents = (_agent("numpy", **options), _agent("autograd", **options))
    rng = np.random.default_rng(1)
    for i in range(120):
        state, next_state, reward = rng.standard_normal(8), rng.standard_normal(8), float(rng.standard_normal())
        action, done = int(rng.integers(4)), i % 20 == 19
        for agent in agents:
            agent.step(state, action, reward, next_state, done)  # same rng seed: the same minibatches
    return agents


@pytest.mark.parametrize(
    "options",
    [*EXTRA_OPTIONS.values(), main.PRESETS["fast"] | {"prioritized_replay": True, "loss": "huber"}],
    ids=[*EXTRA_OPTIONS.keys(), "all_together"],
)
def test_every_option_gives_the_same_numbers_in_numpy_and_autograd(options: dict) -> None:
    options = {k: v for k, v in options.items() if k in CORE_FIELDS + OPTION_FIELDS}  # the agent's fields
    fast, plain = _trained_pair(options)
    assert fast.learn_steps == plain.learn_steps > 20 and np.isfinite(fast.last_loss)
    assert fast.last_loss == pytest.approx(plain.last_loss, rel=1e-3, abs=1e-6)
    for net in ("local_qnetwork", "target_qnetwork"):
        for a, b in zip(getattr(fast, net).parameters(), getattr(plain, net).parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if options.get("prioritized_replay"):
        np.testing.assert_allclose(fast.memory.tree.tree, plain.memory.tree.tree, rtol=1e-3, atol=1e-5)


def test_numpy_gradient_clipping_by_hand() -> None:
    grad = np.array([3.0, 4.0], dtype=np.float32)  # norm 5
    assert clip_grad_norm_(grad, 10.0) == pytest.approx(5.0)
    np.testing.assert_array_equal(grad, [3.0, 4.0])  # under the limit: untouched
    clip_grad_norm_(grad, 1.0)
    np.testing.assert_allclose(grad, [0.6, 0.8], rtol=1e-5)


def test_with_no_option_on_the_agent_is_the_textbook_agent() -> None:
    """Every option off: the composed class is agent.Agent itself (or the twin), and its memory ReplayMemory."""
    assert agent_class(main.Config()) is Agent and memory_class(main.Config()) is ReplayMemory
    assert agent_class(main.Config(backprop="numpy")) is NumpyAgent
    twin, textbook = _trained_pair({})
    assert type(textbook) is Agent and type(twin) is NumpyAgent and textbook.learn_steps == twin.learn_steps > 20
    for net in ("local_qnetwork", "target_qnetwork"):
        for a, b in zip(getattr(twin, net).parameters(), getattr(textbook, net).parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_preset_sets_fields_and_flags_override_it() -> None:
    assert main.parse_config([]) == main.Config()
    fast = main.parse_config(["--preset", "fast"])
    for key, value in main.PRESETS["fast"].items():
        assert getattr(fast, key) == value
    mine = main.parse_config(["--preset", "fast", "--learning-rate", "1e-3", "--n-step", "1"])
    assert (mine.learning_rate, mine.n_step, mine.double_dqn) == (1e-3, 1, True)


def test_preset_fast_learns_on_agent_agents_autograd_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """--preset fast runs agent.Agent.learn: loss.backward() fills the gradients, torch.optim.Adam steps."""
    assert "backprop" not in main.PRESETS["fast"]
    cfg = main.parse_config(["--preset", "fast"])
    assert cfg.backprop == "autograd"
    fast = make_agent(cfg, 8, 4, "cpu", np.random.default_rng(0))
    assert isinstance(fast, Agent) and not isinstance(fast, NumpyAgent)
    assert isinstance(fast.optimizer, torch.optim.Adam)
    backward_calls = []
    original = torch.Tensor.backward
    monkeypatch.setattr(torch.Tensor, "backward", lambda t, *a, **k: backward_calls.append(1) or original(t, *a, **k))
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
    assert fast.learn_steps >= 1 and len(backward_calls) == fast.learn_steps * cfg.gradient_steps
    assert all(p.grad is not None for p in fast.local_qnetwork.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, fast.local_qnetwork.parameters(), strict=True))


def test_preset_run_resumes_exactly_and_evaluates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dueling weights, n-step queues, priorities and the hard target update all survive a resume."""
    monkeypatch.chdir(tmp_path)
    fast = {**main.PRESETS["fast"], "prioritized_replay": True, "hidden_size": 32, "epsilon_decay_steps": 300}
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
    whole = main.train(cfg, out=lambda _: None)
    first = main.train(dataclasses.replace(cfg, episodes=2), out=lambda _: None)
    resumed = main.train(cfg, out=lambda _: None, resume=first.state_path)
    assert resumed.scores == whole.scores
    result = main.evaluate(whole.last_weights, episodes=2, seed=0, out=lambda _: None)
    assert len(result.scores) == 2


def test_gradient_steps_learn_that_many_times_on_fresh_minibatches() -> None:
    one, two = _agent(minibatch_size=8, learn_every=4), _agent(minibatch_size=8, learn_every=4, gradient_steps=2)
    drawn = []
    sample = two.memory.sample_arrays
    two.memory.sample_arrays = lambda n: drawn.append(sample(n)) or drawn[-1]
    rng = np.random.default_rng(5)
    for _ in range(40):
        state, next_state = rng.standard_normal(8), rng.standard_normal(8)
        for agent in (one, two):
            agent.step(state, int(rng.integers(4)), 1.0, next_state, False)
    assert one.learn_steps == 8 and two.learn_steps == 16  # learns at steps 12, 16, ..., 40
    assert not np.array_equal(drawn[0].states, drawn[1].states)  # each step its own minibatch


def test_learning_rate_schedule_by_hand() -> None:
    """Linear from 1e-3 to 1e-4 over 100 environment steps; learning every 2 steps, 2 updates each time."""
    agent = _agent(learning_rate=1e-3, learning_rate_end=1e-4, lr_decay_steps=100, learn_every=2, gradient_steps=2)
    for learn_steps, expected in [(0, 1e-3), (50, 5.5e-4), (100, 1e-4), (1000, 1e-4)]:
        agent.learn_steps = learn_steps  # 50 updates = 50 environment steps here
        assert agent.scheduled_learning_rate() == pytest.approx(expected)


def test_learning_rate_schedule_reaches_the_optimizer() -> None:
    """Each update uses the scheduled rate; without a schedule the rate never moves."""
    scheduled = _agent(minibatch_size=8, learning_rate=1e-3, learning_rate_end=1e-4, lr_decay_steps=20)
    constant = _agent(minibatch_size=8, learning_rate=1e-3)
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
    assert constant.optimizer.param_groups[0]["lr"] == 1e-3
