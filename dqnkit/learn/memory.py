"""The replay memory of the options: n-step returns and prioritized replay on :class:`agent.ReplayMemory`'s arrays."""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from agent import Experiences, ReplayMemory


def n_step_return(rewards: list[float], discount_factor: float) -> float:
    """``r_0 + gamma r_1 + gamma^2 r_2 + ...``: the discounted sum of consecutive rewards."""
    total = 0.0
    for reward in reversed(rewards):
        total = reward + discount_factor * total
    return total


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


class OptionsMemory(ReplayMemory):
    """:class:`agent.ReplayMemory` with n-step returns and prioritized replay, each off by default.

    **n-step returns** (Sutton, 1988; as Stable-Baselines3's ``NStepReplayBuffer``): :meth:`push`
    queues each transition until ``n_step`` rewards are known, then stores ``(s_t, a_t, R_t, s_{t+n},
    done)`` with ``R_t = r_t + gamma r_{t+1} + ... + gamma^(n-1) r_{t+n-1}``. At a terminal step every
    queued transition is stored with its shorter return and ``done = 1``: nothing lies beyond the end.

    **Prioritized replay** (Schaul et al., 2016, proportional): slot ``i`` is drawn with probability
    ``p_i / sum_k p_k``, ``p_i = (|TD error| + 1e-5) ** alpha``; a new transition gets the highest
    priority seen, so each is replayed about once. Importance weights ``(N P(i)) ** -beta / max`` undo
    the bias, ``beta`` annealed to 1 over :attr:`BETA_STEPS` draws; :meth:`sample_indices` leaves
    ``last_indices`` and ``last_weights`` for the learner, which reports :meth:`update_priorities`.
    With ``arrays``, :meth:`sample` gives NumPy arrays (``sample_arrays``), for the NumPy twin.
    """

    BETA_STEPS = 100_000

    def __init__(
        self,
        capacity: int,
        state_size: int = 8,
        device: torch.device | str = "cpu",
        rng: np.random.Generator | None = None,
        *,
        n_step: int = 1,
        discount_factor: float = 0.99,
        prioritized: bool = False,
        alpha: float = 0.6,
        beta: float = 0.4,
        arrays: bool = False,
    ) -> None:
        if n_step < 1:
            raise ValueError(f"bad option: n_step={n_step}, must be 1 or more")
        super().__init__(capacity, state_size, device, rng)
        self.n_step, self.discount_factor = n_step, discount_factor
        self.pending: deque[tuple[np.ndarray, int, float]] = deque()  # the last n_step - 1 transitions
        self.prioritized, self.alpha, self.beta_start, self.arrays = prioritized, alpha, beta, arrays
        self.tree = SumTree(self.capacity) if prioritized else None
        self.max_priority, self.draws = 1.0, 0
        self.last_indices = np.zeros(0, dtype=np.int64)
        self.last_weights = np.zeros(0, dtype=np.float32)

    def push(self, event: tuple) -> None:
        """Queue ``event = (state, action, reward, next_state, done)``; store each transition whose return is known."""
        if self.n_step == 1:
            return self.store(event)
        state, action, reward, next_state, done = event
        self.pending.append((np.array(state, dtype=np.float32), int(action), float(reward)))
        if done:
            while self.pending:
                self.store(self.n_step_transition(next_state, True))
                self.pending.popleft()
        elif len(self.pending) == self.n_step:
            self.store(self.n_step_transition(next_state, False))
            self.pending.popleft()

    def n_step_transition(self, next_state, done: bool) -> tuple:
        """The oldest queued transition with the discounted sum of the queued rewards."""
        first_state, first_action, _ = self.pending[0]
        rewards = [r for _, _, r in self.pending]
        return first_state, first_action, n_step_return(rewards, self.discount_factor), next_state, done

    def store(self, event: tuple) -> None:
        """:meth:`agent.ReplayMemory.push`; under prioritized replay with the highest priority so far."""
        i = self.pos
        super().push(event)
        if self.tree is not None:
            self.tree.update(np.array([i]), np.array([self.max_priority]))

    def end_episode(self) -> None:
        """Forget the transitions still waiting for their n-step return (an episode cut off by the time limit).

        A cut-off state has a future, but its return would cover fewer than ``n_step`` rewards while
        the target assumes ``discount_factor ** n_step``; dropping these few transitions keeps every
        stored target exact. After a *terminated* step the queue is already empty.
        """
        self.pending.clear()

    def sample_indices(self, batch_size: int) -> np.ndarray:
        """Uniform draws, or under prioritized replay one slot from each of ``batch_size`` equal slices of the total."""
        if self.tree is None:
            return super().sample_indices(batch_size)
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

    def sample(self, batch_size: int) -> Experiences:
        """A minibatch as tensors, or as NumPy arrays for the twin (which makes no tensors)."""
        return self.sample_arrays(batch_size) if self.arrays else super().sample(batch_size)

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Set the priorities of the sampled slots from their new absolute TD errors."""
        priorities = (np.asarray(td_errors, dtype=np.float64) + 1e-5) ** self.alpha
        self.tree.update(indices, priorities)
        self.max_priority = max(self.max_priority, float(priorities.max()))

    def state_dict(self) -> dict:
        """:meth:`agent.ReplayMemory.state_dict`, plus the priorities under prioritized replay."""
        state = super().state_dict()
        if self.tree is not None:
            state.update(tree=torch.from_numpy(self.tree.tree.copy()), max_priority=self.max_priority, draws=self.draws)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        super().load_state_dict(state)
        if self.tree is not None:
            self.tree.tree[:] = state["tree"].numpy()
            self.max_priority, self.draws = float(state["max_priority"]), int(state["draws"])
