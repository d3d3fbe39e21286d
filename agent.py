"""Deep Q-Learning: the replay memory and the agent that learns from it."""

from __future__ import annotations

import math
from typing import NamedTuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnetwork import Network, numpy_q_values

Array = TypeVar("Array", torch.Tensor, np.ndarray)


class Experiences(NamedTuple):
    """A sampled minibatch, every field a tensor on the memory's device."""

    states: torch.Tensor  # float32 (B, state_size)
    next_states: torch.Tensor  # float32 (B, state_size)
    actions: torch.Tensor  # int64 (B, 1)
    rewards: torch.Tensor  # float32 (B, 1)
    dones: torch.Tensor  # float32 (B, 1), 1.0 where the episode *terminated*


class ReplayMemory:
    """Fixed-size experience replay stored in preallocated arrays with a circular index.

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
        self.states = np.zeros((capacity, state_size), dtype=np.float32)
        self.next_states = np.zeros((capacity, state_size), dtype=np.float32)
        self.actions = np.zeros((capacity, 1), dtype=np.int64)
        self.rewards = np.zeros((capacity, 1), dtype=np.float32)
        self.dones = np.zeros((capacity, 1), dtype=np.float32)
        self.pos = 0  # where the next experience goes
        self.full = False  # True once pos has wrapped around

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

    def sample(self, batch_size: int) -> Experiences:
        """Return a uniformly drawn minibatch as ``(states, next_states, actions, rewards, dones)``."""
        idx = self.sample_indices(batch_size)
        # Fancy indexing copies into fresh arrays, so from_numpy never aliases the storage.
        batch = (self.states[idx], self.next_states[idx], self.actions[idx], self.rewards[idx], self.dones[idx])
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
            "actions": torch.from_numpy(self.actions[:n].copy()),
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
) -> float:
    """Backpropagate the mean squared TD error through the 3-layer MLP by hand, in NumPy.

    Computes exactly what ``F.mse_loss(Q_local(s).gather(1, a), target).backward()``
    computes (to float32 rounding) and writes the gradients into ``grad_views``
    (NumPy views of each parameter's ``.grad``, weight as ``(out, in)``). Returns the loss.

    Why by hand: for a 64-64 network the arithmetic is tiny and autograd's
    bookkeeping dominates; the same maths as a dozen NumPy calls is ~3x cheaper.
    """
    states, next_states, actions, rewards, dones = batch
    # Target: r + gamma * max_a' Q_target(s', a') * (1 - done), no gradient.
    next_q_max = numpy_q_values(target_views, next_states).max(axis=1, keepdims=True)
    q_targets = bellman_target(rewards, next_q_max, dones, discount_factor)
    # Forward pass of the local network, keeping what the backward pass needs.
    (w1, b1), (w2, b2), (w3, b3) = local_views  # weights as (in, out)
    z1 = states @ w1 + b1
    h1 = np.maximum(z1, 0.0)
    z2 = h1 @ w2 + b2
    h2 = np.maximum(z2, 0.0)
    q = h2 @ w3 + b3
    rows, taken = np.arange(len(actions)), actions[:, 0]
    td_error = q[rows, taken] - q_targets[:, 0]
    # d(mean of squares)/dQ(s, a) = 2 * td_error / B, and 0 for the actions not taken.
    dq = np.zeros_like(q)
    dq[rows, taken] = td_error * (2.0 / len(td_error))
    (gw1, gb1), (gw2, gb2), (gw3, gb3) = grad_views  # weights as (out, in), like nn.Linear
    np.matmul(dq.T, h2, out=gw3)
    np.sum(dq, axis=0, out=gb3)
    dz2 = dq @ w3.T
    dz2 *= z2 > 0.0  # ReLU passes gradient only where its input was positive
    np.matmul(dz2.T, h1, out=gw2)
    np.sum(dz2, axis=0, out=gb2)
    dz1 = dz2 @ w2.T
    dz1 *= z1 > 0.0
    np.matmul(dz1.T, states, out=gw1)
    np.sum(dz1, axis=0, out=gb1)
    return float(np.mean(np.square(td_error)))


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

    ``step`` is the count including this update (1 on the first call). Works on
    NumPy views of the torch optimizer's own ``exp_avg``/``exp_avg_sq`` state, so
    the optimizer's ``state_dict`` stays the one true record either way.
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
    offset = 0
    for t in tensors:
        n = t.numel()
        t.data = flat[offset : offset + n].view_as(t)
        offset += n
    return flat


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
        backprop: ``"numpy"`` computes the loss gradient with :func:`numpy_td_gradients`
            (CPU only, about 3x faster), ``"autograd"`` with ``loss.backward()``. Both
            feed the same Adam step and compute the same numbers up to float rounding.
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
        backprop: str = "numpy",
    ) -> None:
        if backprop not in ("numpy", "autograd"):
            raise ValueError(f"backprop must be 'numpy' or 'autograd', got {backprop!r}")
        self.state_size = state_size
        self.action_size = action_size
        self.minibatch_size = minibatch_size
        self.discount_factor = discount_factor
        self.interpolation_parameter = interpolation_parameter
        self.learn_every = learn_every
        self.device = torch.device(device)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.local_qnetwork = Network(state_size, action_size, hidden_size).to(self.device)
        # The target network starts from its own random weights, as in the original;
        # the soft update pulls it towards the local network from the first learn step.
        self.target_qnetwork = Network(state_size, action_size, hidden_size).to(self.device)
        # Fused Adam does the whole update in one kernel: same algorithm, ~25% less time
        # per learn step than the per-tensor loop on a CPU.
        self.optimizer = torch.optim.Adam(self.local_qnetwork.parameters(), lr=learning_rate, fused=True)
        self.memory = ReplayMemory(replay_buffer_size, state_size, self.device, self.rng)
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
            for p, g in zip(self._local_params, self._views_of(self._flat_grad), strict=True):
                p.grad = g  # written in place by numpy_td_gradients every learn step
            grads = [p.grad.numpy() for p in self._local_params]
            self._grad_views = list(zip(grads[0::2], grads[1::2], strict=True))
            self._init_adam_state()

    def step(self, state, action: int, reward: float, next_state, done: bool) -> None:
        """Store one transition and, every ``learn_every`` calls, learn from a random minibatch."""
        self.memory.push((state, action, reward, next_state, done))
        self.t_step = (self.t_step + 1) % self.learn_every
        # Learn only once the memory holds more than one minibatch, as in the original.
        if self.t_step == 0 and len(self.memory) > self.minibatch_size:
            self.learn(self.memory.sample(self.minibatch_size), self.discount_factor)

    def q_values(self, state) -> np.ndarray:
        """Q-values of the local network for one state, as a NumPy array."""
        if self._numpy_views is not None:
            return numpy_q_values(self._numpy_views, np.asarray(state, dtype=np.float32))
        with torch.no_grad():
            s = torch.as_tensor(np.asarray(state, dtype=np.float32), device=self.device)
            return self.local_qnetwork(s).cpu().numpy()

    def greedy_action(self, state) -> int:
        """The action with the highest Q-value; draws no random numbers."""
        return int(np.argmax(self.q_values(state)))

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
            batch = tuple(t.numpy() for t in experiences)
            loss = numpy_td_gradients(self._numpy_views, self._target_views, self._grad_views, batch, discount_factor)
        else:
            loss = self._autograd_backward(experiences, discount_factor)
        if not math.isfinite(loss):
            # Checked before the step, so the weights are still the last good ones.
            raise FloatingPointError(f"the loss became {loss} at learning step {self.learn_steps + 1}")
        if self.backprop == "numpy":
            self._numpy_optimizer_step()
            soft_update_([self._flat_target], [self._flat_local], self.interpolation_parameter)
        else:
            self.optimizer.step()
            soft_update_(self._target_params, self._local_params, self.interpolation_parameter)
        self.learn_steps += 1
        self.last_loss = loss
        return loss

    def _views_of(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Slices of a flat buffer shaped like each local parameter."""
        views, offset = [], 0
        for p in self._local_params:
            views.append(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        return views

    def _init_adam_state(self) -> None:
        """Put Adam's moment buffers in flat storage (torch would create them lazily, one per tensor).

        The optimizer keeps views of the flat buffers as its state, so ``optimizer.state_dict()``
        is the usual one, and NumPy updates all 4,996 moments in one operation. Also called after
        ``optimizer.load_state_dict``, which replaces the state tensors: their values are copied in.
        """
        exp_avg, exp_avg_sq = torch.zeros_like(self._flat_local), torch.zeros_like(self._flat_local)
        step = 0.0
        for p, m, v in zip(self._local_params, self._views_of(exp_avg), self._views_of(exp_avg_sq), strict=True):
            old = self.optimizer.state.get(p)
            if old:
                m.copy_(old["exp_avg"])
                v.copy_(old["exp_avg_sq"])
                step = float(old["step"])
            self.optimizer.state[p] = {"step": torch.tensor(step), "exp_avg": m, "exp_avg_sq": v}
        self._adam_views = (
            [self._flat_local.numpy()],
            [self._flat_grad.numpy()],
            [exp_avg.numpy()],
            [exp_avg_sq.numpy()],
        )
        self._adam_steps = [self.optimizer.state[p]["step"].numpy() for p in self._local_params]

    def _numpy_optimizer_step(self) -> None:
        """``self.optimizer.step()`` done in NumPy: the same Adam, without ~150 us of dispatch."""
        group = self.optimizer.param_groups[0]
        for step in self._adam_steps:
            step += 1  # the optimizer's own 0-d step counters, one per parameter, in place
        numpy_adam_step(*self._adam_views, int(self._adam_steps[0]), group["lr"], group["betas"], group["eps"])

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
        if self.backprop == "numpy":
            self._init_adam_state()  # load_state_dict replaced the optimizer's state tensors

    @staticmethod
    def soft_update(local_model: nn.Module, target_model: nn.Module, interpolation_parameter: float) -> None:
        """``theta_target <- tau * theta_local + (1 - tau) * theta_target`` (see :func:`soft_update`)."""
        soft_update(local_model, target_model, interpolation_parameter)
