"""The NumPy fast path: the same DQN with the gradient and Adam written out in NumPy (opt-in).

``--backprop numpy`` picks :class:`NumpyAgent`, which computes what :class:`agent.Agent` and the
options of ``dqnkit/options.py`` compute, to float32 rounding, about three times faster on
a CPU: for a 64-64 network the arithmetic is tiny, and autograd's and the optimizer's Python
bookkeeping dominate. It differentiates :class:`nnetwork.Network` (and ``DuelingNetwork``) by
hand, so it refuses any other network instead of training on something else.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from agent import Agent, Experiences, ReplayMemory, bellman_target, checked_loss
from dqnkit.options import DoubleDQN, GradientClipping, Huber, NStepReturns, PrioritizedReplay
from nnetwork import DuelingNetwork, Network, dueling_q_values

Views = list[tuple[np.ndarray, np.ndarray]]


def numpy_views(net: nn.Module) -> Views:
    """``(weight.T, bias)`` NumPy views of each layer (``fc1``, ``fc2``, ``fc3``, then ``value`` if dueling).

    They share memory with the parameters, so they stay current as long as the parameters
    change in place (``optimizer.step()``, ``load_state_dict`` and the soft update all do).
    """
    layers = [net.fc1, net.fc2, net.fc3] + ([net.value] if isinstance(net, DuelingNetwork) else [])
    return [(layer.weight.detach().numpy().T, layer.bias.detach().numpy()) for layer in layers]


def numpy_q_values(views: list[tuple[np.ndarray, np.ndarray]], state: np.ndarray) -> np.ndarray:
    """Compute the same Q-values as ``Network.forward`` for one state, in NumPy.

    For a single state the three small matrix products cost a few microseconds in
    NumPy against roughly 15 us of PyTorch dispatch overhead, and acting happens on
    every environment step.
    """
    x = state
    last = len(views) - 1
    for i, (weight_t, bias) in enumerate(views):
        x = x @ weight_t
        x += bias  # in place on the fresh product: one array per layer
        if i < last:
            relu_(x)
    return x


def relu_(x: np.ndarray) -> np.ndarray:
    """ReLU in place: ``max(x, 0)`` elementwise, written into ``x``; returns ``x``.

    Why a zero *array* and not the scalar 0.0: NumPy runs ``maximum`` of two arrays
    through its SIMD loop, 2-3x faster here (2 us against 7 us at 100 x 64), with
    the same result to the bit.
    """
    return np.maximum(x, _zeros(x.shape), out=x)


@lru_cache(maxsize=32)
def _zeros(shape: tuple[int, ...]) -> np.ndarray:
    """A read-only float32 array of zeros, one per shape (a run uses two or three shapes)."""
    zeros = np.zeros(shape, dtype=np.float32)
    zeros.flags.writeable = False
    return zeros


def numpy_dueling_q_values(views: list[tuple[np.ndarray, np.ndarray]], state: np.ndarray) -> np.ndarray:
    """:meth:`DuelingNetwork.forward` for one state, in NumPy (see :func:`numpy_q_values`)."""
    (w1, b1), (w2, b2), (w3, b3), (wv, bv) = views
    h = relu_(state @ w1 + b1)
    h = relu_(h @ w2 + b2)
    return dueling_q_values(h @ wv + bv, h @ w3 + b3)


def numpy_td_gradients(
    local_views: Views,
    target_views: Views,
    grad_views: Views,
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
    target uses (``gamma ** n`` for n-step returns). Options, as in ``dqnkit.options``: ``double_dqn``
    picks the next action with the local network; ``huber`` is smooth L1 with delta 1;
    ``weights`` multiply each sample's loss (prioritized replay's importance weights).
    """
    states, next_states, actions, rewards, dones = batch
    q_targets = numpy_q_targets(local_views, target_views, next_states, rewards, dones, discount_factor, double_dqn)
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
    if len(local_views) == 4:
        value_w, value_b = local_views[3]
        q = dueling_q_values(h2 @ value_w + value_b, q)
    rows, taken = np.arange(len(actions)), actions[:, 0]
    td_error = q[rows, taken] - q_targets[:, 0]
    loss, slope = td_loss_and_slope(td_error, huber, weights)
    # d(mean loss)/dQ(s, a) for the action taken, and 0 for the actions not taken.
    dq = np.zeros_like(q)
    dq[rows, taken] = slope
    _backpropagate(local_views, grad_views, states, h1, h2, dq)
    return loss, td_error


def numpy_q_targets(
    local_views: Views,
    target_views: Views,
    next_states: np.ndarray,
    rewards: np.ndarray,
    dones: np.ndarray,
    discount_factor: float,
    double_dqn: bool,
) -> np.ndarray:
    """The Bellman targets ``r + gamma * Q_target(s', a*) * (1 - done)``, shape ``(B, 1)``, no gradient."""
    q_values = numpy_dueling_q_values if len(local_views) == 4 else numpy_q_values
    next_q_target = q_values(target_views, next_states)
    if double_dqn:  # a* chosen by the local network, valued by the target one
        best = q_values(local_views, next_states).argmax(axis=1)
        next_q = next_q_target[np.arange(len(best)), best][:, None]
    else:
        next_q = row_max(next_q_target)
    return bellman_target(rewards, next_q, dones, discount_factor)


def row_max(x: np.ndarray) -> np.ndarray:
    """``x.max(axis=1, keepdims=True)``, the same numbers, faster for a few columns.

    NumPy reduces along a short last axis slowly (4.9 us for 100 x 4); the columns copied into
    rows and reduced along the first axis take 1.7 us. A maximum is exact, so the order is free.
    """
    return np.ascontiguousarray(x.T).max(axis=0)[:, None]


def td_loss_and_slope(td_error: np.ndarray, huber: bool, weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """The mean loss over the batch and its derivative with respect to each sample's ``Q(s, a)``."""
    n = len(td_error)
    if huber:  # smooth L1: quadratic within 1 of the target, linear beyond; its slope is clip(error)
        abs_error = np.abs(td_error)
        elementwise = np.where(abs_error < 1.0, 0.5 * np.square(td_error), abs_error - 0.5)
        slope, scale = np.clip(td_error, -1.0, 1.0), 1.0 / n
    elif weights is None:  # mean of squares, its sum as one dot product: slope 2 * error / n
        return float(td_error @ td_error) / n, td_error * (2.0 / n)
    else:
        elementwise, slope, scale = np.square(td_error), td_error, 2.0 / n
    if weights is not None:
        elementwise, slope = elementwise * weights, slope * weights
    return float(elementwise.sum()) / n, slope * scale


def _backpropagate(
    local_views: Views, grad_views: Views, states: np.ndarray, h1: np.ndarray, h2: np.ndarray, dq: np.ndarray
) -> None:
    """Chain rule from ``dL/dQ`` back through the layers, each gradient written into ``grad_views``."""
    (_, _), (w2, _), (w3, _) = local_views[:3]
    (gw1, gb1), (gw2, gb2), (gw3, gb3) = grad_views[:3]  # weights as (out, in), like nn.Linear
    dueling = len(local_views) == 4
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
        dz2 += d_value @ local_views[3][0].T
    dz2 *= h2 > 0.0  # ReLU passes gradient only where its input was positive
    np.matmul(dz2.T, h1, out=gw2)
    np.add.reduce(dz2, axis=0, out=gb2)
    dz1 = dz2 @ w2.T
    dz1 *= h1 > 0.0
    np.matmul(dz1.T, states, out=gw1)
    np.add.reduce(dz1, axis=0, out=gb1)


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
        # Two scratch arrays and out=: the same operations in the same order, without a new array for each.
        scratch, denom = np.empty_like(param), np.empty_like(param)
        np.subtract(grad, exp_avg, out=scratch)  # m <- m + (1 - beta1) (g - m) = beta1 m + (1 - beta1) g
        scratch *= 1.0 - beta1
        exp_avg += scratch
        exp_avg_sq *= beta2  # v <- beta2 v + (1 - beta2) g^2
        np.square(grad, out=scratch)
        scratch *= 1.0 - beta2
        exp_avg_sq += scratch
        np.sqrt(exp_avg_sq, out=denom)  # sqrt(v) / sqrt(1 - beta2^t) + eps
        denom /= bias_correction2_sqrt
        denom += eps
        np.multiply(exp_avg, step_size, out=scratch)  # theta <- theta - step_size * m / denom
        scratch /= denom
        param -= scratch


class NumpyAdam:
    """Adam for the NumPy path: its moments in flat buffers, updated by :func:`numpy_adam_step`.

    It reads and writes ``torch.optim.Adam``'s ``state_dict`` format, so a training state saved
    on either path resumes on the other. Why not ``torch.optim.Adam`` itself: its ``step()``
    costs more in Python dispatch than this whole update of 4,996 numbers in NumPy.

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
        self.param_groups = [{"lr": lr, "betas": betas, "eps": eps, **_TORCH_ADAM_FLAGS}]
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(flat_param), torch.zeros_like(flat_param)
        # torch counts steps per parameter; they always agree, but the file format keeps each.
        self.steps = torch.zeros(len(params))
        self._steps = self.steps.numpy()  # a view: one NumPy addition counts them all
        self.bind(params, flat_param, flat_grad)

    def bind(self, params: list[torch.Tensor], flat_param: torch.Tensor, flat_grad: torch.Tensor) -> None:
        """Work on these parameters and buffers (at the start, and again in a copy of the agent)."""
        self.params = params
        self._flat = (flat_param.numpy(), flat_grad.numpy(), self.exp_avg.numpy(), self.exp_avg_sq.numpy())

    def __getstate__(self) -> dict:
        # NumPy views do not survive a copy or a pickle: the owning NumpyAgent binds the copy again.
        return {k: v for k, v in self.__dict__.items() if k not in ("_flat", "_steps", "params")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._steps = self.steps.numpy()

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


def check_network(net: nn.Module) -> None:
    """Raise ``ValueError`` (one line) unless :func:`numpy_td_gradients` differentiates ``net`` exactly.

    It knows :class:`nnetwork.Network` as the project ships it: ``fc1``, ``fc2``, ``fc3`` linear
    layers with ReLU after the first two (and ``DuelingNetwork``'s ``value`` head). A network
    changed in any way (another layer, an activation, dropout) is refused: the structure is
    checked, then the forward pass is compared with the NumPy one on a few random states.
    """
    heads = ["fc1", "fc2", "fc3"] + (["value"] if isinstance(net, DuelingNetwork) else [])
    children = dict(net.named_children())
    known = type(net) in (Network, DuelingNetwork) and list(children) == heads
    known = known and all(type(m) is nn.Linear for m in children.values())
    known = known and len(list(net.parameters())) == 2 * len(heads)
    if known:
        probe = torch.randn(16, net.fc1.in_features, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = net(probe).numpy()
        q_values = numpy_dueling_q_values if len(heads) == 4 else numpy_q_values
        known = np.allclose(q_values(numpy_views(net), probe.numpy()), expected, rtol=1e-4, atol=1e-5)
    if not known:
        layers = ", ".join(f"{name}: {type(m).__name__}" for name, m in children.items())
        raise ValueError(
            f"--backprop numpy differentiates only the shipped Network (fc1-fc2-fc3 with ReLU); this "
            f"{type(net).__name__} ({layers}) computes something else: use --backprop autograd"
        )


class NumpyAgent(Agent):
    """:class:`agent.Agent` computed in NumPy on the CPU, the options of ``dqnkit/options.py`` included.

    Acting, the TD-loss gradient (:func:`numpy_td_gradients`), Adam (:class:`NumpyAdam`) and the
    target update all run on NumPy views of the very parameters the PyTorch networks hold, so
    ``local_qnetwork``, ``state_dict`` and checkpoints are the same as on the textbook path.
    The parameters of each network live in one flat buffer (:func:`flatten_`): Adam and the
    soft update touch 4,996 numbers in one operation instead of six small ones.

    :meth:`learn` is the fused fast path, like torch's ``_fused_adam``: the Bellman targets, the TD
    loss and its gradient in one NumPy function, which reads the options the agent has (Double DQN,
    Huber, n-step, prioritized replay). The optimizer step and the target update stay the named
    steps, so the options that override those (the learning-rate schedule, the hard update,
    :class:`NumpyGradientClipping`) and the memory options work here unchanged.
    """

    def __init__(self, state_size: int, action_size: int, **kwargs) -> None:
        super().__init__(state_size, action_size, **kwargs)
        if self.device.type != "cpu":
            raise ValueError(f"--backprop numpy runs on the CPU only, not on {self.device}: use --backprop autograd")
        check_network(self.local_qnetwork)
        self._bind()
        self.optimizer = NumpyAdam(self._local_params, self._flat_local, self._flat_grad, lr=self.learning_rate)

    def _bind(self) -> None:
        """Put each network's parameters (and the gradients) in flat buffers and make NumPy views of them."""
        self._local_params = list(self.local_qnetwork.parameters())
        self._flat_local = flatten_(self._local_params)
        self._flat_target = flatten_(list(self.target_qnetwork.parameters()))
        self._flat_grad = torch.zeros_like(self._flat_local)
        for p, g in zip(self._local_params, views_like(self._flat_grad, self._local_params), strict=True):
            p.grad = g  # written in place by numpy_td_gradients every learning step
        self._local_views = numpy_views(self.local_qnetwork)
        self._target_views = numpy_views(self.target_qnetwork)
        grads = [p.grad.numpy() for p in self._local_params]
        self._grad_views = list(zip(grads[0::2], grads[1::2], strict=True))
        dueling = isinstance(self.local_qnetwork, DuelingNetwork)
        self._q_values = numpy_dueling_q_values if dueling else numpy_q_values

    # Views and buffers that _bind() makes from the parameters.
    _UNBOUND = (
        "_local_params",
        "_flat_local",
        "_flat_target",
        "_flat_grad",
        "_local_views",
        "_target_views",
        "_grad_views",
    )

    def __getstate__(self) -> dict:
        # Views into storage do not survive a copy or a pickle; __setstate__ makes them anew.
        return {k: v for k, v in self.__dict__.items() if k not in self._UNBOUND}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._bind()
        self.optimizer.bind(self._local_params, self._flat_local, self._flat_grad)

    def greedy_action(self, state) -> int:
        """The action with the highest Q-value, computed on NumPy views of the local network."""
        # The method, not np.argmax: its dispatch costs more than the work.
        return int(self._q_values(self._local_views, np.asarray(state, dtype=np.float32)).argmax())

    def learn(self, experiences: Experiences, discount_factor: float) -> float:
        """:meth:`agent.Agent.learn` with the targets, the loss and its gradient fused into NumPy; returns the loss."""
        batch = tuple(t.numpy() if isinstance(t, torch.Tensor) else t for t in experiences)
        prioritized = isinstance(self, PrioritizedReplay)
        if isinstance(self, NStepReturns):  # what NStepReturns.bellman_targets does on the autograd path
            discount_factor **= self.memory.n_step
        loss, td_error = numpy_td_gradients(
            self._local_views,
            self._target_views,
            self._grad_views,
            batch,
            discount_factor,
            double_dqn=isinstance(self, DoubleDQN),
            huber=isinstance(self, Huber),
            weights=self.memory.last_weights if prioritized else None,
        )
        if prioritized:  # what PrioritizedReplay.td_loss does on the autograd path
            self.memory.update_priorities(self.memory.last_indices, np.abs(td_error))
        self.last_loss = checked_loss(loss, self.learn_steps)
        self.optimizer_step()
        self.update_target()
        self.learn_steps += 1
        return self.last_loss

    def update_target(self) -> None:
        """The soft update on the flat buffers: one operation for all parameters.

        No ``torch.no_grad()`` needed: the flat buffers are plain tensors that autograd never tracks.
        """
        self._flat_target.lerp_(self._flat_local, self.interpolation_parameter)


class NumpyGradientClipping(GradientClipping):
    """:class:`dqnkit.options.GradientClipping` on the twin's flat gradient buffer, in NumPy."""

    def clip_gradient(self) -> None:
        """Rescale the flat gradient in place to an L2 norm of at most ``grad_clip`` (:func:`clip_grad_norm_`)."""
        clip_grad_norm_(self._flat_grad.numpy(), self.grad_clip)


# The option classes whose arithmetic the twin does its own way, and the class it uses instead.
NUMPY_OPTIONS = {GradientClipping: NumpyGradientClipping}


class ArrayBatches(ReplayMemory):
    """A replay memory whose minibatches are NumPy arrays (``sample_arrays``): the twin makes no tensors.

    Mixed under the options' memories by ``dqnkit.agents.memory_class`` for ``--backprop numpy``;
    the same rows, drawn by the same generator, as the textbook's ``sample``.
    """

    def sample(self, batch_size: int) -> Experiences:
        return self.sample_arrays(batch_size)
