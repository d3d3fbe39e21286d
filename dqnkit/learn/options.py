"""The options beyond the original DQN: one agent, :class:`OptionsAgent`, whose constructor switches them on.

It is :class:`agent.Agent` with the named steps of its learning step overridden, each reading the options
it depends on: read top to bottom, it shows which code a run with ``--double-dqn --n-step 3`` executes.
As PFRL's ``DoubleDQN`` overrides only its target computation, every option changes one named step:
``bellman_targets`` (Double DQN, n-step), ``td_loss`` (Huber, prioritized replay), ``optimizer_step``
(clipping, the learning-rate schedule), ``update_target`` (the hard update), ``learn`` (gradient steps);
n-step and prioritized replay also change the memory (:class:`~dqnkit.learn.memory.OptionsMemory`), dueling
the network. With every option off the run builds ``agent.Agent`` itself (:func:`dqnkit.learn.build_agent`).
The NumPy twin (:mod:`dqnkit.learn.twin`) subclasses this agent and reuses these named steps.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from agent import Agent, Experiences, bellman_target
from dqnkit.learn.memory import OptionsMemory
from nnetwork import DuelingNetwork, Network

Array = torch.Tensor | np.ndarray


def double_dqn_next_q(next_q_local: Array, next_q_target: Array) -> Array:
    """Double DQN (van Hasselt et al., 2016): ``Q_target(s', argmax_a' Q_local(s', a'))``, shape ``(B, 1)``.

    Plain DQN's ``max_a' Q_target(s', a')`` lets the same noisy estimates choose and value the action, so
    errors that happen to be high are picked and the targets creep up; choosing with the other network
    removes most of that bias. Tensors or NumPy arrays.
    """
    best = next_q_local.argmax(1)[:, None]
    if isinstance(next_q_target, np.ndarray):
        return np.take_along_axis(next_q_target, best, 1)
    return next_q_target.gather(1, best)


def row_max(q: Array) -> Array:
    """``max_a' q[:, a']`` as a column ``(B, 1)``; tensors or NumPy arrays.

    NumPy reduces a short last axis slowly: the columns copied into rows and reduced are 3x faster, exactly.
    """
    if isinstance(q, np.ndarray):
        return np.ascontiguousarray(q.T).max(axis=0)[:, None]
    return q.max(dim=1, keepdim=True).values


def scheduled_learning_rate(start: float, end: float, env_steps: float, decay_steps: int) -> float:
    """The learning rate after ``env_steps`` environment steps: linear from ``start`` to ``end``, then flat.

    Decreasing step sizes (Robbins & Monro, 1951): big while the Q-values are far off, small to settle.
    """
    return start + (end - start) * min(1.0, env_steps / decay_steps)


class OptionsAgent(Agent):
    """:class:`agent.Agent` with the options beyond the original DQN, each off by default.

    The arguments are the ``main.Config`` fields of the same names (their ``--help`` says what each does),
    and ``arrays``: minibatches as NumPy arrays, for the NumPy twin.
    """

    def __init__(
        self,
        *args,
        double_dqn: bool = False,
        dueling: bool = False,
        n_step: int = 1,
        loss: str = "mse",
        prioritized_replay: bool = False,
        priority_alpha: float = 0.6,
        priority_beta: float = 0.4,
        grad_clip: float = 0.0,
        target_update_every: int = 0,
        lr_decay_steps: int = 0,
        learning_rate_end: float | None = None,
        gradient_steps: int = 1,
        arrays: bool = False,
        **kwargs,
    ) -> None:
        problem = option_problem(
            loss, grad_clip, target_update_every, lr_decay_steps, learning_rate_end, gradient_steps
        )
        if problem:
            raise ValueError(f"bad option: {problem}")
        self.double_dqn, self.loss = double_dqn, loss
        self.grad_clip, self.target_update_every, self.gradient_steps = grad_clip, target_update_every, gradient_steps
        self.lr_decay_steps = lr_decay_steps
        discount_factor = kwargs.get("discount_factor", 0.99)
        memory = functools.partial(
            OptionsMemory,
            n_step=n_step,
            discount_factor=discount_factor,
            prioritized=prioritized_replay,
            alpha=priority_alpha,
            beta=priority_beta,
            arrays=arrays,
        )
        network = kwargs.pop("network_class", Network)
        network = DuelingNetwork if dueling else network
        super().__init__(*args, network_class=network, memory_class=memory, **kwargs)
        self.learning_rate_end = self.learning_rate if learning_rate_end is None else learning_rate_end

    # ------------------------------------------------------------ the named steps, overridden

    def learn(self, experiences: Experiences, discount_factor: float) -> float:
        """:meth:`learn_once` on ``experiences``, then on ``gradient_steps - 1`` fresh minibatches; the last loss."""
        loss = self.learn_once(experiences, discount_factor)
        for _ in range(self.gradient_steps - 1):
            loss = self.learn_once(self.memory.sample(self.minibatch_size), discount_factor)
        return loss

    def learn_once(self, experiences: Experiences, discount_factor: float) -> float:
        """One learning step: :meth:`agent.Agent.learn`, whose named steps are the ones below."""
        return super().learn(experiences, discount_factor)

    def bellman_targets(self, experiences: Experiences, discount_factor: float) -> Array:
        """``r + gamma^n * Q_target(s', a*) * (1 - done)``: ``a*`` the target's best, or the local's with Double DQN."""
        _, next_states, _, rewards, dones = experiences
        next_q_target = self.next_q_values(self.target_qnetwork, next_states)
        if self.double_dqn:
            next_q = double_dqn_next_q(self.next_q_values(self.local_qnetwork, next_states), next_q_target)
        else:
            next_q = row_max(next_q_target)
        # An n-step transition holds n discounted rewards and bootstraps n steps ahead.
        return bellman_target(rewards, next_q, dones, discount_factor**self.memory.n_step)

    @torch.no_grad()  # the targets are constants of the loss: no gradient flows into them
    def next_q_values(self, network: torch.nn.Module, next_states: Array) -> Array:
        """``network(next_states)``, the Q-values a target is built from (the twin computes them on NumPy views)."""
        return network(next_states)

    def td_loss(self, q_expected: torch.Tensor, q_targets: torch.Tensor) -> torch.Tensor:
        """The squared (or Huber) TD error averaged over the minibatch; weighted under prioritized replay."""
        reduction = "none" if self.memory.prioritized else "mean"
        if self.loss == "huber":  # quadratic within 1 of the target, linear beyond: a crash cannot blow up
            losses = F.smooth_l1_loss(q_expected, q_targets, reduction=reduction)
        else:
            losses = F.mse_loss(q_expected, q_targets, reduction=reduction)
        weights = self.replayed(q_targets - q_expected)
        if weights is None:
            return losses
        return (torch.as_tensor(weights, device=self.device).unsqueeze(1) * losses).mean()

    def replayed(self, td_errors: Array) -> np.ndarray | None:
        """Prioritized replay: the new ``|TD error|`` become priorities; the importance weights, else None."""
        if not self.memory.prioritized:
            return None
        td_errors = td_errors.detach().cpu().numpy() if isinstance(td_errors, torch.Tensor) else td_errors
        self.memory.update_priorities(self.memory.last_indices, np.abs(td_errors.reshape(-1)))
        return self.memory.last_weights

    def optimizer_step(self) -> None:
        """The scheduled learning rate and the clipped gradient when those options are on, then one Adam step."""
        if self.lr_decay_steps:
            # learn_steps counts gradient steps; as environment steps the schedule means the same at any rhythm.
            env_steps = self.learn_steps * self.learn_every / self.gradient_steps
            lr = scheduled_learning_rate(self.learning_rate, self.learning_rate_end, env_steps, self.lr_decay_steps)
            self.optimizer.param_groups[0]["lr"] = lr
        if self.grad_clip:
            self.clip_gradient()
        self.optimizer.step()

    def clip_gradient(self) -> None:
        """Rescale the local network's gradient in place to an L2 norm of at most ``grad_clip``."""
        torch.nn.utils.clip_grad_norm_(self.local_qnetwork.parameters(), self.grad_clip)

    def update_target(self) -> None:
        """The soft update, or with ``target_update_every`` a copy of the local network every N learning steps."""
        if not self.target_update_every:
            super().update_target()
        elif (self.learn_steps + 1) % self.target_update_every == 0:
            self.target_qnetwork.load_state_dict(self.local_qnetwork.state_dict())  # copies in place

    def end_episode(self) -> None:
        """Forget the transitions still waiting for their n-step return (:meth:`OptionsMemory.end_episode`)."""
        self.memory.end_episode()


def option_problem(
    loss: str,
    grad_clip: float,
    target_update_every: int,
    lr_decay_steps: int,
    learning_rate_end: float | None,
    gradient_steps: int,
) -> str | None:
    """What is wrong with these option values, in a few words; None when nothing is."""
    if loss not in ("mse", "huber"):
        return f"loss={loss!r}, not mse or huber"
    if grad_clip < 0:
        return f"grad_clip={grad_clip}, must be above 0 (0 is off)"
    if target_update_every < 0:
        return f"target_update_every={target_update_every}, must be 1 or more (0 is off)"
    if lr_decay_steps < 0 or (learning_rate_end is not None and learning_rate_end <= 0):
        return f"learning-rate schedule: end {learning_rate_end}, over {lr_decay_steps} steps"
    if gradient_steps < 1:
        return f"gradient_steps={gradient_steps}, must be 1 or more"
    return None
