"""The NumPy twin (``--backprop numpy``): :class:`~dqnkit.learn.options.OptionsAgent` computed in NumPy.

Acting, the gradient, Adam, clipping and the soft update run in NumPy on views of the very parameters the
PyTorch networks hold, so checkpoints are the textbook path's. Like ``torch.optim.Adam``'s fused kernel
beside its single-tensor one, it computes the same numbers to float32 rounding, about 2.6x faster on a CPU
(docs/numpy-twin.md): at 64-64 units autograd's and the optimizer's Python bookkeeping dominate. It reuses
the options agent's named steps (``bellman_targets``, ``replayed``, ``optimizer_step``, ``update_target``)
and writes only the derivative by hand: the loss's slope and the chain rule through the shipped ``Network``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from agent import Experiences, checked_loss
from dqnkit.learn.numpy_adam import NumpyAdam, clip_grad_norm_, flatten_, views_like
from dqnkit.learn.options import OptionsAgent
from nnetwork import DuelingNetwork, Network, dueling_q_values

Views = list[tuple[np.ndarray, np.ndarray]]


def numpy_views(net: nn.Module) -> Views:
    """``(weight.T, bias)`` NumPy views of each layer (``fc1``, ``fc2``, ``fc3``, then ``value`` if dueling).

    They share memory with the parameters, so they stay current as long as the parameters
    change in place (``optimizer.step()``, ``load_state_dict`` and the soft update all do).
    """
    layers = [net.fc1, net.fc2, net.fc3] + ([net.value] if isinstance(net, DuelingNetwork) else [])
    return [(layer.weight.detach().numpy().T, layer.bias.detach().numpy()) for layer in layers]


def numpy_forward(views: Views, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Network.forward`` (or ``DuelingNetwork``'s, with four layers of views) in NumPy: ``(q, h1, h2)``.

    The hidden activations are what the backward pass needs. For one state the small matrix
    products cost a few microseconds against roughly 15 us of PyTorch dispatch per call.
    """
    (w1, b1), (w2, b2), (w3, b3) = views[:3]
    h1 = states @ w1
    h1 += b1  # in place on the fresh product: one array per layer
    relu_(h1)
    h2 = h1 @ w2
    h2 += b2
    relu_(h2)
    q = h2 @ w3
    q += b3
    if len(views) == 4:
        value_w, value_b = views[3]
        q = dueling_q_values(h2 @ value_w + value_b, q)
    return q, h1, h2


def numpy_q_values(views: Views, states: np.ndarray) -> np.ndarray:
    """The Q-values of :func:`numpy_forward` alone."""
    return numpy_forward(views, states)[0]


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


def check_network(net: nn.Module) -> None:
    """Raise ``ValueError`` (one line) unless :func:`numpy_forward` computes ``net`` exactly.

    It knows :class:`nnetwork.Network` as the project ships it: ``fc1``, ``fc2``, ``fc3`` linear layers
    with ReLU after the first two (and ``DuelingNetwork``'s ``value`` head). A network changed in any
    way is refused: the structure is checked, then the forward pass compared on a few random states.
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
        known = np.allclose(numpy_q_values(numpy_views(net), probe.numpy()), expected, rtol=1e-4, atol=1e-5)
    if not known:
        layers = ", ".join(f"{name}: {type(m).__name__}" for name, m in children.items())
        raise ValueError(
            f"--backprop numpy differentiates only the shipped Network (fc1-fc2-fc3 with ReLU); this "
            f"{type(net).__name__} ({layers}) computes something else: use --backprop autograd"
        )


class NumpyAgent(OptionsAgent):
    """:class:`~dqnkit.learn.options.OptionsAgent` computed in NumPy on the CPU (see the module's docstring).

    The parameters of each network live in one flat buffer (:func:`flatten_`): Adam, clipping and
    the soft update touch 4,996 numbers in one operation instead of six small ones.
    """

    def __init__(self, state_size: int, action_size: int, **kwargs) -> None:
        super().__init__(state_size, action_size, arrays=True, **kwargs)
        if self.device.type != "cpu":
            raise ValueError(f"--backprop numpy runs on the CPU only, not on {self.device}: use --backprop autograd")
        if self.loss not in ("mse", "huber"):  # td_loss_and_slope knows these derivatives, no other
            raise ValueError(f"--backprop numpy differentiates the mse and huber losses, not {self.loss!r}")
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
            p.grad = g  # written in place by _backpropagate every learning step
        self._local_views = numpy_views(self.local_qnetwork)
        self._target_views = numpy_views(self.target_qnetwork)
        grads = [p.grad.numpy() for p in self._local_params]
        self._grad_views = list(zip(grads[0::2], grads[1::2], strict=True))

    # Views and buffers that _bind() makes from the parameters: a copy or a pickle makes them anew.
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
        return {k: v for k, v in self.__dict__.items() if k not in self._UNBOUND}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._bind()
        self.optimizer.bind(self._local_params, self._flat_local, self._flat_grad)

    def next_q_values(self, network: nn.Module, next_states: np.ndarray) -> np.ndarray:
        """The Q-values of ``network`` (the local or the target one), computed on its NumPy views."""
        return numpy_q_values(self._local_views if network is self.local_qnetwork else self._target_views, next_states)

    def greedy_action(self, state) -> int:
        """The action with the highest Q-value, computed on NumPy views of the local network."""
        # The method, not np.argmax: its dispatch costs more than the work.
        return int(numpy_q_values(self._local_views, np.asarray(state, dtype=np.float32)).argmax())

    def learn_once(self, experiences: Experiences, discount_factor: float) -> float:
        """:meth:`agent.Agent.learn` with the loss's gradient derived by hand; the same named steps around it."""
        q_targets = self.bellman_targets(experiences, discount_factor)
        states, _, actions, _, _ = experiences
        q, h1, h2 = numpy_forward(self._local_views, states)
        rows, taken = np.arange(len(actions)), actions[:, 0]
        td_error = q[rows, taken] - q_targets[:, 0]
        weights = self.replayed(td_error)
        loss, slope = td_loss_and_slope(td_error, self.loss == "huber", weights)
        dq = np.zeros_like(q)  # d(loss)/dQ(s, a): the slope for the action taken, 0 for the others
        dq[rows, taken] = slope
        _backpropagate(self._local_views, self._grad_views, states, h1, h2, dq)
        self.last_loss = checked_loss(loss, self.learn_steps)
        self.optimizer_step()
        self.update_target()
        self.learn_steps += 1
        return self.last_loss

    def clip_gradient(self) -> None:
        """Rescale the flat gradient in place to an L2 norm of at most ``grad_clip`` (:func:`clip_grad_norm_`)."""
        clip_grad_norm_(self._flat_grad.numpy(), self.grad_clip)

    def soft_update(self, local_model: nn.Module, target_model: nn.Module, interpolation_parameter: float) -> None:
        """The soft update; on the agent's own networks one operation on their flat buffers."""
        if local_model is self.local_qnetwork and target_model is self.target_qnetwork:
            self._flat_target.lerp_(self._flat_local, interpolation_parameter)
        else:
            super().soft_update(local_model, target_model, interpolation_parameter)
