"""Adam, gradient clipping and flat parameter buffers in NumPy: the optimizer of the NumPy twin."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def numpy_adam_step(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
) -> None:
    """One Adam update of ``param`` in place, the arithmetic of ``torch.optim.Adam`` (Kingma & Ba, 2015).

    ``step`` is the count including this update (1 on the first call).
    """
    beta1, beta2 = betas
    bias_correction1 = 1.0 - beta1**step
    bias_correction2_sqrt = (1.0 - beta2**step) ** 0.5
    step_size = lr / bias_correction1
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
        numpy_adam_step(*self._flat, int(self._steps[0]), group["lr"], group["betas"], group["eps"])

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
_TORCH_ADAM_FLAGS = dict(weight_decay=0, amsgrad=False, maximize=False, foreach=None, capturable=False)
_TORCH_ADAM_FLAGS.update(differentiable=False, fused=True, decoupled_weight_decay=False)


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
