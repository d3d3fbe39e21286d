"""The reference of ``benchmarks/speed.py``: a DQN written the way tutorials write it, to time the project's against.

A list of tuples as replay memory, ``random.sample`` and five ``np.vstack`` per minibatch, ``eval()`` /
``train()`` around every action, the default (single-tensor) ``torch.optim.Adam``, and the soft update as
``copy_(tau * local + (1 - tau) * target)`` per parameter; ``main.Config``'s default hyperparameters.
"""

from __future__ import annotations

import random

import common  # noqa: F401  # the repository on sys.path, one BLAS thread before NumPy loads  # isort: skip
import numpy as np
import torch
import torch.nn.functional as F

import main
from nnetwork import Network

CFG = main.Config()  # the original hyperparameters


class ReferenceReplayMemory:
    """Replay memory the way tutorials write it: a list of tuples, stacked on every sample."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.memory = capacity, []

    def __len__(self) -> int:
        return len(self.memory)

    def push(self, event: tuple) -> None:
        self.memory.append(event)
        if len(self.memory) > self.capacity:
            del self.memory[0]

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """``(states, next_states, actions, rewards, dones)`` of a random minibatch, by five ``np.vstack``."""
        experiences = random.sample(self.memory, k=batch_size)
        states = torch.from_numpy(np.vstack([e[0] for e in experiences])).float()
        actions = torch.from_numpy(np.vstack([e[1] for e in experiences])).long()
        rewards = torch.from_numpy(np.vstack([e[2] for e in experiences])).float()
        next_states = torch.from_numpy(np.vstack([e[3] for e in experiences])).float()
        dones = torch.from_numpy(np.vstack([e[4] for e in experiences]).astype(np.uint8)).float()
        return states, next_states, actions, rewards, dones


class ReferenceAgent:
    """Tutorial-style DQN agent with ``main.Config``'s default hyperparameters."""

    def __init__(self, state_size: int, action_size: int) -> None:
        self.action_size = action_size
        self.local_qnetwork = Network(state_size, action_size)
        self.target_qnetwork = Network(state_size, action_size)
        self.optimizer = torch.optim.Adam(self.local_qnetwork.parameters(), lr=CFG.learning_rate)
        self.memory = ReferenceReplayMemory(CFG.replay_buffer_size)
        self.t_step = 0

    def step(self, state: np.ndarray, action: int, reward: float, next_state: np.ndarray, done: bool) -> None:
        self.memory.push((state, action, reward, next_state, done))
        self.t_step = (self.t_step + 1) % CFG.learn_every
        if self.t_step == 0 and len(self.memory) > CFG.minibatch_size:
            self.learn(self.memory.sample(CFG.minibatch_size), CFG.discount_factor)

    def act(self, state: np.ndarray, epsilon: float = 0.0) -> int:
        state_t = torch.from_numpy(state).float().unsqueeze(0)
        self.local_qnetwork.eval()
        with torch.no_grad():
            action_values = self.local_qnetwork(state_t)
        self.local_qnetwork.train()
        if random.random() > epsilon:
            return np.argmax(action_values.cpu().data.numpy())
        return random.choice(np.arange(self.action_size))

    def learn(self, experiences: tuple[torch.Tensor, ...], discount_factor: float) -> None:
        states, next_states, actions, rewards, dones = experiences
        next_q_targets = self.target_qnetwork(next_states).detach().max(1)[0].unsqueeze(1)
        q_targets = rewards + discount_factor * next_q_targets * (1 - dones)
        loss = F.mse_loss(self.local_qnetwork(states).gather(1, actions), q_targets)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        tau = CFG.interpolation_parameter  # the soft update, one parameter at a time
        for target, local in zip(self.target_qnetwork.parameters(), self.local_qnetwork.parameters(), strict=True):
            target.data.copy_(tau * local.data + (1.0 - tau) * target.data)
