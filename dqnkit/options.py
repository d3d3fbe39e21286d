"""Options beyond the original DQN, each a subclass of :class:`agent.Agent` that overrides one named step.

As PFRL's ``DoubleDQN`` is a DQN that overrides only its target computation, each class here
changes one step of :meth:`agent.Agent.learn` (``bellman_targets``, ``td_loss``, ``optimizer_step``,
``update_target``) and inherits the rest, or adds a replay-memory class with the small piece of
learning that goes with it (n-step returns, prioritized replay). They call ``super()``, so they
compose: :func:`dqnkit.agents.agent_class` mixes the ones a configuration switches on into one
class, and with none on the agent is :class:`agent.Agent` itself.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from agent import Agent, Experiences, ReplayMemory, bellman_target
from dqnkit.nstep import NStepMemory
from dqnkit.prioritized import PrioritizedReplayMemory
from nnetwork import DuelingNetwork


class Option(Agent):
    """What an option declares besides the step it overrides (``dqnkit.agents`` reads it).

    Attributes:
        switch: the ``main.Config`` field that turns the option on; ``off``, its value when off.
        fields: the Config fields the constructor takes, by the same names.
        memory: the replay-memory class the option mixes into the agent's memory, if any, and
            ``memory_fields``, its constructor's arguments by the Config fields they come from.
    """

    switch: ClassVar[str]
    off: ClassVar[Any]
    fields: ClassVar[tuple[str, ...]] = ()
    memory: ClassVar[type[ReplayMemory] | None] = None
    memory_fields: ClassVar[dict[str, str]] = {}


def double_dqn_next_q(next_q_local: torch.Tensor, next_q_target: torch.Tensor) -> torch.Tensor:
    """Double DQN (van Hasselt et al., 2016): ``Q_target(s', argmax_a' Q_local(s', a'))``, shape ``(B, 1)``.

    Plain DQN takes ``max_a' Q_target(s', a')``: the same noisy estimates choose and value
    the action, so errors that happen to be high are picked and the targets creep upwards.
    Choosing with one network and valuing with the other removes most of that bias.
    """
    return next_q_target.gather(1, next_q_local.argmax(dim=1, keepdim=True))


class DoubleDQN(Option):
    """Double DQN: the local network picks the next action, the target network values it (:func:`double_dqn_next_q`)."""

    switch, off = "double_dqn", False

    @torch.no_grad()
    def bellman_targets(self, experiences: Experiences, discount_factor: float) -> torch.Tensor:
        """``r + gamma * Q_target(s', argmax_a' Q_local(s', a')) * (1 - done)``, shape ``(B, 1)``, no gradient."""
        _, next_states, _, rewards, dones = experiences
        next_q = double_dqn_next_q(self.local_qnetwork(next_states), self.target_qnetwork(next_states))
        return bellman_target(rewards, next_q, dones, discount_factor)


class Dueling(Option):
    """A dueling head (Wang et al., 2016): only the network changes, ``network_class=DuelingNetwork``."""

    switch, off = "dueling", False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, network_class=DuelingNetwork, **kwargs)


class NStepReturns(Option):
    """n-step returns: the memory stores n-step transitions (:class:`dqnkit.nstep.NStepMemory`).

    The agent's part: an n-step transition bootstraps ``n_step`` steps ahead, and the queue of
    an episode cut off by the time limit is forgotten at its end.
    """

    switch, off = "n_step", 1
    memory, memory_fields = NStepMemory, {"n_step": "n_step", "discount_factor": "discount_factor"}

    def bellman_targets(self, experiences: Experiences, discount_factor: float) -> torch.Tensor:
        """The inherited targets with ``gamma ** n``: an n-step transition bootstraps n steps ahead."""
        return super().bellman_targets(experiences, discount_factor**self.memory.n_step)

    def end_episode(self) -> None:
        """Forget the transitions still waiting for their n-step return (:meth:`NStepMemory.end_episode`)."""
        self.memory.end_episode()


class TDLoss(Option):
    """:meth:`agent.Agent.td_loss` with a ``reduction``, the form the loss options share.

    ``"mean"`` averages over the minibatch, as the original; ``"none"`` gives one loss per
    transition, which :class:`PrioritizedReplay` weights. :class:`Huber` replaces the squared
    error below it, so both compose. Not an option of its own.
    """

    def td_loss(self, q_expected: torch.Tensor, q_targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The squared TD error, averaged over the minibatch (``reduction="none"``: one per transition)."""
        return F.mse_loss(q_expected, q_targets, reduction=reduction)


class Huber(TDLoss):
    """The Huber loss (smooth L1, delta 1; Mnih et al., 2015) on the TD error.

    Quadratic within 1 of the target, linear beyond: a crash's -100 cannot give a huge gradient.
    """

    switch, off, fields = "loss", "mse", ("loss",)

    def __init__(self, *args, loss: str = "huber", **kwargs) -> None:
        if loss != "huber":
            raise ValueError(f"bad option: loss={loss!r}, not mse or huber")
        super().__init__(*args, **kwargs)

    def td_loss(self, q_expected: torch.Tensor, q_targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The Huber loss of the TD error, averaged over the minibatch (``reduction="none"``: one per transition)."""
        return F.smooth_l1_loss(q_expected, q_targets, reduction=reduction)


class PrioritizedReplay(TDLoss):
    """Prioritized replay: the memory samples by TD error (:class:`dqnkit.prioritized.PrioritizedReplayMemory`).

    The agent's part is in the TD loss: each transition's loss is multiplied by its importance
    weight, which undoes the bias of sampling by priority, and the new TD errors become the
    sampled transitions' priorities.
    """

    switch, off = "prioritized_replay", False
    memory, memory_fields = PrioritizedReplayMemory, {"alpha": "priority_alpha", "beta": "priority_beta"}

    def td_loss(self, q_expected: torch.Tensor, q_targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The inherited loss of each transition times its importance weight; the priorities updated."""
        td_error = (q_targets - q_expected).detach().abs().squeeze(1).cpu().numpy()
        self.memory.update_priorities(self.memory.last_indices, td_error)
        weights = torch.as_tensor(self.memory.last_weights, device=self.device).unsqueeze(1)
        weighted = weights * super().td_loss(q_expected, q_targets, reduction="none")
        return weighted.mean() if reduction == "mean" else weighted


class GradientClipping(Option):
    """Gradient clipping (Pascanu et al., 2013): the gradient rescaled to an L2 norm of at most ``grad_clip``.

    A guard against rare huge updates, applied just before each optimizer step.
    """

    switch, off, fields = "grad_clip", 0.0, ("grad_clip",)

    def __init__(self, *args, grad_clip: float, **kwargs) -> None:
        if not grad_clip > 0:
            raise ValueError(f"bad option: grad_clip={grad_clip}, must be above 0 (0 is off)")
        super().__init__(*args, **kwargs)
        self.grad_clip = grad_clip

    def optimizer_step(self) -> None:
        """Clip the gradient, then the inherited optimizer step."""
        self.clip_gradient()
        super().optimizer_step()

    def clip_gradient(self) -> None:
        """Rescale the local network's gradient in place to an L2 norm of at most ``grad_clip``."""
        torch.nn.utils.clip_grad_norm_(self.local_qnetwork.parameters(), self.grad_clip)


class HardTargetUpdate(Option):
    """The 2015 Nature DQN's target network (Mnih et al., 2015): a copy of the local network, renewed every
    ``target_update_every`` learning steps and fixed in between, instead of the soft update."""

    switch, off, fields = "target_update_every", 0, ("target_update_every",)

    def __init__(self, *args, target_update_every: int, **kwargs) -> None:
        if target_update_every < 1:
            raise ValueError(f"bad option: target_update_every={target_update_every}, must be 1 or more (0 is off)")
        super().__init__(*args, **kwargs)
        self.target_update_every = target_update_every

    def update_target(self) -> None:
        """Copy the local weights into the target network every ``target_update_every`` learning steps."""
        if (self.learn_steps + 1) % self.target_update_every == 0:
            self.target_qnetwork.load_state_dict(self.local_qnetwork.state_dict())  # copies in place


class LearningRateDecay(Option):
    """A learning rate that falls linearly to ``learning_rate_end`` over ``lr_decay_steps`` environment steps.

    Decreasing step sizes (Robbins & Monro, 1951): big steps while the Q-values are far off,
    small ones to settle the policy once it lands.
    """

    switch, off, fields = "lr_decay_steps", 0, ("lr_decay_steps", "learning_rate_end")
    gradient_steps = 1  # learning steps per learning turn, which the schedule counts; GradientSteps sets its own

    def __init__(self, *args, lr_decay_steps: int, learning_rate_end: float | None = None, **kwargs) -> None:
        if lr_decay_steps < 1 or (learning_rate_end is not None and learning_rate_end <= 0):
            raise ValueError(f"bad learning-rate schedule: end {learning_rate_end}, over {lr_decay_steps} steps")
        super().__init__(*args, **kwargs)
        self.lr_decay_steps = lr_decay_steps
        self.learning_rate_end = self.learning_rate if learning_rate_end is None else learning_rate_end

    def optimizer_step(self) -> None:
        """Set the scheduled learning rate, then the inherited optimizer step."""
        self.optimizer.param_groups[0]["lr"] = self.scheduled_learning_rate()
        super().optimizer_step()

    def scheduled_learning_rate(self) -> float:
        """The learning rate of the next learning step: linear from the start to the end value, then flat.

        The schedule counts environment steps as ``learn_steps * learn_every / gradient_steps``,
        so ``lr_decay_steps`` means the same whatever the learning rhythm. It depends on
        ``learn_steps`` alone, which the training state saves: a resumed run continues it.
        """
        env_steps = self.learn_steps * self.learn_every / self.gradient_steps
        fraction = min(1.0, env_steps / self.lr_decay_steps)
        return self.learning_rate + (self.learning_rate_end - self.learning_rate) * fraction


class GradientSteps(Option):
    """Several learning steps each time the agent learns, each on its own minibatch.

    A higher replay ratio (Fedus et al., 2020): more learning from every environment step.
    """

    switch, off, fields = "gradient_steps", 1, ("gradient_steps",)

    def __init__(self, *args, gradient_steps: int, **kwargs) -> None:
        if gradient_steps < 1:
            raise ValueError(f"bad option: gradient_steps={gradient_steps}, must be 1 or more")
        super().__init__(*args, **kwargs)
        self.gradient_steps = gradient_steps

    def learn(self, experiences: Experiences, discount_factor: float) -> float:
        """The inherited learning step on ``experiences``, then on ``gradient_steps - 1`` fresh minibatches."""
        # Not a named step but a loop around them: it calls the inherited learn (never a copy of it),
        # so whatever the other options override runs in every one of these steps.
        loss = super().learn(experiences, discount_factor)
        for _ in range(self.gradient_steps - 1):
            loss = super().learn(self.memory.sample(self.minibatch_size), discount_factor)
        return loss


# Every option, outermost first: the order of their classes in a composed agent. n-step returns
# come before Double DQN (their targets call the ones below them), and prioritized replay before
# Huber (its loss weights the one below it); their memories mix in this order too.
OPTIONS: tuple[type[Option], ...] = (
    NStepReturns,
    PrioritizedReplay,
    Huber,
    DoubleDQN,
    Dueling,
    GradientClipping,
    HardTargetUpdate,
    LearningRateDecay,
    GradientSteps,
)
