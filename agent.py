"""Deep Q-Learning: the replay memory and the agent that learns from it.

This is the code ``python main.py`` runs. The options beyond the original DQN (Double DQN, n-step returns, ...)
and the NumPy fast path extend :class:`Agent` in ``dqnkit/learn/``, overriding its named steps; nothing here knows them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnetwork import Network

Array = TypeVar("Array", torch.Tensor, np.ndarray)


class Experiences(NamedTuple):
    """A sampled minibatch, one row per experience (tensors, or NumPy arrays from ``sample_arrays``)."""

    states: torch.Tensor  # float32 (B, state_size)
    next_states: torch.Tensor  # float32 (B, state_size)
    actions: torch.Tensor  # int64 (B, 1)
    rewards: torch.Tensor  # float32 (B, 1)
    dones: torch.Tensor  # float32 (B, 1), 1.0 where the episode *terminated*


class ReplayMemory:
    """Fixed-size experience replay stored in one preallocated array with a circular index.

    Each row holds one experience: ``state, next_state, action, reward, done`` side by side
    (``2 * state_size + 3`` float32 numbers; an action index is exact in float32). The
    attributes ``states``, ``next_states``, ``actions``, ``rewards`` and ``dones`` are column
    views of that array. Why one array: a minibatch gathers 100 random rows from 100,000,
    and each row is one or two cache lines instead of five scattered reads.

    Args:
        capacity: the most experiences kept; when full, a push overwrites the oldest.
        state_size: length of one observation (8 for LunarLander).
        device: where sampled tensors are put.
        rng: the random generator used to draw minibatches.
    """

    def __init__(
        self,
        capacity: int,
        state_size: int = 8,
        device: torch.device | str = "cpu",
        rng: np.random.Generator | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.device = torch.device(device)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.data = np.zeros((capacity, 2 * state_size + 3), dtype=np.float32)
        self.states, self.next_states, self.actions, self.rewards, self.dones = self._columns(self.data)
        self.pos = 0  # where the next experience goes
        self.full = False  # True once pos has wrapped around

    @staticmethod
    def _columns(rows: np.ndarray) -> Experiences:
        """Views of ``rows``' columns as ``(states, next_states, actions, rewards, dones)``: the row layout."""
        s = (rows.shape[1] - 3) // 2
        return Experiences(rows[:, :s], rows[:, s : 2 * s], rows[:, 2 * s : 2 * s + 1], rows[:, -2:-1], rows[:, -1:])

    def __len__(self) -> int:
        return self.capacity if self.full else self.pos

    def __getstate__(self) -> dict:
        # A copy or a pickle would turn the column views into separate arrays; __setstate__ remakes them.
        return {k: v for k, v in self.__dict__.items() if k not in Experiences._fields}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.states, self.next_states, self.actions, self.rewards, self.dones = self._columns(self.data)

    def push(self, event: tuple) -> None:
        """Store ``event = (state, action, reward, next_state, done)``, overwriting the oldest when full."""
        state, action, reward, next_state, done = event
        i = self.pos
        self.states[i] = state
        self.actions[i, 0] = action
        self.rewards[i, 0] = reward
        self.next_states[i] = next_state
        self.dones[i, 0] = done
        self.pos = (i + 1) % self.capacity
        if self.pos == 0:
            self.full = True

    def sample_indices(self, batch_size: int) -> np.ndarray:
        """Draw ``batch_size`` distinct stored positions uniformly at random."""
        n = len(self)
        if batch_size > n:
            raise ValueError(f"cannot sample {batch_size} experiences from a memory holding {n}")
        return self.rng.choice(n, size=batch_size, replace=False)

    def sample_arrays(self, batch_size: int) -> Experiences:
        """A uniformly drawn minibatch as NumPy arrays (actions as int64)."""
        rows = self.data.take(self.sample_indices(batch_size), axis=0)  # one gather, a fresh array
        batch = self._columns(rows)
        return batch._replace(actions=batch.actions.astype(np.int64))

    def sample(self, batch_size: int) -> Experiences:
        """Return a uniformly drawn minibatch as ``(states, next_states, actions, rewards, dones)`` tensors."""
        # The gathered rows are a fresh array, so from_numpy never aliases the storage.
        return Experiences(*(torch.from_numpy(a).to(self.device) for a in self.sample_arrays(batch_size)))

    def state_dict(self) -> dict:
        """The stored experiences and circular position, as plain tensors and ints (safe to ``torch.load``)."""
        n = len(self)
        columns = {name: torch.from_numpy(getattr(self, name)[:n].copy()) for name in Experiences._fields}
        columns["actions"] = columns["actions"].long()
        return {"capacity": self.capacity, "pos": self.pos, "full": self.full, **columns}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned; the capacity must match."""
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"replay capacity {state['capacity']} in the file, {self.capacity} here")
        n = state["states"].shape[0]
        for name in Experiences._fields:
            getattr(self, name)[:n] = state[name].numpy()
        self.pos = int(state["pos"])
        self.full = bool(state["full"])


def bellman_target(rewards: Array, next_q_max: Array, dones: Array, discount_factor: float) -> Array:
    """The Q-learning target ``r + gamma * max_a' Q_target(s', a') * (1 - done)``.

    ``done`` must mean *terminated* (the lander crashed or came to rest): there is
    no future reward to bootstrap from. A time-limit cut-off is not terminal, the
    state still has a future, so it is stored with ``done = 0``. Works on tensors
    and on NumPy arrays alike.
    """
    return rewards + discount_factor * next_q_max * (1.0 - dones)


def checked_loss(loss: float, learn_steps: int) -> float:
    """``loss``, or ``FloatingPointError`` when it is not finite: checked before the weights move."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"the loss became {loss} at learning step {learn_steps + 1}")
    return loss


class Agent:
    """A DQN agent: local and target Q-networks, Adam, replay memory and epsilon-greedy acting.

    Args:
        state_size: observation length.
        action_size: number of discrete actions.
        learning_rate: Adam step size (5e-4).
        minibatch_size: experiences per learning step (100).
        discount_factor: gamma (0.99).
        replay_buffer_size: replay memory capacity (100,000).
        interpolation_parameter: tau of the soft target update (1e-3).
        learn_every: learn once every this many calls of :meth:`step` (4).
        hidden_size: width of the hidden layers (64).
        device: where the networks live and minibatches go.
        rng: random generator for exploration and minibatch sampling.
        network_class: the Q-network, :class:`nnetwork.Network` in the original.
        memory_class: the replay memory, :class:`ReplayMemory` in the original (called with its arguments).
    """

    def __init__(
        self,
        state_size: int,
        action_size: int,
        *,
        learning_rate: float = 5e-4,
        minibatch_size: int = 100,
        discount_factor: float = 0.99,
        replay_buffer_size: int = 100_000,
        interpolation_parameter: float = 1e-3,
        learn_every: int = 4,
        hidden_size: int = 64,
        device: torch.device | str = "cpu",
        rng: np.random.Generator | None = None,
        network_class: type[Network] = Network,
        memory_class: Callable[..., ReplayMemory] = ReplayMemory,
    ) -> None:
        self.state_size = state_size
        self.action_size = action_size
        self.learning_rate = learning_rate
        self.minibatch_size = minibatch_size
        self.discount_factor = discount_factor
        self.interpolation_parameter = interpolation_parameter
        self.learn_every = learn_every
        self.device = torch.device(device)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.local_qnetwork = network_class(state_size, action_size, hidden_size=hidden_size).to(self.device)
        self.target_qnetwork = network_class(state_size, action_size, hidden_size=hidden_size).to(self.device)
        # Both networks start equal, as in the original, whose network seeded itself alike
        # in both constructors; from then on the soft update lets the target trail behind.
        self.target_qnetwork.load_state_dict(self.local_qnetwork.state_dict())
        # fused: one kernel updates every parameter; the same Adam arithmetic, fewer Python calls.
        self.optimizer = torch.optim.Adam(self.local_qnetwork.parameters(), lr=learning_rate, fused=True)
        self.memory = memory_class(replay_buffer_size, state_size, self.device, self.rng)
        self.t_step = 0  # calls of step() modulo learn_every: the phase of the learning rhythm
        self.learn_steps = 0
        self.last_loss = float("nan")

    def step(self, state, action: int, reward: float, next_state, done: bool) -> None:
        """Store one transition and, every ``learn_every`` calls, learn from a random minibatch."""
        self.memory.push((state, action, reward, next_state, done))
        self.t_step = (self.t_step + 1) % self.learn_every
        # Learn only once the memory holds more than one minibatch, as in the original.
        if self.t_step == 0 and len(self.memory) > self.minibatch_size:
            experiences = self.memory.sample(self.minibatch_size)
            self.learn(experiences, self.discount_factor)

    def act(self, state, epsilon: float = 0.0) -> int:
        """Epsilon-greedy: a random action with probability ``epsilon``, else the greedy one."""
        if self.rng.random() >= epsilon:
            return self.greedy_action(state)
        return int(self.rng.integers(self.action_size))

    def greedy_action(self, state) -> int:
        """The action with the highest Q-value of the local network; draws no random numbers."""
        state = torch.as_tensor(np.asarray(state, dtype=np.float32), device=self.device)
        with torch.inference_mode():  # no autograd bookkeeping for acting
            action_values = self.local_qnetwork(state)
        return int(action_values.argmax())

    def learn(self, experiences: Experiences, discount_factor: float) -> float:
        """One learning step: the named steps below, in order (an option overrides one); returns the loss."""
        q_targets = self.bellman_targets(experiences, discount_factor)
        states, _, actions, _, _ = experiences
        # Q_local(s, a) for the action actually taken in each sampled transition.
        q_expected = self.local_qnetwork(states).gather(1, actions)
        loss = self.td_loss(q_expected, q_targets)
        self.optimizer.zero_grad()
        loss.backward()
        self.last_loss = checked_loss(loss.item(), self.learn_steps)
        self.optimizer_step()
        self.update_target()
        self.learn_steps += 1
        return self.last_loss

    @torch.no_grad()
    def bellman_targets(self, experiences: Experiences, discount_factor: float) -> torch.Tensor:
        """The targets ``r + gamma * max_a' Q_target(s', a') * (1 - done)``, shape ``(B, 1)``, no gradient."""
        _, next_states, _, rewards, dones = experiences
        # max over a' of the *target* network: the slowly moving network keeps the target steady.
        next_q_max = self.target_qnetwork(next_states).max(dim=1, keepdim=True).values
        return bellman_target(rewards, next_q_max, dones, discount_factor)

    def td_loss(self, q_expected: torch.Tensor, q_targets: torch.Tensor) -> torch.Tensor:
        """The loss DQN minimises: the squared TD error (target minus estimate), averaged over the minibatch."""
        loss = F.mse_loss(q_expected, q_targets)
        return loss

    def optimizer_step(self) -> None:
        """Move the weights against the gradient of the loss: one Adam step."""
        self.optimizer.step()

    def update_target(self) -> None:
        """Let the target network trail the local one: the soft update by ``interpolation_parameter``."""
        self.soft_update(self.local_qnetwork, self.target_qnetwork, self.interpolation_parameter)

    @torch.no_grad()
    def soft_update(self, local_model: nn.Module, target_model: nn.Module, interpolation_parameter: float) -> None:
        """Move the target weights a fraction ``tau`` towards the local ones, in place (Polyak averaging).

        ``theta_target <- tau * theta_local + (1 - tau) * theta_target``, which is what
        ``lerp_`` computes as ``theta_target + tau * (theta_local - theta_target)``.
        In place matters: the target network keeps its own tensors, and only their values move.
        """
        for target_param, local_param in zip(target_model.parameters(), local_model.parameters(), strict=True):
            target_param.lerp_(local_param, interpolation_parameter)

    def state_dict(self) -> dict:
        """Everything needed to continue learning exactly: networks, optimizer, memory, counters, RNG."""
        return {
            "local_qnetwork": self.local_qnetwork.state_dict(),
            "target_qnetwork": self.target_qnetwork.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "memory": self.memory.state_dict(),
            "t_step": self.t_step,
            "learn_steps": self.learn_steps,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (into an agent built with the same sizes)."""
        self.local_qnetwork.load_state_dict(state["local_qnetwork"])
        self.target_qnetwork.load_state_dict(state["target_qnetwork"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.memory.load_state_dict(state["memory"])
        self.t_step = int(state["t_step"])
        self.learn_steps = int(state["learn_steps"])
        self.rng.bit_generator.state = state["rng"]

    def end_episode(self) -> None:
        """Called by the episode loop after every episode; plain DQN keeps nothing between steps."""
