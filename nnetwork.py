"""The Q-network: a small multilayer perceptron mapping a state to one Q-value per action."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Array = TypeVar("Array", torch.Tensor, np.ndarray)


class Network(nn.Module):
    """Three fully connected layers, ReLU after the first two.

    Args:
        state_size: length of the observation vector (8 for LunarLander).
        action_size: number of discrete actions (4 for LunarLander).
        seed: as in the original, a seed for the initial weights: two networks built with one seed
            start equal. Unlike the original, it leaves PyTorch's global random stream as it was.
            None (what ``agent.Agent`` passes) draws them from that stream, seeded by ``main.seed_everything``.
        hidden_size: units in each of the two hidden layers (64 in the original); a keyword.
    """

    def __init__(self, state_size: int, action_size: int, seed: int | None = None, *, hidden_size: int = 64) -> None:
        super().__init__()
        self.state_size = state_size
        self.action_size = action_size
        with torch.random.fork_rng(devices=[], enabled=seed is not None):  # the global stream is restored after
            if seed is not None:
                torch.manual_seed(seed)
            self.build_layers(state_size, action_size, hidden_size)

    def build_layers(self, state_size: int, action_size: int, hidden_size: int) -> None:
        """The layers, their initial weights drawn from PyTorch's random stream."""
        self.fc1 = nn.Linear(state_size, hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)
        self.fc3 = nn.Linear(hidden_size, action_size)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """Return Q-values of shape ``(..., action_size)`` for states of shape ``(..., state_size)``."""
        x = F.relu(self.fc1(state))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class DuelingNetwork(Network):
    """The same trunk with two heads: a state value ``V(s)`` and advantages ``A(s, a)`` (Wang et al., 2016).

    ``Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a')``. Subtracting the mean pins down the
    split between ``V`` and ``A`` (otherwise any constant could move between them).
    Why it helps: most LunarLander states have a value that hardly depends on the
    action (falling far from the ground), and the value head learns it from every
    sample instead of once per action. ``fc3`` is the advantage head, so the layer
    names of :class:`Network` still hold; ``value`` is the extra head.
    Beyond the original: used only with ``--dueling``.
    """

    def build_layers(self, state_size: int, action_size: int, hidden_size: int) -> None:
        """:class:`Network`'s layers and the value head."""
        super().build_layers(state_size, action_size, hidden_size)
        self.value = nn.Linear(hidden_size, 1)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """Return ``V(s) + A(s, a) - mean(A(s, .))`` of shape ``(..., action_size)``."""
        x = F.relu(self.fc1(state))
        x = F.relu(self.fc2(x))
        return dueling_q_values(self.value(x), self.fc3(x))


def dueling_q_values(value: Array, advantages: Array) -> Array:
    """The dueling aggregation ``Q = V + A - mean(A)`` over the last axis; tensors or NumPy arrays."""
    return value + advantages - advantages.mean(-1, keepdims=True)
