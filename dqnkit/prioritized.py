"""Proportional prioritized experience replay (Schaul et al., 2016), beyond the original DQN."""

from __future__ import annotations

import numpy as np
import torch

from agent import ReplayMemory


class SumTree:
    """A binary tree in one NumPy array whose every node holds the sum of its two children.

    Leaf ``i`` holds the priority of memory slot ``i``; the root holds the total. Finding the
    leaf where a running sum crosses a value walks down one path, so sampling in proportion
    to priority costs ``O(log capacity)`` per draw, done for a whole batch at once.
    """

    def __init__(self, capacity: int) -> None:
        self.leaves = 1 << max(0, (capacity - 1).bit_length())  # a power of two: every leaf at one depth
        self.tree = np.zeros(2 * self.leaves, dtype=np.float64)  # node k has children 2k and 2k+1; root 1

    def total(self) -> float:
        """The sum of all priorities."""
        return float(self.tree[1])

    def priorities(self, indices: np.ndarray) -> np.ndarray:
        """The priorities stored at ``indices``."""
        return self.tree[np.asarray(indices) + self.leaves]

    def update(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        """Set the priorities of ``indices`` and repair the sums above them."""
        node = np.asarray(indices, dtype=np.int64) + self.leaves
        self.tree[node] = priorities
        node //= 2
        while node.size and node[0] >= 1:
            self.tree[node] = self.tree[2 * node] + self.tree[2 * node + 1]
            node //= 2

    def find(self, values: np.ndarray) -> np.ndarray:
        """For each value in ``[0, total)``, the leaf where the running sum of priorities passes it."""
        values = np.array(values, dtype=np.float64)
        node = np.ones(len(values), dtype=np.int64)
        while node.size and node[0] < self.leaves:
            left = 2 * node
            # Rounding can leave a value a hair above the left sum; never step into an empty subtree.
            right = (values >= self.tree[left]) & (self.tree[left + 1] > 0)
            values = np.where(right, values - self.tree[left], values)
            node = np.where(right, left + 1, left)
        return node - self.leaves


class PrioritizedReplayMemory(ReplayMemory):
    """Proportional prioritized replay (Schaul et al., 2016) on :class:`ReplayMemory`'s arrays.

    Slot ``i`` is drawn with probability ``p_i / sum_k p_k``, ``p_i = (|TD error| + 1e-5) ** alpha``,
    so surprising transitions (a first landing, a crash) are replayed more often than the many
    uneventful ones. New transitions get the highest priority seen, so each is replayed at least
    about once. The biased sampling is corrected by importance weights
    ``(N P(i)) ** -beta / max``, with ``beta`` annealed from ``priority_beta`` to 1 over
    :attr:`BETA_STEPS` draws. :meth:`sample_indices` leaves ``last_indices`` and ``last_weights``
    for the learner, which reports the new errors with :meth:`update_priorities`.
    """

    BETA_STEPS = 100_000

    def __init__(
        self,
        capacity: int,
        state_size: int = 8,
        device: torch.device | str = "cpu",
        rng: np.random.Generator | None = None,
        alpha: float = 0.6,
        beta: float = 0.4,
    ) -> None:
        super().__init__(capacity, state_size, device, rng)
        self.alpha, self.beta_start = alpha, beta
        self.tree = SumTree(capacity)
        self.max_priority = 1.0
        self.draws = 0
        self.last_indices = np.zeros(0, dtype=np.int64)
        self.last_weights = np.zeros(0, dtype=np.float32)

    def push(self, event: tuple) -> None:
        """Store the event with the highest priority so far."""
        i = self.pos
        super().push(event)
        self.tree.update(np.array([i]), np.array([self.max_priority]))

    def sample_indices(self, batch_size: int) -> np.ndarray:
        """Draw one slot from each of ``batch_size`` equal slices of the total priority (stratified)."""
        n = len(self)
        if batch_size > n:
            raise ValueError(f"cannot sample {batch_size} experiences from a memory holding {n}")
        total = self.tree.total()
        values = (np.arange(batch_size) + self.rng.random(batch_size)) * (total / batch_size)
        idx = np.minimum(self.tree.find(values), n - 1)
        beta = min(1.0, self.beta_start + (1.0 - self.beta_start) * self.draws / self.BETA_STEPS)
        weights = (n * self.tree.priorities(idx) / total) ** -beta
        self.last_indices, self.last_weights = idx, (weights / weights.max()).astype(np.float32)
        self.draws += 1
        return idx

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Set the priorities of the sampled slots from their new absolute TD errors."""
        priorities = (np.asarray(td_errors, dtype=np.float64) + 1e-5) ** self.alpha
        self.tree.update(indices, priorities)
        self.max_priority = max(self.max_priority, float(priorities.max()))

    def state_dict(self) -> dict:
        """:meth:`ReplayMemory.state_dict` plus the priorities."""
        state = super().state_dict()
        state.update(tree=torch.from_numpy(self.tree.tree.copy()), max_priority=self.max_priority, draws=self.draws)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        super().load_state_dict(state)
        self.tree.tree[:] = state["tree"].numpy()
        self.max_priority, self.draws = float(state["max_priority"]), int(state["draws"])
