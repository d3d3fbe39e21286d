"""The original's names, called as a user of the original would call them, with hand-known results.

The original description names ``ReplayMemory(capacity)`` with ``push(event)`` and ``sample(batch_size)``,
``Agent(state_size, action_size)`` with ``step``, ``act``, ``learn`` and ``soft_update``, and
``Network(state_size, action_size, seed)`` with ``forward``. A restructuring must never rename them.
"""

from __future__ import annotations

import numpy as np
import torch

from agent import Agent, ReplayMemory
from nnetwork import Network


def _event(i: int, done: bool = False) -> tuple:
    return (np.full(8, i, np.float32), i % 4, float(i), np.full(8, i + 0.5, np.float32), done)


def test_replay_memory_capacity_push_and_sample() -> None:
    memory = ReplayMemory(3)
    for i in range(5):  # 0 and 1 pushed out by 3 and 4
        memory.push(_event(i, done=i == 4))
    states, next_states, actions, rewards, dones = memory.sample(3)
    assert sorted(rewards.squeeze(1).tolist()) == [2.0, 3.0, 4.0]
    for s, n, a, r, d in zip(states, next_states, actions, rewards, dones, strict=True):
        i = int(r)  # each row stays one transition: every field encodes the same i
        assert s.tolist() == [float(i)] * 8 and n.tolist() == [i + 0.5] * 8
        assert a.item() == i % 4 and d.item() == float(i == 4)


def test_network_seed_is_the_third_positional_argument() -> None:
    net = Network(8, 4, 42)
    assert (net.fc1.in_features, net.fc1.out_features) == (8, 64)  # 42 is a seed, not a width
    assert (net.fc2.in_features, net.fc2.out_features) == (64, 64)
    assert (net.fc3.in_features, net.fc3.out_features) == (64, 4)
    same, other = Network(8, 4, 42), Network(8, 4, 43)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), same.parameters(), strict=True))
    assert not torch.equal(net.fc1.weight, other.fc1.weight)
    assert Network(8, 4, 42, hidden_size=16).fc1.out_features == 16  # the width is a keyword


def test_network_seed_leaves_the_global_random_stream_alone() -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    Network(8, 4, 42)
    assert torch.equal(torch.rand(3), expected)


def test_network_forward_by_hand() -> None:
    net = Network(2, 1, 0, hidden_size=1)
    with torch.no_grad():
        for layer, bias in ((net.fc1, 0.0), (net.fc2, 1.0), (net.fc3, -5.0)):
            layer.weight.fill_(2.0)
            layer.bias.fill_(bias)
    # fc1: relu(2 * (1 + 2)) = 6; fc2: relu(2 * 6 + 1) = 13; fc3: 2 * 13 - 5 = 21
    assert net.forward(torch.tensor([1.0, 2.0])).item() == 21.0


def test_agent_act_greedy_and_random() -> None:
    torch.manual_seed(0)
    agent = Agent(8, 4)
    state = np.ones(8, np.float32)
    best = int(agent.local_qnetwork(torch.from_numpy(state)).argmax())
    assert agent.act(state) == best  # epsilon defaults to 0: greedy
    assert {agent.act(state, epsilon=1.0) for _ in range(200)} == {0, 1, 2, 3}


def test_agent_step_learns_every_fourth_step_once_memory_holds_a_minibatch() -> None:
    torch.manual_seed(0)
    agent = Agent(8, 4, minibatch_size=4)
    before = [p.clone() for p in agent.local_qnetwork.parameters()]
    for i in range(4):  # four stored, not more than one minibatch of 4: no learning yet
        agent.step(*_event(i))
    assert all(torch.equal(a, b) for a, b in zip(before, agent.local_qnetwork.parameters(), strict=True))
    for i in range(4, 8):  # the eighth call learns
        agent.step(*_event(i))
    assert not torch.equal(before[0], agent.local_qnetwork.fc1.weight)


def test_agent_learn_with_a_discount_factor() -> None:
    torch.manual_seed(0)
    agent = Agent(8, 4, learning_rate=0.1)
    with torch.no_grad():
        for p in agent.target_qnetwork.parameters():
            p.zero_()
        agent.target_qnetwork.fc3.bias.copy_(torch.tensor([1.0, 4.0, 2.0, 3.0]))  # max_a' Q_target(s', a') = 4
    states = torch.zeros(2, 8)
    experiences = (states, states, torch.tensor([[0], [3]]), torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [1.0]]))
    q = agent.local_qnetwork(states).gather(1, experiences[2]).detach()
    loss = agent.learn(experiences, 0.5)
    # targets 1 + 0.5 * 4 = 3 and 2 (terminated): the loss is the mean squared error against Q_local(s, a)
    assert loss == ((q - torch.tensor([[3.0], [2.0]])) ** 2).mean().item()


def test_agent_soft_update_blends_the_target_towards_the_local_model() -> None:
    agent = Agent(8, 4)
    local, target = Network(1, 1, 0, hidden_size=1), Network(1, 1, 1, hidden_size=1)
    with torch.no_grad():
        for p in local.parameters():
            p.fill_(10.0)
        for p in target.parameters():
            p.fill_(2.0)
    agent.soft_update(agent.local_qnetwork, agent.target_qnetwork, 0.25)  # the agent's own, as learn() does
    agent.soft_update(local, target, 0.25)
    for p in target.parameters():  # 0.25 * 10 + 0.75 * 2 = 4
        assert torch.equal(p, torch.full_like(p, 4.0))
    assert all(torch.equal(p, torch.full_like(p, 10.0)) for p in local.parameters())
