"""n-step returns (Sutton, 1988; Hessel et al., 2018) as a replay memory, beyond the original DQN."""

from __future__ import annotations

from collections import deque

import numpy as np

from agent import ReplayMemory


def n_step_return(rewards: list[float], discount_factor: float) -> float:
    """``r_0 + gamma r_1 + gamma^2 r_2 + ...``: the discounted sum of consecutive rewards."""
    total = 0.0
    for reward in reversed(rewards):
        total = reward + discount_factor * total
    return total


class NStepMemory(ReplayMemory):
    """A replay memory that stores n-step transitions, like Stable-Baselines3's ``NStepReplayBuffer``.

    :meth:`push` queues each transition until ``n_step`` rewards are known, then stores
    ``(s_t, a_t, R_t, s_{t+n}, done)`` with ``R_t = r_t + gamma r_{t+1} + ... + gamma^(n-1) r_{t+n-1}``
    (:func:`n_step_return`). At a terminal step every queued transition is stored with its shorter
    return and ``done = 1``: nothing lies beyond the end to bootstrap from. The learner then
    bootstraps ``n_step`` steps ahead, with ``discount_factor ** n_step``.

    Args:
        *args: :class:`agent.ReplayMemory`'s (capacity, state size, device, rng).
        n_step: rewards summed into each stored transition (3).
        discount_factor: gamma, the discount inside the sum (0.99).
        **kwargs: for the next memory class when mixed with another (prioritized replay's alpha, beta).
    """

    def __init__(self, *args, n_step: int = 3, discount_factor: float = 0.99, **kwargs) -> None:
        if n_step < 1:
            raise ValueError(f"bad option: n_step={n_step}, must be 1 or more")
        super().__init__(*args, **kwargs)
        self.n_step, self.discount_factor = n_step, discount_factor
        self.pending: deque[tuple[np.ndarray, int, float]] = deque()  # the last n_step - 1 transitions

    def push(self, event: tuple) -> None:
        """Queue ``event = (state, action, reward, next_state, done)``; store each transition whose return is known."""
        state, action, reward, next_state, done = event
        self.pending.append((np.array(state, dtype=np.float32), int(action), float(reward)))
        if done:
            while self.pending:
                super().push(self._n_step_transition(next_state, True))
                self.pending.popleft()
        elif len(self.pending) == self.n_step:
            super().push(self._n_step_transition(next_state, False))
            self.pending.popleft()

    def _n_step_transition(self, next_state, done: bool) -> tuple:
        """The oldest queued transition with the discounted sum of the queued rewards."""
        first_state, first_action, _ = self.pending[0]
        rewards = [r for _, _, r in self.pending]
        return first_state, first_action, n_step_return(rewards, self.discount_factor), next_state, done

    def end_episode(self) -> None:
        """Forget the transitions still waiting for their n-step return (an episode cut off by the time limit).

        A cut-off state has a future, but its return would cover fewer than ``n_step`` rewards
        while the target assumes ``discount_factor ** n_step``; dropping these few transitions
        keeps every stored target exact. After a *terminated* step the queue is already empty.
        """
        self.pending.clear()
