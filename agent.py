"""Deep Q-Learning: the replay memory and the agent that learns from it."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from typing import NamedTuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnetwork import DuelingNetwork, Network, dueling_q_values, numpy_dueling_q_values, numpy_q_values, relu_

Array = TypeVar("Array", torch.Tensor, np.ndarray)


class Experiences(NamedTuple):
    """A sampled minibatch: tensors on the memory's device, or NumPy arrays for the NumPy learner."""

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
        """A uniformly drawn minibatch as NumPy arrays (the NumPy learner's input, no tensors made)."""
        rows = self.data.take(self.sample_indices(batch_size), axis=0)  # one gather, a fresh array
        batch = self._columns(rows)
        return batch._replace(actions=batch.actions.astype(np.int64))

    def sample(self, batch_size: int) -> Experiences:
        """Return a uniformly drawn minibatch as ``(states, next_states, actions, rewards, dones)`` tensors."""
        # The gathered rows are a fresh array, so from_numpy never aliases the storage.
        batch = self.sample_arrays(batch_size)
        if self.device.type == "cpu":
            return Experiences(*(torch.from_numpy(a) for a in batch))
        return Experiences(*(torch.from_numpy(a).to(self.device) for a in batch))

    def state_dict(self) -> dict:
        """The stored experiences and circular position, as plain tensors and ints (safe to ``torch.load``)."""
        n = len(self)
        return {
            "capacity": self.capacity,
            "pos": self.pos,
            "full": self.full,
            "states": torch.from_numpy(self.states[:n].copy()),
            "next_states": torch.from_numpy(self.next_states[:n].copy()),
            "actions": torch.from_numpy(self.actions[:n].astype(np.int64)),
            "rewards": torch.from_numpy(self.rewards[:n].copy()),
            "dones": torch.from_numpy(self.dones[:n].copy()),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned; the capacity must match."""
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"replay capacity {state['capacity']} in the file, {self.capacity} here")
        n = state["states"].shape[0]
        for name in ("states", "next_states", "actions", "rewards", "dones"):
            getattr(self, name)[:n] = state[name].numpy()
        self.pos = int(state["pos"])
        self.full = bool(state["full"])


def bellman_target(rewards: Array, next_q_max: Array, dones: Array, discount_factor: float) -> Array:
    """The Q-learning target ``r + gamma * max_a' Q_target(s', a') * (1 - done)``.

    ``done`` must mean *terminated* (the lander crashed or came to rest): there is
    no future reward to bootstrap from. A time-limit cut-off is not terminal, the
    state still has a future, so it is stored with ``done = 0``. Works on tensors
    and on NumPy arrays alike (both learning paths use it).
    """
    return rewards + discount_factor * next_q_max * (1.0 - dones)


def numpy_td_gradients(
    local_views: list[tuple[np.ndarray, np.ndarray]],
    target_views: list[tuple[np.ndarray, np.ndarray]],
    grad_views: list[tuple[np.ndarray, np.ndarray]],
    batch: tuple[np.ndarray, ...],
    discount_factor: float,
    *,
    double_dqn: bool = False,
    huber: bool = False,
    weights: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Backpropagate the TD loss through the Q-network by hand, in NumPy.

    Computes what ``loss(Q_local(s).gather(1, a), target).backward()`` computes (to float32
    rounding) and writes the gradients into ``grad_views`` (NumPy views of each parameter's
    ``.grad``, weight as ``(out, in)``). Returns the loss and the TD errors ``Q(s, a) - target``.

    With three layers of views the network is :class:`nnetwork.Network`; with a fourth (the
    value head) it is :class:`nnetwork.DuelingNetwork`. ``discount_factor`` is the one the
    target uses (``gamma ** n`` for n-step returns). Options, as in ``Agent``: ``double_dqn``
    picks the next action with the local network; ``huber`` is smooth L1 with delta 1;
    ``weights`` multiply each sample's loss (prioritized replay's importance weights).

    Why by hand: for a 64-64 network the arithmetic is tiny and autograd's
    bookkeeping dominates; the same maths as a dozen NumPy calls is ~3x cheaper.
    """
    states, next_states, actions, rewards, dones = batch
    dueling = len(local_views) == 4
    q_values = numpy_dueling_q_values if dueling else numpy_q_values
    # Target: r + gamma * Q_target(s', a*) * (1 - done), no gradient.
    next_q_target = q_values(target_views, next_states)
    if double_dqn:  # a* chosen by the local network, valued by the target one
        best = q_values(local_views, next_states).argmax(axis=1)
        next_q = next_q_target[np.arange(len(best)), best][:, None]
    else:
        next_q = next_q_target.max(axis=1, keepdims=True)
    q_targets = bellman_target(rewards, next_q, dones, discount_factor)
    # Forward pass of the local network, keeping what the backward pass needs.
    (w1, b1), (w2, b2), (w3, b3) = local_views[:3]  # weights as (in, out)
    h1 = states @ w1
    h1 += b1
    relu_(h1)  # in place: where h1 > 0 is where its input was
    h2 = h1 @ w2
    h2 += b2
    relu_(h2)
    q = h2 @ w3
    q += b3
    if dueling:
        value_w, value_b = local_views[3]
        q = dueling_q_values(h2 @ value_w + value_b, q)
    rows, taken = np.arange(len(actions)), actions[:, 0]
    td_error = q[rows, taken] - q_targets[:, 0]
    n = len(td_error)
    if huber:  # smooth L1: quadratic within 1 of the target, linear beyond; its slope is clip(error)
        abs_error = np.abs(td_error)
        elementwise = np.where(abs_error < 1.0, 0.5 * np.square(td_error), abs_error - 0.5)
        slope, scale = np.clip(td_error, -1.0, 1.0), 1.0 / n
    else:  # mean of squares: slope 2 * error / n
        elementwise, slope, scale = np.square(td_error), td_error, 2.0 / n
    if weights is not None:
        elementwise, slope = elementwise * weights, slope * weights
    # d(mean loss)/dQ(s, a) for the action taken, and 0 for the actions not taken.
    dq = np.zeros_like(q)
    dq[rows, taken] = slope * scale
    (gw1, gb1), (gw2, gb2), (gw3, gb3) = grad_views[:3]  # weights as (out, in), like nn.Linear
    if dueling:
        # Q = V + A - mean(A): V receives the sum of dQ, A receives dQ minus its mean.
        d_value = dq.sum(axis=1, keepdims=True)
        dq -= dq.mean(axis=1, keepdims=True)
        gwv, gbv = grad_views[3]
        np.matmul(d_value.T, h2, out=gwv)
        np.add.reduce(d_value, axis=0, out=gbv)
    np.matmul(dq.T, h2, out=gw3)
    np.add.reduce(dq, axis=0, out=gb3)  # np.sum's arithmetic, without its Python wrapper
    dz2 = dq @ w3.T
    if dueling:
        dz2 += d_value @ value_w.T
    dz2 *= h2 > 0.0  # ReLU passes gradient only where its input was positive
    np.matmul(dz2.T, h1, out=gw2)
    np.add.reduce(dz2, axis=0, out=gb2)
    dz1 = dz2 @ w2.T
    dz1 *= h1 > 0.0
    np.matmul(dz1.T, states, out=gw1)
    np.add.reduce(dz1, axis=0, out=gb1)
    return float(np.mean(elementwise)), td_error


def numpy_adam_step(
    params: list[np.ndarray],
    grads: list[np.ndarray],
    exp_avgs: list[np.ndarray],
    exp_avg_sqs: list[np.ndarray],
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
) -> None:
    """One Adam update in place, the arithmetic of ``torch.optim.Adam`` (Kingma & Ba, 2015).

    ``step`` is the count including this update (1 on the first call). :class:`NumpyAdam`
    calls it with one flat array each for all the parameters.
    """
    beta1, beta2 = betas
    bias_correction1 = 1.0 - beta1**step
    bias_correction2_sqrt = (1.0 - beta2**step) ** 0.5
    step_size = lr / bias_correction1
    for param, grad, exp_avg, exp_avg_sq in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
        exp_avg += (1.0 - beta1) * (grad - exp_avg)  # m <- beta1 m + (1 - beta1) g
        exp_avg_sq *= beta2  # v <- beta2 v + (1 - beta2) g^2
        exp_avg_sq += (1.0 - beta2) * np.square(grad)
        denom = np.sqrt(exp_avg_sq)
        denom /= bias_correction2_sqrt
        denom += eps
        param -= step_size * exp_avg / denom


class NumpyAdam:
    """Adam for the NumPy path: its moments in flat buffers, updated by :func:`numpy_adam_step`.

    It reads and writes ``torch.optim.Adam``'s ``state_dict`` format, so a training state saved
    on either path resumes on the other. Why not ``torch.optim.Adam`` itself: constructing any
    torch optimizer imports ``torch._dynamo``, about as long as importing torch (1.5-3 s per
    run), and its ``step()`` dispatch costs more than this whole update of 4,996 numbers.

    Args:
        params: the parameters, each a view of ``flat_param`` (see :func:`flatten_`).
        flat_param, flat_grad: the buffers holding every parameter and every gradient.
        lr, betas, eps: as in ``torch.optim.Adam``.
    """

    def __init__(
        self,
        params: list[torch.Tensor],
        flat_param: torch.Tensor,
        flat_grad: torch.Tensor,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = params
        self.param_groups = [{"lr": lr, "betas": betas, "eps": eps, **_TORCH_ADAM_FLAGS}]
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(flat_param), torch.zeros_like(flat_param)
        # torch counts steps per parameter; they always agree, but the file format keeps each.
        self.steps = torch.zeros(len(params))
        self._steps = self.steps.numpy()  # a view: one NumPy addition counts them all
        self._flat = (flat_param.numpy(), flat_grad.numpy(), self.exp_avg.numpy(), self.exp_avg_sq.numpy())

    def step(self) -> None:
        """One Adam update of every parameter from the gradients in the flat gradient buffer."""
        group = self.param_groups[0]
        self._steps += 1
        param, grad, exp_avg, exp_avg_sq = self._flat
        numpy_adam_step(
            [param], [grad], [exp_avg], [exp_avg_sq], int(self._steps[0]), group["lr"], group["betas"], group["eps"]
        )

    def _moment_views(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(exp_avg, exp_avg_sq)`` of each parameter: views of the flat moment buffers."""
        return zip(views_like(self.exp_avg, self.params), views_like(self.exp_avg_sq, self.params), strict=True)

    def state_dict(self) -> dict:
        """The state as ``torch.optim.Adam.state_dict()`` gives it (no state before the first step, as torch)."""
        group = {**self.param_groups[0], "params": list(range(len(self.params)))}
        if self._steps[0] == 0:
            return {"state": {}, "param_groups": [group]}
        state = {
            i: {"step": self.steps[i].clone(), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
            for i, (m, v) in enumerate(self._moment_views())
        }
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a state saved by this class or by ``torch.optim.Adam`` for the same parameters."""
        (group,) = state_dict["param_groups"]
        if len(group["params"]) != len(self.params):
            have, want = len(group["params"]), len(self.params)
            raise ValueError(f"the optimizer state has {have} parameters, the network {want}")
        # Like torch, the saved hyperparameters (the learning rate too) replace the constructor's.
        self.param_groups[0].update({k: v for k, v in group.items() if k != "params"})
        self.steps.zero_()
        self.exp_avg.zero_()
        self.exp_avg_sq.zero_()
        for i, (m, v) in enumerate(self._moment_views()):
            saved = state_dict["state"].get(i)
            if saved:
                m.copy_(saved["exp_avg"].reshape(m.shape))
                v.copy_(saved["exp_avg_sq"].reshape(v.shape))
                self.steps[i] = float(saved["step"])


# The flags torch.optim.Adam(fused=True) records in its param group, kept so both formats match.
_TORCH_ADAM_FLAGS = {
    "weight_decay": 0,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": True,
    "decoupled_weight_decay": False,
}


def clip_grad_norm_(grad: np.ndarray, max_norm: float) -> float:
    """Scale ``grad`` in place to an L2 norm of at most ``max_norm``; return the norm before.

    The arithmetic of ``torch.nn.utils.clip_grad_norm_`` (Pascanu et al., 2013) on one flat
    array: the factor is ``max_norm / (norm + 1e-6)``, and never above 1.
    """
    norm = float(np.sqrt(np.dot(grad, grad)))
    factor = max_norm / (norm + 1e-6)
    if factor < 1.0:
        grad *= factor
    return norm


@torch.no_grad()
def soft_update(local_model: nn.Module, target_model: nn.Module, interpolation_parameter: float) -> None:
    """Move the target weights a fraction ``tau`` towards the local ones, in place.

    ``theta_target <- tau * theta_local + (1 - tau) * theta_target``, see :func:`soft_update_`.
    """
    soft_update_(list(target_model.parameters()), list(local_model.parameters()), interpolation_parameter)


@torch.no_grad()
def soft_update_(
    target_params: list[torch.Tensor], local_params: list[torch.Tensor], interpolation_parameter: float
) -> None:
    """:func:`soft_update` on parameter lists, written as ``lerp``: ``target + tau * (local - target)``.

    One fused call over all tensors instead of a Python loop of three operations each.
    In place matters: the optimizer and the NumPy views hold these very tensors.
    """
    torch._foreach_lerp_(target_params, local_params, interpolation_parameter)


def flatten_(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Move ``tensors`` into one contiguous buffer, in place: each becomes a view of it.

    Returns the buffer. Adam and the soft update then touch 4,996 numbers in one
    operation instead of six small ones, which is most of their cost at this size.
    Values are unchanged, and so is everything that holds the tensors (the optimizer,
    ``state_dict``, ``load_state_dict``), since ``.data`` swaps only the storage.
    """
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    for t, view in zip(tensors, views_like(flat, tensors), strict=True):
        t.data = view
    return flat


def views_like(flat: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Consecutive slices of ``flat``, each shaped like the matching tensor: views, no copies."""
    pieces = flat.split([t.numel() for t in tensors])
    return [piece.view_as(t) for piece, t in zip(pieces, tensors, strict=True)]


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
        gradient_steps: learning steps, each on a fresh minibatch, every time it learns (1).
        hidden_size: width of the hidden layers (64).
        device: where the networks live and minibatches go.
        rng: random generator for exploration and minibatch sampling.
        backprop: ``"numpy"`` computes the loss gradient with :func:`numpy_td_gradients`
            (CPU only, about 3x faster), ``"autograd"`` with ``loss.backward()``. Both
            feed the same Adam arithmetic (:class:`NumpyAdam` or ``torch.optim.Adam``) and
            compute the same numbers up to float rounding.

    Beyond the original (each off by default; both ``backprop`` paths compute every one):

        double_dqn: pick the next action with the local network, value it with the target (False).
        dueling: a :class:`nnetwork.DuelingNetwork`, ``Q = V + A - mean(A)`` (False).
        n_step: bootstrap after this many rewards, ``discount_factor ** n_step`` (1).
        loss: ``"mse"`` or ``"huber"`` (smooth L1, delta 1) on the TD error (``"mse"``).
        grad_clip: rescale the gradient to at most this L2 norm; 0 turns it off (0).
        target_update_every: copy the local weights into the target every this many learning
            steps instead of the soft update; 0 keeps the soft update (0).
        prioritized_replay: sample by TD error, :class:`PrioritizedReplayMemory` (False).
        priority_alpha: how strongly the TD error shapes sampling, 0 is uniform (0.6).
        priority_beta: importance-sampling exponent at the start, annealed to 1 (0.4).
        learning_rate_end: the learning rate at the end of the schedule (None: ``learning_rate``).
        lr_decay_steps: fall linearly to ``learning_rate_end`` over this many environment
            steps, see :meth:`scheduled_learning_rate`; 0 keeps the rate constant (0).
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
        gradient_steps: int = 1,
        hidden_size: int = 64,
        device: torch.device | str = "cpu",
        rng: np.random.Generator | None = None,
        backprop: str = "numpy",
        double_dqn: bool = False,
        dueling: bool = False,
        n_step: int = 1,
        loss: str = "mse",
        grad_clip: float = 0.0,
        target_update_every: int = 0,
        prioritized_replay: bool = False,
        priority_alpha: float = 0.6,
        priority_beta: float = 0.4,
        learning_rate_end: float | None = None,
        lr_decay_steps: int = 0,
    ) -> None:
        if backprop not in ("numpy", "autograd"):
            raise ValueError(f"backprop must be 'numpy' or 'autograd', got {backprop!r}")
        if loss not in ("mse", "huber") or n_step < 1 or grad_clip < 0 or target_update_every < 0 or gradient_steps < 1:
            raise ValueError(
                f"bad option: loss={loss!r}, n_step={n_step}, grad_clip={grad_clip}, gradient_steps={gradient_steps}"
            )
        self.gradient_steps = gradient_steps
        if lr_decay_steps < 0 or (learning_rate_end is not None and learning_rate_end <= 0):
            raise ValueError(f"bad learning-rate schedule: end {learning_rate_end}, over {lr_decay_steps} steps")
        self.learning_rate = learning_rate
        self.learning_rate_end = learning_rate if learning_rate_end is None else learning_rate_end
        self.lr_decay_steps = lr_decay_steps
        self.double_dqn, self.dueling, self.n_step, self.loss = double_dqn, dueling, n_step, loss
        self.grad_clip, self.target_update_every = grad_clip, target_update_every
        self.prioritized_replay = prioritized_replay
        options = (double_dqn, dueling, n_step > 1, loss != "mse", grad_clip > 0, target_update_every > 0)
        self.extended = any(options) or prioritized_replay  # autograd then takes _extended_backward
        self._pending: deque[tuple[np.ndarray, int, float]] = deque()  # the last n_step - 1 transitions
        self.state_size = state_size
        self.action_size = action_size
        self.minibatch_size = minibatch_size
        self.discount_factor = discount_factor
        self.interpolation_parameter = interpolation_parameter
        self.learn_every = learn_every
        self.device = torch.device(device)
        self.rng = rng if rng is not None else np.random.default_rng()
        network = DuelingNetwork if dueling else Network
        self.local_qnetwork = network(state_size, action_size, hidden_size).to(self.device)
        # The target network starts from its own random weights, as in the original;
        # the soft update pulls it towards the local network from the first learn step.
        self.target_qnetwork = network(state_size, action_size, hidden_size).to(self.device)
        if prioritized_replay:
            self.memory = PrioritizedReplayMemory(
                replay_buffer_size, state_size, self.device, self.rng, priority_alpha, priority_beta
            )
        else:
            self.memory = ReplayMemory(replay_buffer_size, state_size, self.device, self.rng)
        self._numpy_q = numpy_dueling_q_values if dueling else numpy_q_values
        self.t_step = 0  # calls of step() modulo learn_every: the phase of the learning rhythm
        self.learn_steps = 0
        self.last_loss = float("nan")
        # On the CPU, act (and optionally learn) through NumPy views of the weights.
        on_cpu = self.device.type == "cpu"
        self._numpy_views = self.local_qnetwork.numpy_views() if on_cpu else None
        self.backprop = backprop if on_cpu else "autograd"
        self._local_params = list(self.local_qnetwork.parameters())
        self._target_params = list(self.target_qnetwork.parameters())
        if self.backprop == "numpy":
            self._flat_local = flatten_(self._local_params)
            self._flat_target = flatten_(self._target_params)
            self._numpy_views = self.local_qnetwork.numpy_views()  # views of the new storage
            self._target_views = self.target_qnetwork.numpy_views()
            self._flat_grad = torch.zeros_like(self._flat_local)
            for p, g in zip(self._local_params, views_like(self._flat_grad, self._local_params), strict=True):
                p.grad = g  # written in place by numpy_td_gradients every learn step
            grads = [p.grad.numpy() for p in self._local_params]
            self._grad_views = list(zip(grads[0::2], grads[1::2], strict=True))
            self.optimizer: NumpyAdam | torch.optim.Adam = NumpyAdam(
                self._local_params, self._flat_local, self._flat_grad, lr=learning_rate
            )
        else:
            # Fused Adam does the whole update in one kernel: same algorithm, ~25% less time
            # per learn step than the per-tensor loop on a CPU.
            self.optimizer = torch.optim.Adam(self._local_params, lr=learning_rate, fused=True)

    def step(self, state, action: int, reward: float, next_state, done: bool) -> None:
        """Store one transition and, every ``learn_every`` calls, learn from a random minibatch.

        With ``n_step > 1`` the memory receives n-step transitions (see :meth:`_push_n_step`);
        call :meth:`end_episode` when an episode is cut off by the time limit.
        """
        if self.n_step == 1:
            self.memory.push((state, action, reward, next_state, done))
        else:
            self._push_n_step(state, action, reward, next_state, done)
        self.t_step = (self.t_step + 1) % self.learn_every
        # Learn only once the memory holds more than one minibatch, as in the original.
        if self.t_step == 0 and len(self.memory) > self.minibatch_size:
            sample = self.memory.sample_arrays if self.backprop == "numpy" else self.memory.sample
            for _ in range(self.gradient_steps):
                self.learn(sample(self.minibatch_size), self.discount_factor)

    def q_values(self, state) -> np.ndarray:
        """Q-values of the local network for one state, as a NumPy array."""
        if self._numpy_views is not None:
            return self._numpy_q(self._numpy_views, np.asarray(state, dtype=np.float32))
        with torch.no_grad():
            s = torch.as_tensor(np.asarray(state, dtype=np.float32), device=self.device)
            return self.local_qnetwork(s).cpu().numpy()

    def greedy_action(self, state) -> int:
        """The action with the highest Q-value; draws no random numbers."""
        return int(self.q_values(state).argmax())  # the method: np.argmax's dispatch costs more than the work

    def act(self, state, epsilon: float = 0.0) -> int:
        """Epsilon-greedy: a random action with probability ``epsilon``, else the greedy one."""
        if self.rng.random() >= epsilon:
            return self.greedy_action(state)
        return int(self.rng.integers(self.action_size))

    def learn(self, experiences: Experiences, discount_factor: float) -> float:
        """One Adam step on the mean squared TD error, then a soft update of the target network.

        Returns the loss. The gradient comes from autograd or, on the CPU by default,
        from the same backpropagation written out in NumPy (see ``backprop``).
        """
        if self.backprop == "numpy":
            loss = self._numpy_backward(experiences, discount_factor)
        elif self.extended:
            loss = self._extended_backward(experiences, discount_factor)
        else:
            loss = self._autograd_backward(experiences, discount_factor)
        if not math.isfinite(loss):
            # Checked before the step, so the weights are still the last good ones.
            raise FloatingPointError(f"the loss became {loss} at learning step {self.learn_steps + 1}")
        if self.lr_decay_steps:
            self.optimizer.param_groups[0]["lr"] = self.scheduled_learning_rate()
        self.optimizer.step()
        if self.backprop == "numpy":
            target_params, local_params = [self._flat_target], [self._flat_local]
        else:
            target_params, local_params = self._target_params, self._local_params
        if not self.target_update_every:
            soft_update_(target_params, local_params, self.interpolation_parameter)
        elif (self.learn_steps + 1) % self.target_update_every == 0:
            hard_update_(target_params, local_params)
        self.learn_steps += 1
        self.last_loss = loss
        return loss

    def scheduled_learning_rate(self) -> float:
        """The learning rate of the next learning step: linear from the start to the end value, then flat.

        The schedule counts environment steps as ``learn_steps * learn_every / gradient_steps``,
        so ``lr_decay_steps`` means the same whatever the learning rhythm. It depends on
        ``learn_steps`` alone, which the training state saves: a resumed run continues it.
        """
        env_steps = self.learn_steps * self.learn_every / self.gradient_steps
        fraction = min(1.0, env_steps / self.lr_decay_steps)
        return self.learning_rate + (self.learning_rate_end - self.learning_rate) * fraction

    def _numpy_backward(self, experiences: Experiences, discount_factor: float) -> float:
        """The loss gradient by :func:`numpy_td_gradients`, with every option, into the flat ``.grad`` buffer."""
        batch = tuple(t.numpy() if isinstance(t, torch.Tensor) else t for t in experiences)
        weights = self.memory.last_weights if self.prioritized_replay else None
        loss, td_error = numpy_td_gradients(
            self._numpy_views,
            self._target_views,
            self._grad_views,
            batch,
            discount_factor**self.n_step,  # an n-step transition bootstraps n steps ahead
            double_dqn=self.double_dqn,
            huber=self.loss == "huber",
            weights=weights,
        )
        if self.grad_clip > 0:
            clip_grad_norm_(self._flat_grad.numpy(), self.grad_clip)
        if self.prioritized_replay:
            self.memory.update_priorities(self.memory.last_indices, np.abs(td_error))
        return loss

    def _autograd_backward(self, experiences: Experiences, discount_factor: float) -> float:
        """The textbook DQN loss, differentiated by autograd into each parameter's ``.grad``."""
        states, next_states, actions, rewards, dones = experiences
        with torch.no_grad():
            # max over a' of the *target* network: the slowly moving network keeps the target steady.
            next_q_max = self.target_qnetwork(next_states).max(dim=1, keepdim=True).values
            q_targets = bellman_target(rewards, next_q_max, dones, discount_factor)
        # Q_local(s, a) for the action actually taken in each sampled transition.
        q_expected = self.local_qnetwork(states).gather(1, actions)
        loss = F.mse_loss(q_expected, q_targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss.item()

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

    @staticmethod
    def soft_update(local_model: nn.Module, target_model: nn.Module, interpolation_parameter: float) -> None:
        """``theta_target <- tau * theta_local + (1 - tau) * theta_target`` (see :func:`soft_update`)."""
        soft_update(local_model, target_model, interpolation_parameter)

    # ------------------------------------------------------------ beyond the original

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

    def _extended_backward(self, experiences: Experiences, discount_factor: float) -> float:
        """The DQN loss with the options switched on (Double DQN, n-step, Huber, PER, clipping) by autograd."""
        states, next_states, actions, rewards, dones = experiences
        with torch.no_grad():
            next_q_target = self.target_qnetwork(next_states)
            if self.double_dqn:
                next_q = double_dqn_next_q(self.local_qnetwork(next_states), next_q_target)
            else:
                next_q = next_q_target.max(dim=1, keepdim=True).values
            # An n-step transition bootstraps n steps ahead: gamma ** n.
            q_targets = bellman_target(rewards, next_q, dones, discount_factor**self.n_step)
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
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self._local_params, self.grad_clip)
        if self.prioritized_replay:
            td_error = (q_targets - q_expected).detach().abs().squeeze(1).cpu().numpy()
            self.memory.update_priorities(self.memory.last_indices, td_error)
        return loss.item()


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


@torch.no_grad()
def hard_update_(target_params: list[torch.Tensor], local_params: list[torch.Tensor]) -> None:
    """Copy the local weights into the target network in place (the 2015 Nature DQN's target update)."""
    torch._foreach_copy_(target_params, local_params)


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
