"""The one place that picks the learning code: the textbook agent, the options, or the NumPy twin.

Like ``torch.optim.Adam`` choosing between its single-tensor, multi-tensor and fused
implementations, :func:`agent_class` chooses between three classes with one interface and
tests that hold them equal: :class:`agent.Agent` (the default, what ``agent.py`` shows),
:class:`dqnkit.options.ExtendedAgent` (when an option beyond the original is on) and
:class:`dqnkit.numpy_twin.NumpyAgent` (only with ``--backprop numpy``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agent import Agent
from dqnkit.errors import UserError, first_line

# The Config fields that agent.Agent takes, and those only ExtendedAgent knows.
CORE_FIELDS = (
    "learning_rate",
    "minibatch_size",
    "discount_factor",
    "replay_buffer_size",
    "interpolation_parameter",
    "learn_every",
    "hidden_size",
)
OPTION_FIELDS = (
    "double_dqn",
    "dueling",
    "n_step",
    "loss",
    "grad_clip",
    "target_update_every",
    "gradient_steps",
    "prioritized_replay",
    "priority_alpha",
    "priority_beta",
    "learning_rate_end",
    "lr_decay_steps",
)
# An option is on when its switch differs from this (alpha, beta and the end rate only matter with theirs).
OFF = {
    "double_dqn": False,
    "dueling": False,
    "n_step": 1,
    "loss": "mse",
    "grad_clip": 0.0,
    "target_update_every": 0,
    "gradient_steps": 1,
    "prioritized_replay": False,
    "lr_decay_steps": 0,
}


def options_on(cfg: Any) -> list[str]:
    """The options beyond the original DQN that ``cfg`` switches on."""
    return [name for name, off in OFF.items() if getattr(cfg, name) != off]


def agent_class(cfg: Any) -> type[Agent]:
    """:class:`agent.Agent` unless ``cfg`` asks for an option or for the NumPy twin."""
    if cfg.backprop == "numpy":
        from dqnkit.numpy_twin import NumpyAgent

        return NumpyAgent
    if options_on(cfg):
        from dqnkit.options import ExtendedAgent

        return ExtendedAgent
    return Agent


def build_agent(cfg: Any, env, device: torch.device, rng: np.random.Generator) -> Agent:
    """The agent that ``cfg`` (a ``main.Config``) describes, sized for ``env``."""
    cls = agent_class(cfg)
    kwargs: dict[str, Any] = {name: getattr(cfg, name) for name in CORE_FIELDS}
    if cls is not Agent:
        kwargs.update({name: getattr(cfg, name) for name in OPTION_FIELDS})
    try:
        return cls(env.observation_space.shape[0], int(env.action_space.n), device=device, rng=rng, **kwargs)
    except ValueError as exc:  # a network the NumPy twin cannot differentiate, a bad option
        raise UserError(first_line(exc)) from None
