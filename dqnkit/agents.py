"""The one place that picks the learning code: the textbook agent, its options, and the NumPy twin.

Like ``torch.optim.Adam`` choosing between its single-tensor, multi-tensor and fused
implementations, :func:`agent_class` chooses the base class: :class:`agent.Agent` (the default,
what ``agent.py`` shows) or :class:`dqnkit.numpy_twin.NumpyAgent` (only with ``--backprop numpy``).
On it, it mixes the class of each option beyond the original that the configuration switches on
(``dqnkit/options.py``, each overriding one named step), and :func:`memory_class` mixes their
replay-memory classes. With no option on, the agent is the base class itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from agent import Agent, ReplayMemory
from dqnkit.errors import UserError, first_line
from dqnkit.options import OPTIONS, Option
from dqnkit.settings import check_memory

# The Config fields that agent.Agent takes, and those only the options read.
CORE_FIELDS = (
    "learning_rate",
    "minibatch_size",
    "discount_factor",
    "replay_buffer_size",
    "interpolation_parameter",
    "learn_every",
    "hidden_size",
)
OPTION_FIELDS = tuple(
    dict.fromkeys(
        name
        for option in OPTIONS
        for name in (option.switch, *option.fields, *option.memory_fields.values())
        if name not in CORE_FIELDS
    )
)
# An option is on when its switch differs from this (alpha, beta and the end rate only matter with theirs).
OFF = {option.switch: option.off for option in OPTIONS}


def options_on(cfg: Any) -> list[str]:
    """The options beyond the original DQN that ``cfg`` switches on."""
    return [name for name, off in OFF.items() if getattr(cfg, name) != off]


def option_classes(cfg: Any) -> list[type[Option]]:
    """The classes of the options that ``cfg`` switches on, outermost first."""
    return [option for option in OPTIONS if getattr(cfg, option.switch) != option.off]


def agent_class(cfg: Any) -> type[Agent]:
    """:class:`agent.Agent`, or the NumPy twin, with the class of every option ``cfg`` switches on mixed in."""
    base, options = Agent, option_classes(cfg)
    if cfg.backprop == "numpy":
        from dqnkit.numpy_twin import NUMPY_OPTIONS, NumpyAgent

        base, options = NumpyAgent, [NUMPY_OPTIONS.get(option, option) for option in options]
    return compose(*options, base)


def memory_class(cfg: Any) -> Callable[..., ReplayMemory]:
    """The replay memory: :class:`agent.ReplayMemory`, or the memory classes of the options on, mixed."""
    memories = [option.memory for option in option_classes(cfg) if option.memory is not None]
    if cfg.backprop == "numpy":  # the twin takes its minibatches as arrays
        from dqnkit.numpy_twin import ArrayBatches

        memories.append(ArrayBatches)
    if not memories:
        return ReplayMemory
    fields = {arg: getattr(cfg, name) for option in option_classes(cfg) for arg, name in option.memory_fields.items()}
    return functools.partial(compose(*memories), **fields)


def make_agent(cfg: Any, state_size: int, action_size: int, device: torch.device | str, rng: np.random.Generator):
    """The agent that ``cfg`` describes, for observations of ``state_size`` and ``action_size`` actions."""
    fields = [*CORE_FIELDS, *(name for option in option_classes(cfg) for name in option.fields)]
    kwargs = {name: getattr(cfg, name) for name in fields}
    return agent_class(cfg)(state_size, action_size, device=device, rng=rng, memory_class=memory_class(cfg), **kwargs)


def build_agent(cfg: Any, env, device: torch.device, rng: np.random.Generator) -> Agent:
    """The agent that ``cfg`` (a ``main.Config``) describes, sized for ``env``; one line if it cannot fit in memory."""
    state_size, action_size = env.observation_space.shape[0], int(env.action_space.n)
    check_memory(cfg, state_size, action_size)  # before allocating: NumPy's error is a traceback, the OOM killer silent
    try:
        return make_agent(cfg, state_size, action_size, device, rng)
    except ValueError as exc:  # a network the NumPy twin cannot differentiate, a bad option
        raise UserError(first_line(exc)) from None


@functools.cache
def compose(*classes: type) -> type:
    """One class with ``classes`` as its bases, the first overriding the rest; the same class for the same bases.

    ``compose(DoubleDQN, Huber, Agent)`` is a class ``Agent+DoubleDQN+Huber(DoubleDQN, Huber, Agent)``;
    ``compose(Agent)`` is ``Agent`` itself.
    """
    if len(classes) == 1:
        return classes[0]
    *mixins, base = classes
    name = "+".join([base.__name__, *(mixin.__name__ for mixin in mixins)])
    return type(name, classes, {"__reduce__": _reduce, "__module__": __name__})


def _reduce(obj: Any) -> tuple:
    # A class made by compose() has no name to import it by, so a pickle or a copy of one of its
    # objects records the bases instead, and compose() makes (or finds) the class again.
    state = obj.__getstate__() if hasattr(obj, "__getstate__") else obj.__dict__  # Python 3.10 has no default
    return _new_object, (type(obj).__bases__,), state


def _new_object(bases: tuple[type, ...]) -> Any:
    """An empty object of ``compose(*bases)``, which unpickling then fills in."""
    cls = compose(*bases)
    return cls.__new__(cls)
