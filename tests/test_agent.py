"""ReplayMemory, Network and Agent with hand-known data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent import Agent, ReplayMemory, bellman_target
from nnetwork import Network


def _event(i: int, done: bool = False) -> tuple:
    """A transition whose every field encodes its index i."""
    return (np.full(8, i, np.float32), i % 4, float(i), np.full(8, i + 0.5, np.float32), done)


# ---------------------------------------------------------------- ReplayMemory


def test_memory_len_counts_pushes_until_full() -> None:
    memory = ReplayMemory(5, rng=np.random.default_rng(0))
    assert len(memory) == 0
    for i in range(3):
        memory.push(_event(i))
    assert len(memory) == 3
    for i in range(3, 12):
        memory.push(_event(i))
    assert len(memory) == 5


def test_memory_evicts_oldest_first() -> None:
    memory = ReplayMemory(5, rng=np.random.default_rng(0))
    for i in range(7):  # 0 and 1 must be gone, 2..6 kept
        memory.push(_event(i))
    kept = sorted(memory.states[:, 0].tolist())
    assert kept == [2.0, 3.0, 4.0, 5.0, 6.0]
    # Positions 0 and 1 were overwritten by 5 and 6, in that order.
    assert memory.states[0, 0] == 5.0 and memory.states[1, 0] == 6.0
    batch = memory.sample(5)
    assert sorted(batch.rewards.squeeze(1).tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]


def test_memory_sample_shapes_dtypes_and_device() -> None:
    memory = ReplayMemory(50, rng=np.random.default_rng(1), device="cpu")
    for i in range(20):
        memory.push(_event(i, done=(i % 5 == 0)))
    states, next_states, actions, rewards, dones = memory.sample(10)
    assert states.shape == (10, 8) and states.dtype == torch.float32
    assert next_states.shape == (10, 8) and next_states.dtype == torch.float32
    assert actions.shape == (10, 1) and actions.dtype == torch.int64
    assert rewards.shape == (10, 1) and rewards.dtype == torch.float32
    assert dones.shape == (10, 1) and dones.dtype == torch.float32
    for t in (states, next_states, actions, rewards, dones):
        assert t.device == torch.device("cpu")


def test_memory_sample_rows_stay_together_and_are_distinct() -> None:
    memory = ReplayMemory(100, rng=np.random.default_rng(2))
    for i in range(30):
        memory.push(_event(i, done=(i % 3 == 0)))
    batch = memory.sample(30)
    idx = batch.rewards.squeeze(1).numpy().astype(int)
    assert sorted(idx.tolist()) == list(range(30))  # without replacement: a permutation
    np.testing.assert_array_equal(batch.states.numpy(), np.repeat(idx[:, None], 8, 1).astype(np.float32))
    np.testing.assert_array_equal(batch.next_states.numpy()[:, 0], idx + 0.5)
    np.testing.assert_array_equal(batch.actions.numpy()[:, 0], idx % 4)
    np.testing.assert_array_equal(batch.dones.numpy()[:, 0], (idx % 3 == 0).astype(np.float32))


def test_memory_refuses_oversized_sample() -> None:
    memory = ReplayMemory(10, rng=np.random.default_rng(0))
    memory.push(_event(0))
    with pytest.raises(ValueError, match="cannot sample 2"):
        memory.sample(2)


def test_memory_state_dict_round_trip() -> None:
    memory = ReplayMemory(4, rng=np.random.default_rng(0))
    for i in range(6):
        memory.push(_event(i))
    copy = ReplayMemory(4, rng=np.random.default_rng(0))
    copy.load_state_dict(memory.state_dict())
    assert (copy.pos, copy.full, len(copy)) == (memory.pos, memory.full, 4)
    np.testing.assert_array_equal(copy.states, memory.states)
    np.testing.assert_array_equal(copy.rewards, memory.rewards)


def test_memory_storage_is_preallocated_and_small() -> None:
    memory = ReplayMemory(100_000, state_size=8)
    # One float32 row per experience: 2 * 8 state numbers + action + reward + done = 76 bytes.
    assert memory.data.shape == (100_000, 19) and memory.data.nbytes == 100_000 * 76
    for column in (memory.states, memory.next_states, memory.actions, memory.rewards, memory.dones):
        assert np.shares_memory(column, memory.data)  # views, not copies


def test_numpy_sample_equals_the_tensor_sample() -> None:
    memory = ReplayMemory(100, rng=np.random.default_rng(3))
    for i in range(40):
        memory.push(_event(i, done=(i % 3 == 0)))
    state = memory.rng.bit_generator.state
    arrays = memory.sample_arrays(16)
    memory.rng.bit_generator.state = state
    tensors = memory.sample(16)
    assert arrays.actions.dtype == np.int64
    for a, t in zip(arrays, tensors, strict=True):
        np.testing.assert_array_equal(a, t.numpy())


# ---------------------------------------------------------------- Network


def test_network_layers_and_shapes() -> None:
    net = Network(8, 4)
    assert [type(m).__name__ for m in net.children()] == ["Linear", "Linear", "Linear"]
    assert (net.fc1.in_features, net.fc1.out_features) == (8, 64)
    assert (net.fc2.in_features, net.fc2.out_features) == (64, 64)
    assert (net.fc3.in_features, net.fc3.out_features) == (64, 4)
    assert net(torch.zeros(8)).shape == (4,)
    assert net(torch.zeros(32, 8)).shape == (32, 4)


def test_network_applies_relu_after_first_two_layers_only() -> None:
    net = Network(2, 1, hidden_size=1)
    with torch.no_grad():
        net.fc1.weight.fill_(1.0), net.fc1.bias.fill_(0.0)
        net.fc2.weight.fill_(1.0), net.fc2.bias.fill_(0.0)
        net.fc3.weight.fill_(1.0), net.fc3.bias.fill_(-5.0)
    # fc1: relu(-3) = 0 -> fc2: 0 -> fc3: -5 (no ReLU on the output, so negatives survive).
    assert net(torch.tensor([-1.0, -2.0])).item() == -5.0
    # fc1: 3 -> fc2: 3 -> fc3: -2.
    assert net(torch.tensor([1.0, 2.0])).item() == -2.0


def test_network_constructor_does_not_seed() -> None:
    torch.manual_seed(123)
    a = Network(8, 4)
    b = Network(8, 4)
    assert not torch.equal(a.fc1.weight, b.fc1.weight)


# ---------------------------------------------------------------- Agent


def _agent(**kwargs) -> Agent:
    torch.manual_seed(0)
    return Agent(8, 4, rng=np.random.default_rng(0), **kwargs)


def test_agent_attributes() -> None:
    agent = _agent()
    assert isinstance(agent.local_qnetwork, Network) and isinstance(agent.target_qnetwork, Network)
    assert isinstance(agent.optimizer, torch.optim.Adam)
    assert agent.optimizer.param_groups[0]["lr"] == 5e-4
    assert isinstance(agent.memory, ReplayMemory) and agent.memory.capacity == 100_000


def test_act_greedy_at_epsilon_zero() -> None:
    agent = _agent()
    states = np.random.default_rng(3).normal(size=(200, 8)).astype(np.float32)
    for s in states:
        expected = int(agent.local_qnetwork(torch.from_numpy(s)).argmax())
        assert agent.act(s, 0.0) == expected


def test_act_random_at_epsilon_one() -> None:
    agent = _agent()
    state = np.zeros(8, np.float32)
    actions = [agent.act(state, 1.0) for _ in range(4000)]
    counts = np.bincount(actions, minlength=4)
    assert counts.sum() == 4000 and len(counts) == 4
    assert counts.min() > 850  # uniform: 1000 each, +-150 is over 5 standard deviations


def test_bellman_target_by_hand() -> None:
    rewards = torch.tensor([[1.0], [-2.0], [0.5]])
    next_q_max = torch.tensor([[10.0], [4.0], [-3.0]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    target = bellman_target(rewards, next_q_max, dones, 0.9)
    # 1 + 0.9 * 10 = 10; -2 (terminal: no future); 0.5 + 0.9 * -3 = -2.2
    torch.testing.assert_close(target, torch.tensor([[10.0], [-2.0], [-2.2]]))


def test_learn_uses_target_network_and_terminal_flag() -> None:
    agent = _agent(learning_rate=0.1)
    with torch.no_grad():
        for p in agent.target_qnetwork.parameters():
            p.zero_()
        agent.target_qnetwork.fc3.bias.copy_(torch.tensor([1.0, 5.0, 2.0, 3.0]))  # max_a' Q_target = 5
    states = torch.zeros(2, 8)
    batch = (states, states, torch.tensor([[0], [1]]), torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [1.0]]))
    q_before = agent.local_qnetwork(states).gather(1, batch[2]).detach()
    loss = agent.learn(batch, 0.5)
    # targets: 1 + 0.5 * 5 = 3.5 and 2 (done): the loss is their mean squared error against Q_local(s, a).
    expected = ((q_before - torch.tensor([[3.5], [2.0]])) ** 2).mean().item()
    assert loss == pytest.approx(expected, rel=1e-5)


def test_learn_runs_its_named_steps_in_order() -> None:
    """Targets, TD loss, optimizer step, target update: the steps an option overrides, once each, in this order."""
    calls: list[str] = []

    class Recording(Agent):
        pass

    for name in ("bellman_targets", "td_loss", "optimizer_step", "update_target"):
        step = getattr(Agent, name)
        setattr(Recording, name, lambda self, *args, _n=name, _f=step: calls.append(_n) or _f(self, *args))
    torch.manual_seed(0)
    recording, plain = Recording(8, 4, rng=np.random.default_rng(0)), _agent()
    states, next_states, actions = torch.randn(5, 8), torch.randn(5, 8), torch.zeros(5, 1, dtype=torch.int64)
    batch = (states, next_states, actions, torch.ones(5, 1), torch.zeros(5, 1))
    assert recording.learn(batch, 0.99) == plain.learn(batch, 0.99)
    assert calls == ["bellman_targets", "td_loss", "optimizer_step", "update_target"]
    for a, b in zip(recording.target_qnetwork.parameters(), plain.target_qnetwork.parameters(), strict=True):
        assert torch.equal(a, b)


def test_soft_update_by_hand() -> None:
    local, target = Network(1, 1, hidden_size=1), Network(1, 1, hidden_size=1)
    with torch.no_grad():
        for p in local.parameters():
            p.fill_(10.0)
        for p in target.parameters():
            p.fill_(2.0)
    _agent().soft_update(local, target, 0.25)
    for p in target.parameters():  # 0.25 * 10 + 0.75 * 2 = 4
        torch.testing.assert_close(p, torch.full_like(p, 4.0))
    for p in local.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 10.0))


def test_soft_update_matches_plain_formula() -> None:
    torch.manual_seed(1)
    local, target = Network(8, 4), Network(8, 4)
    tau = 1e-3
    expected = [tau * lp + (1 - tau) * tp for lp, tp in zip(local.parameters(), target.parameters(), strict=True)]
    _agent().soft_update(local, target, tau)
    for e, p in zip(expected, target.parameters(), strict=True):
        torch.testing.assert_close(p, e, rtol=0, atol=1e-6)


def test_step_learns_on_every_fourth_call_once_memory_exceeds_a_minibatch() -> None:
    agent = _agent(minibatch_size=8)
    learned_at = []
    for call in range(1, 41):
        before = agent.learn_steps
        agent.step(*_event(call))
        if agent.learn_steps > before:
            learned_at.append(call)
    # Calls 4, 8 have at most 8 experiences (not more than a minibatch); from 12 on, every 4th call learns.
    assert learned_at == [12, 16, 20, 24, 28, 32, 36, 40]


def test_both_networks_start_equal() -> None:
    """As in the original, whose network seeded itself alike in both constructors."""
    agent = _agent()
    for a, b in zip(agent.local_qnetwork.parameters(), agent.target_qnetwork.parameters(), strict=True):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()  # equal values, separate tensors


def test_learn_changes_local_weights_and_moves_target() -> None:
    agent = _agent(minibatch_size=4)
    for i in range(8):
        agent.step(*_event(i))
    local_before = [p.clone() for p in agent.local_qnetwork.parameters()]
    target_before = [p.clone() for p in agent.target_qnetwork.parameters()]
    agent.learn(agent.memory.sample(4), 0.99)
    assert any(not torch.equal(a, b) for a, b in zip(local_before, agent.local_qnetwork.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(target_before, agent.target_qnetwork.parameters(), strict=True))


def test_greedy_action_follows_weights_after_learning() -> None:
    agent = _agent(minibatch_size=4)
    for i in range(40):
        agent.step(*_event(i))
    assert agent.learn_steps > 0
    states = np.random.default_rng(5).normal(size=(50, 8)).astype(np.float32)
    with torch.no_grad():
        expected = agent.local_qnetwork(torch.from_numpy(states)).argmax(dim=1).tolist()
    assert [agent.greedy_action(s) for s in states] == expected


def test_sampled_batch_is_the_plain_gather() -> None:
    agent = _agent(minibatch_size=32)
    for i in range(200):
        agent.memory.push(_event(i, done=i % 9 == 0))
    state = agent.memory.rng.bit_generator.state
    batch = agent.memory.sample(32)
    agent.memory.rng.bit_generator.state = state
    idx = agent.memory.sample_indices(32)
    for name, tensor in zip(batch._fields, batch, strict=True):
        np.testing.assert_array_equal(tensor.numpy(), getattr(agent.memory, name)[idx])
