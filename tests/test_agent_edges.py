"""Agent, ReplayMemory and the networks at the edges that mutation testing found untested (docs/mutation.md).

Defaults, boundaries, error messages and devices, each with hand-known numbers. The ``meta`` device
holds tensors without data: it shows where a tensor goes without needing a GPU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from agent import Agent, Experiences, ReplayMemory, checked_loss
from nnetwork import DuelingNetwork


def _event(i: int) -> tuple:
    """A transition whose state and reward are its index ``i``."""
    return (np.full(8, i, np.float32), i % 4, float(i), np.full(8, i + 0.5, np.float32), False)


class Scripted:
    """A stand-in for ``np.random.Generator``: ``random()`` returns ``draws`` in turn, ``integers(n)`` always 3."""

    def __init__(self, draws: list[float]) -> None:
        self.draws = list(draws)

    def random(self) -> float:
        return self.draws.pop(0)

    def integers(self, n: int) -> int:
        return 3


class DeviceRecorder(nn.Module):
    """A Q-network stand-in that records the device of each input and values action 2 highest."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: list[torch.device] = []

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        self.devices.append(state.device)
        return torch.tensor([0.0, 0.0, 2.0, 0.0])


# ---------------------------------------------------------------- Agent


def test_agent_defaults_are_the_original_hyperparameters() -> None:
    agent = Agent(8, 4, rng=np.random.default_rng(0))
    assert (agent.state_size, agent.action_size) == (8, 4)
    assert (agent.minibatch_size, agent.discount_factor, agent.interpolation_parameter) == (100, 0.99, 1e-3)
    assert (agent.learning_rate, agent.learn_every, agent.memory.capacity) == (5e-4, 4, 100_000)
    for network in (agent.local_qnetwork, agent.target_qnetwork):
        assert [network.fc1.out_features, network.fc2.out_features] == [64, 64]


def test_a_fresh_agent_has_learned_nothing_and_its_loss_is_nan() -> None:
    agent = Agent(8, 4, rng=np.random.default_rng(0))
    assert (agent.t_step, agent.learn_steps) == (0, 0)
    assert isinstance(agent.last_loss, float) and math.isnan(
        agent.last_loss
    )  # what a metrics row shows before learning


def test_without_a_generator_the_agent_and_its_memory_share_a_new_one() -> None:
    agent = Agent(8, 4, minibatch_size=2)
    assert isinstance(agent.rng, np.random.Generator) and agent.memory.rng is agent.rng
    assert agent.act(np.zeros(8, np.float32), 1.0) in range(4)
    memory = ReplayMemory(5)
    for i in range(3):
        memory.push(_event(i))
    assert sorted(memory.sample(3).rewards.squeeze(1).tolist()) == [0.0, 1.0, 2.0]


def test_act_is_greedy_when_no_epsilon_is_given() -> None:
    agent = Agent(8, 4, rng=np.random.default_rng(1))
    states = np.random.default_rng(2).normal(size=(40, 8)).astype(np.float32)
    assert [agent.act(s) for s in states] == [agent.greedy_action(s) for s in states]


@pytest.mark.parametrize(
    ("draw", "epsilon", "action"),
    [(0.25, 0.25, 1), (0.2499, 0.25, 3), (0.0, 0.0, 1), (0.9999, 1.0, 3)],
    ids=["draw equal to epsilon: greedy", "draw below epsilon: random", "epsilon 0: greedy", "epsilon 1: random"],
)
def test_act_is_random_exactly_when_the_draw_is_below_epsilon(draw: float, epsilon: float, action: int) -> None:
    """A random action with probability epsilon: random when ``rng.random() < epsilon``, else greedy (action 1 here)."""
    agent = Agent(8, 4, rng=Scripted([draw]))
    with torch.no_grad():
        for p in agent.local_qnetwork.parameters():
            p.zero_()
        agent.local_qnetwork.fc3.bias[1] = 1.0  # every state: action 1 is the greedy one
    assert agent.act(np.zeros(8, np.float32), epsilon) == action  # the scripted random action is 3


def test_greedy_action_takes_float64_arrays_and_lists() -> None:
    agent = Agent(8, 4, rng=np.random.default_rng(4))
    states = np.random.default_rng(5).normal(size=(20, 8))  # float64, as a user's array may be
    expected = [agent.greedy_action(s.astype(np.float32)) for s in states]
    assert [agent.greedy_action(s) for s in states] == expected
    assert [agent.greedy_action(s.tolist()) for s in states] == expected


def test_the_networks_and_the_states_go_to_the_agents_device() -> None:
    agent = Agent(8, 4, device="meta", rng=np.random.default_rng(0))
    assert agent.local_qnetwork.fc1.weight.device.type == "meta"
    assert agent.target_qnetwork.fc3.bias.device.type == "meta"
    agent.local_qnetwork = DeviceRecorder()
    assert agent.greedy_action([0.0] * 8) == 2
    assert [d.type for d in agent.local_qnetwork.devices] == ["meta"]


def test_step_counts_its_calls_modulo_learn_every() -> None:
    """``t_step``, saved in the training state, is the phase of the learning rhythm: calls so far, modulo 4."""
    agent = Agent(8, 4, minibatch_size=2, rng=np.random.default_rng(0))
    phases, learned = [], []
    for i in range(6):
        agent.step(*_event(i))
        phases.append(agent.t_step)
        learned.append(agent.learn_steps)
    assert phases == [1, 2, 3, 0, 1, 2]
    assert learned == [0, 0, 0, 1, 1, 1]


def test_checked_loss_names_the_learning_step_that_failed() -> None:
    assert checked_loss(1.5, 0) == 1.5
    with pytest.raises(FloatingPointError, match=r"^the loss became nan at learning step 8$"):
        checked_loss(float("nan"), 7)
    with pytest.raises(FloatingPointError, match=r"^the loss became inf at learning step 1$"):
        checked_loss(float("inf"), 0)


def test_learn_stops_at_a_non_finite_loss_before_the_weights_move() -> None:
    agent = Agent(8, 4, rng=np.random.default_rng(0))
    agent.learn_steps = 2
    before = {k: v.clone() for k, v in agent.local_qnetwork.state_dict().items()}
    batch = Experiences(
        torch.zeros(2, 8),
        torch.zeros(2, 8),
        torch.zeros(2, 1, dtype=torch.int64),
        torch.full((2, 1), math.nan),
        torch.zeros(2, 1),
    )
    with pytest.raises(FloatingPointError, match=r"^the loss became nan at learning step 3$"):
        agent.learn(batch, 0.99)
    assert all(torch.equal(v, before[k]) for k, v in agent.local_qnetwork.state_dict().items())
    assert agent.learn_steps == 2


# ---------------------------------------------------------------- ReplayMemory


def test_a_memory_of_one_keeps_the_last_experience_and_none_holds_zero() -> None:
    memory = ReplayMemory(1, rng=np.random.default_rng(0))
    for i in range(3):
        memory.push(_event(i))
    assert len(memory) == 1 and memory.states[0, 0] == 2.0 and memory.full
    with pytest.raises(ValueError, match=r"^capacity must be at least 1, got 0$"):
        ReplayMemory(0)


def test_a_memory_samples_onto_its_device() -> None:
    memory = ReplayMemory(5, device="meta", rng=np.random.default_rng(0))
    for i in range(3):
        memory.push(_event(i))
    assert [t.device.type for t in memory.sample(2)] == ["meta"] * 5


def test_the_state_dict_holds_only_the_stored_rows() -> None:
    """3 of 5 rows used: the saved state has 3 rows (a training state of an early run stays small), not full."""
    memory = ReplayMemory(5, rng=np.random.default_rng(0))
    for i in range(3):
        memory.push(_event(i))
    state = memory.state_dict()
    assert (state["capacity"], state["pos"], state["full"]) == (5, 3, False) and state["full"] is False
    assert state["states"].shape == (3, 8) and state["rewards"].squeeze(1).tolist() == [0.0, 1.0, 2.0]


def test_loading_a_memory_of_another_capacity_names_both() -> None:
    state = ReplayMemory(4, rng=np.random.default_rng(0)).state_dict()
    with pytest.raises(ValueError, match=r"^replay capacity 4 in the file, 5 here$"):
        ReplayMemory(5, rng=np.random.default_rng(0)).load_state_dict(state)


# ---------------------------------------------------------------- networks


def test_the_dueling_network_has_the_original_width_by_default() -> None:
    net = DuelingNetwork(8, 4)
    assert [net.fc1.out_features, net.fc2.out_features, net.value.in_features, net.fc3.in_features] == [64] * 4
