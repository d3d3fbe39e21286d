"""Options beyond the original DQN, as a subclass of the textbook :class:`agent.Agent`.

Each option is off by default, and with all of them off :class:`ExtendedAgent` computes what
:class:`agent.Agent` computes. ``dqnkit.agents.build_agent`` uses it only when an option is on.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from agent import Agent, Experiences, bellman_target, checked_loss, soft_update
from dqnkit.prioritized import PrioritizedReplayMemory
from nnetwork import DuelingNetwork, Network


def n_step_return(rewards: list[float], discount_factor: float) -> float:
    """``r_0 + gamma r_1 + gamma^2 r_2 + ...``: the discounted sum of consecutive rewards."""
    total = 0.0
    for reward in reversed(rewards):
        total = reward + discount_factor * total
    return total


def double_dqn_next_q(next_q_local: torch.Tensor, next_q_target: torch.Tensor) -> torch.Tensor:
    """Double DQN (van Hasselt et al., 2016): ``Q_target(s', argmax_a' Q_local(s', a'))``, shape ``(B, 1)``.

    Plain DQN takes ``max_a' Q_target(s', a')``: the same noisy estimates choose and value
    the action, so errors that happen to be high are picked and the targets creep upwards.
    Choosing with one network and valuing with the other removes most of that bias.
    """
    return next_q_target.gather(1, next_q_local.argmax(dim=1, keepdim=True))


class ExtendedAgent(Agent):
    """:class:`agent.Agent` with the options beyond the original DQN.

    Args (each off by default; the rest are :class:`agent.Agent`'s):
        double_dqn: pick the next action with the local network, value it with the target.
        dueling: a :class:`nnetwork.DuelingNetwork`, ``Q = V + A - mean(A)``.
        n_step: bootstrap after this many rewards, ``discount_factor ** n_step`` (1).
        loss: ``"mse"`` or ``"huber"`` (smooth L1, delta 1) on the TD error.
        grad_clip: rescale the gradient to at most this L2 norm; 0 turns it off.
        target_update_every: copy the local weights into the target every this many learning
            steps instead of the soft update; 0 keeps the soft update.
        gradient_steps: learning steps, each on a fresh minibatch, every time it learns (1).
        prioritized_replay: sample by TD error, :class:`dqnkit.prioritized.PrioritizedReplayMemory`.
        priority_alpha: how strongly the TD error shapes sampling, 0 is uniform (0.6).
        priority_beta: importance-sampling exponent at the start, annealed to 1 (0.4).
        learning_rate_end: the learning rate at the end of the schedule (None: ``learning_rate``).
        lr_decay_steps: fall linearly to ``learning_rate_end`` over this many environment
            steps, see :meth:`scheduled_learning_rate`; 0 keeps the rate constant.
    """

    def __init__(
        self,
        state_size: int,
        action_size: int,
        *,
        double_dqn: bool = False,
        dueling: bool = False,
        n_step: int = 1,
        loss: str = "mse",
        grad_clip: float = 0.0,
        target_update_every: int = 0,
        gradient_steps: int = 1,
        prioritized_replay: bool = False,
        priority_alpha: float = 0.6,
        priority_beta: float = 0.4,
        learning_rate_end: float | None = None,
        lr_decay_steps: int = 0,
        **core,
    ) -> None:
        if loss not in ("mse", "huber") or n_step < 1 or grad_clip < 0 or target_update_every < 0 or gradient_steps < 1:
            raise ValueError(
                f"bad option: loss={loss!r}, n_step={n_step}, grad_clip={grad_clip}, gradient_steps={gradient_steps}"
            )
        if lr_decay_steps < 0 or (learning_rate_end is not None and learning_rate_end <= 0):
            raise ValueError(f"bad learning-rate schedule: end {learning_rate_end}, over {lr_decay_steps} steps")
        network_class = DuelingNetwork if dueling else Network
        super().__init__(state_size, action_size, network_class=network_class, **core)
        self.double_dqn, self.dueling, self.n_step, self.loss = double_dqn, dueling, n_step, loss
        self.grad_clip, self.target_update_every, self.gradient_steps = grad_clip, target_update_every, gradient_steps
        self.prioritized_replay = prioritized_replay
        self.learning_rate_end = self.learning_rate if learning_rate_end is None else learning_rate_end
        self.lr_decay_steps = lr_decay_steps
        if prioritized_replay:
            self.memory = PrioritizedReplayMemory(
                self.memory.capacity, state_size, self.device, self.rng, priority_alpha, priority_beta
            )
        self._pending: deque[tuple[np.ndarray, int, float]] = deque()  # the last n_step - 1 transitions

    # ------------------------------------------------------------ acting and storing

    def step(self, state, action: int, reward: float, next_state, done: bool) -> None:
        """:meth:`agent.Agent.step` with n-step transitions and ``gradient_steps`` learning steps."""
        if self.n_step == 1:
            self.memory.push((state, action, reward, next_state, done))
        else:
            self._push_n_step(state, action, reward, next_state, done)
        self.t_step = (self.t_step + 1) % self.learn_every
        if self.t_step == 0 and len(self.memory) > self.minibatch_size:
            for _ in range(self.gradient_steps):
                self.learn(self.sample(), self.discount_factor)

    def sample(self) -> Experiences:
        """A minibatch from the memory, in the form :meth:`learn` takes."""
        return self.memory.sample(self.minibatch_size)

    def end_episode(self) -> None:
        """Forget the transitions still waiting for their n-step return (episode cut off by the time limit).

        A cut-off state has a future, but its return would cover fewer than ``n_step``
        rewards while the target assumes ``discount_factor ** n_step``; dropping these
        few transitions keeps every stored target exact. After a *terminated* step the
        queue is already empty. A no-op for ``n_step = 1``.
        """
        self._pending.clear()

    def _push_n_step(self, state, action: int, reward: float, next_state, done: bool) -> None:
        """Queue the transition; store ``(s_t, a_t, R_t, s_{t+n}, done)`` once ``n_step`` rewards are known.

        ``R_t = r_t + gamma r_{t+1} + ... + gamma^(n-1) r_{t+n-1}`` (:func:`n_step_return`). At a
        terminal step every queued transition is stored with its shorter return and ``done = 1``:
        nothing lies beyond the end to bootstrap from (Sutton, 1988; Hessel et al., 2018).
        """
        self._pending.append((np.array(state, dtype=np.float32), int(action), float(reward)))
        if done:
            while self._pending:
                self.memory.push(self._n_step_transition(next_state, True))
                self._pending.popleft()
        elif len(self._pending) == self.n_step:
            self.memory.push(self._n_step_transition(next_state, False))
            self._pending.popleft()

    def _n_step_transition(self, next_state, done: bool) -> tuple:
        """The oldest queued transition with the discounted sum of the queued rewards."""
        first_state, first_action, _ = self._pending[0]
        rewards = [r for _, _, r in self._pending]
        return first_state, first_action, n_step_return(rewards, self.discount_factor), next_state, done

    # ------------------------------------------------------------ learning

    def learn(self, experiences: Experiences, discount_factor: float) -> float:
        """:meth:`agent.Agent.learn` with the options: gradient, schedule, Adam step, target update."""
        # An n-step transition bootstraps n steps ahead: gamma ** n.
        loss = self.backward(experiences, discount_factor**self.n_step)
        self.last_loss = checked_loss(loss, self.learn_steps)
        if self.lr_decay_steps:
            self.optimizer.param_groups[0]["lr"] = self.scheduled_learning_rate()
        self.optimizer.step()
        if not self.target_update_every:
            self.update_target(hard=False)
        elif (self.learn_steps + 1) % self.target_update_every == 0:
            self.update_target(hard=True)
        self.learn_steps += 1
        return loss

    def backward(self, experiences: Experiences, discount_factor: float) -> float:
        """The TD loss with the options switched on, differentiated by autograd into each ``.grad``."""
        states, next_states, actions, rewards, dones = experiences
        with torch.no_grad():
            next_q_target = self.target_qnetwork(next_states)
            if self.double_dqn:
                next_q = double_dqn_next_q(self.local_qnetwork(next_states), next_q_target)
            else:
                next_q = next_q_target.max(dim=1, keepdim=True).values
            q_targets = bellman_target(rewards, next_q, dones, discount_factor)
        q_expected = self.local_qnetwork(states).gather(1, actions)
        if self.loss == "huber":  # quadratic within 1 of the target, linear beyond: big errors cannot blow up
            elementwise = F.smooth_l1_loss(q_expected, q_targets, reduction="none")
        else:
            elementwise = F.mse_loss(q_expected, q_targets, reduction="none")
        if self.prioritized_replay:  # importance weights undo the bias of sampling by priority
            weights = torch.as_tensor(self.memory.last_weights, device=self.device).unsqueeze(1)
            loss = (weights * elementwise).mean()
        else:
            loss = elementwise.mean()
        self.optimizer.zero_grad()
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.local_qnetwork.parameters(), self.grad_clip)
        if self.prioritized_replay:
            td_error = (q_targets - q_expected).detach().abs().squeeze(1).cpu().numpy()
            self.memory.update_priorities(self.memory.last_indices, td_error)
        return loss.item()

    def update_target(self, hard: bool) -> None:
        """The soft update by ``interpolation_parameter``, or with ``hard`` a copy (the 2015 Nature DQN's)."""
        if hard:
            self.target_qnetwork.load_state_dict(self.local_qnetwork.state_dict())  # copies in place
        else:
            soft_update(self.local_qnetwork, self.target_qnetwork, self.interpolation_parameter)

    def scheduled_learning_rate(self) -> float:
        """The learning rate of the next learning step: linear from the start to the end value, then flat.

        The schedule counts environment steps as ``learn_steps * learn_every / gradient_steps``,
        so ``lr_decay_steps`` means the same whatever the learning rhythm. It depends on
        ``learn_steps`` alone, which the training state saves: a resumed run continues it.
        """
        env_steps = self.learn_steps * self.learn_every / self.gradient_steps
        fraction = min(1.0, env_steps / self.lr_decay_steps)
        return self.learning_rate + (self.learning_rate_end - self.learning_rate) * fraction
