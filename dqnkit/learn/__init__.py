"""The learning code, and the one place that picks it: the textbook agent, its options, or the NumPy twin.

Like ``torch.optim.Adam`` choosing between its single-tensor, multi-tensor and fused implementations,
:func:`build_agent` chooses the class: :class:`agent.Agent` when the configuration asks for nothing
beyond the original (what ``agent.py`` shows, and what ``python main.py`` runs),
:class:`dqnkit.learn.options.OptionsAgent` when it switches an option on, and
:class:`dqnkit.learn.twin.NumpyAgent` with ``--backprop numpy``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from agent import Agent
from dqnkit.errors import UserError, first_line

# The Config fields that agent.Agent takes.
CORE_FIELDS = (
    "learning_rate",
    "minibatch_size",
    "discount_factor",
    "replay_buffer_size",
    "interpolation_parameter",
    "learn_every",
    "hidden_size",
)
# Each option's switch and its value when off; the Config fields OptionsAgent takes are these and OPTION_EXTRAS.
OFF = {
    "double_dqn": False,
    "dueling": False,
    "n_step": 1,
    "loss": "mse",
    "prioritized_replay": False,
    "grad_clip": 0.0,
    "target_update_every": 0,
    "lr_decay_steps": 0,
    "gradient_steps": 1,
}
OPTION_EXTRAS = ("priority_alpha", "priority_beta", "learning_rate_end")  # matter only with their switch
OPTION_FIELDS = (*OFF, *OPTION_EXTRAS)


def options_on(cfg: Any) -> list[str]:
    """The options beyond the original DQN that ``cfg`` switches on."""
    return [name for name, off in OFF.items() if getattr(cfg, name) != off]


def make_agent(cfg: Any, state_size: int, action_size: int, device: torch.device | str, rng: np.random.Generator):
    """The agent that ``cfg`` describes, for observations of ``state_size`` and ``action_size`` actions."""
    if cfg.backprop == "numpy":
        from dqnkit.learn.twin import NumpyAgent as cls
    elif options_on(cfg):
        from dqnkit.learn.options import OptionsAgent as cls
    else:
        cls = Agent  # the original DQN: exactly the code agent.py shows
    fields = CORE_FIELDS if cls is Agent else (*CORE_FIELDS, *OPTION_FIELDS)
    kwargs = {name: getattr(cfg, name) for name in fields}
    return cls(state_size, action_size, device=device, rng=rng, **kwargs)


def build_agent(cfg: Any, env, device: torch.device, rng: np.random.Generator) -> Agent:
    """The agent that ``cfg`` (a ``main.Config``) describes, sized for ``env``; one line if it cannot fit in memory."""
    state_size, action_size = env.observation_space.shape[0], int(env.action_space.n)
    check_memory(cfg, state_size, action_size)  # before allocating: NumPy's error is a traceback, the OOM killer silent
    try:
        return make_agent(cfg, state_size, action_size, device, rng)
    except ValueError as exc:  # a network the NumPy twin cannot differentiate, a bad option
        raise UserError(first_line(exc)) from None


def memory_needed(cfg: Any, state_size: int, action_size: int) -> int:
    """Bytes the replay memory and the networks of ``cfg`` take, estimated before allocating them.

    A row of ``2 * state_size + 3`` float32 per experience (and a float64 sum tree under prioritized
    replay); each parameter five times: local, target, gradient, Adam's two moments.
    """
    h = cfg.hidden_size
    parameters = (state_size + 1) * h + (h + 1) * h + (h + 1) * action_size + (h + 1) * cfg.dueling
    replay = cfg.replay_buffer_size * (2 * state_size + 3) * 4
    if cfg.prioritized_replay:
        replay += 2 * (1 << max(0, (cfg.replay_buffer_size - 1).bit_length())) * 8
    return replay + 5 * parameters * 4


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux's MemAvailable), or None where it cannot tell."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def check_memory(cfg: Any, state_size: int, action_size: int) -> None:
    """Refuse, in one line with the figures, a run whose replay memory and networks cannot fit in memory."""
    needed, available = memory_needed(cfg, state_size, action_size), available_memory()
    if available is not None and needed > available:
        raise UserError(
            f"--replay-buffer-size {cfg.replay_buffer_size} and --hidden-size {cfg.hidden_size} need about "
            f"{needed / 2**30:.1f} GiB for the replay memory and the networks; this machine has "
            f"{available / 2**30:.1f} GiB available"
        )
