"""The search space of ``tune.py``: which settings a trial draws, from which ranges, and why. Ranges are
rl-baselines3-zoo's DQN space (``sample_dqn_params``) wherever it has the setting; each option beyond the original
DQN can be off. Every trial draws every parameter (a flat space): multivariate TPE models them together."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The learning rate a decay ends at, as a share of the start: the preset of 2026-11-26 went 1e-3 -> 5e-5.
LR_END_SHARE = 0.05


@dataclass(frozen=True)
class Param:
    """One parameter of the space: an Optuna distribution and where its range comes from."""

    name: str  # the Config field it sets (subsample_steps sets gradient_steps, see config_overrides)
    kind: str  # "log" (a float on a log scale), "float", "int" (low, high, step) or "choice"
    values: tuple
    why: str
    original: bool = False  # one of the original DQN's hyperparameters


SPACE = (
    Param("learning_rate", "log", (1e-5, 1e-2), "zoo: 1e-5 to 1, log; cut at 1e-2, 20x the original's", True),
    Param("minibatch_size", "choice", (16, 32, 64, 100, 128, 256, 512), "zoo's batch_size", True),
    Param("discount_factor", "choice", (0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999), "zoo's gamma", True),
    Param("replay_buffer_size", "choice", (10_000, 50_000, 100_000, 1_000_000), "zoo's buffer_size", True),
    Param("epsilon_end", "float", (0.0, 0.2), "zoo's exploration_final_eps", True),
    Param("epsilon_decay", "float", (0.98, 0.999), "per episode, around the original 0.995", True),
    Param("interpolation_parameter", "choice", (0.001, 0.005, 0.01, 0.02, 0.05, 0.08), "zoo's tau (SAC, TD3)", True),
    Param("learn_every", "choice", (1, 4, 8, 16, 128, 256, 1000), "zoo's train_freq", True),
    Param("hidden_size", "choice", (64, 128, 256), "zoo's net_arch small (64, 64) and medium (256, 256); 128", True),
    Param("subsample_steps", "choice", (1, 2, 4, 8), "zoo: gradient_steps = max(learn_every // this, 1)"),
    Param(
        "target_update_every",
        "choice",
        (0, 1, 1000, 5000, 10000, 15000, 20000),
        "zoo's target_update_interval, counted here in learning steps; 0 = the soft update",
    ),
    Param(
        "epsilon_decay_steps",
        "int",
        (0, 50_000, 1_000),
        "zoo: exploration_fraction 0-0.5 of its 100,000 LunarLander steps; 0 = per episode",
    ),
    Param("double_dqn", "choice", (False, True), "off or on"),
    Param("dueling", "choice", (False, True), "off or on"),
    Param("n_step", "choice", (1, 3, 5, 10), "Rainbow's 3, the old preset's 5; 1 = off"),
    Param("lr_decay_steps", "choice", (0, 100_000, 250_000, 500_000), f"to {LR_END_SHARE:g}x the rate; 0 = off"),
    Param("loss", "choice", ("mse", "huber"), "SB3's DQN uses huber"),
    Param("grad_clip", "choice", (0.0, 10.0), "SB3's DQN clips at 10; 0 = off"),
    Param("prioritized_replay", "choice", (False, True), "off or on"),
)
# The preset's study (issue 21): settings whose learning costs at most about the original's per step
# (64 or 128 wide, one gradient step every 2 to 8 steps, the soft update), and how often the greedy
# stopping rule is checked, since 100 evaluation episodes cost about as much as 20 training ones.
FAST = (
    Param("learning_rate", "log", (2e-4, 3e-3), "around the original 5e-4", True),
    Param("minibatch_size", "choice", (32, 64, 100, 128), "the original's 100 among zoo's", True),
    Param("discount_factor", "choice", (0.98, 0.99, 0.995), "zoo's, near the original 0.99", True),
    Param("replay_buffer_size", "choice", (50_000, 100_000), "zoo's, at most the original's", True),
    Param("epsilon_end", "float", (0.0, 0.1), "zoo's exploration_final_eps, cut at 0.1", True),
    Param("epsilon_decay", "float", (0.97, 0.995), "per episode, the original's 0.995 or faster", True),
    Param("interpolation_parameter", "choice", (0.001, 0.005, 0.01, 0.02), "zoo's tau, cut at 0.02", True),
    Param("learn_every", "choice", (2, 4, 8), "zoo's train_freq around the original's 4", True),
    Param("hidden_size", "choice", (64, 128), "the original's 64, or 128", True),
    Param("subsample_steps", "choice", (8,), "one gradient step per learning step"),
    Param("target_update_every", "choice", (0,), "the soft update"),
    Param("epsilon_decay_steps", "int", (0, 30_000, 1_000), "0 = per episode"),
    *(p for p in SPACE if p.name in ("double_dqn", "dueling")),
    Param("n_step", "choice", (1, 3, 5), "1 = off"),
    Param("lr_decay_steps", "choice", (0, 100_000, 250_000), f"to {LR_END_SHARE:g}x the rate; 0 = off"),
    *(p for p in SPACE if p.name in ("loss", "grad_clip", "prioritized_replay")),
    Param("eval_every", "choice", (10, 20, 50), "episodes between checks of the stopping rule"),
)
# The study for a preset at half the original's time (issue 28): the cheap settings, and from which training
# average the checks start (the preset's 200; each check before it passes is about 20 training episodes lost).
GATED = (
    *FAST,
    Param("eval_from_average", "choice", (None, 100.0, 150.0, 200.0), "None: check from the first episodes"),
)
SPACES = {"all": SPACE, "original": tuple(p for p in SPACE if p.original), "fast": FAST, "gated": GATED}


def contains(param: Param, value: Any) -> bool:
    """Whether ``value`` is a point of ``param``'s range (True is not 1 here, nor 1 True)."""
    if param.kind == "choice":
        return any(type(value) is type(v) and value == v for v in param.values)
    low, high, *step = param.values  # an "int" range has a step: its points are ints
    if isinstance(value, bool) or not isinstance(value, int if step else int | float):
        return False
    return low <= value <= high and (not step or (value - low) % step[0] == 0)


def draw(trial: Any, space: str) -> dict[str, Any]:
    """The settings an ``optuna.Trial`` draws from the named space, as Config fields."""
    params = {}
    for p in SPACES[space]:
        if p.kind == "choice":
            params[p.name] = trial.suggest_categorical(p.name, p.values)
        elif p.kind == "int":
            low, high, step = p.values
            params[p.name] = trial.suggest_int(p.name, low, high, step=step)
        else:
            params[p.name] = trial.suggest_float(p.name, *p.values, log=p.kind == "log")
    return config_overrides(params)


def config_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """Config fields from a trial's parameters (the zoo's ``subsample_steps`` gives ``gradient_steps``)."""
    fields = dict(params)
    if "subsample_steps" in fields:
        fields["gradient_steps"] = max(fields["learn_every"] // fields.pop("subsample_steps"), 1)
    if fields.get("lr_decay_steps"):
        fields["learning_rate_end"] = fields["learning_rate"] * LR_END_SHARE
    return fields


def params_of(cfg: Any, space: str) -> dict[str, Any]:
    """The parameters that give ``cfg``'s settings (the inverse of :func:`config_overrides`); ValueError when
    ``cfg`` is no point of the space (so a study can queue the original defaults and the preset first)."""
    params: dict[str, Any] = {}
    for p in SPACES[space]:
        if p.name == "subsample_steps":
            fits = [s for s in p.values if max(cfg.learn_every // s, 1) == cfg.gradient_steps]
            if not fits:
                raise ValueError(f"no subsample_steps gives gradient_steps={cfg.gradient_steps}")
            params[p.name] = fits[0]
            continue
        value = getattr(cfg, p.name)
        if not contains(p, value):
            raise ValueError(f"{p.name}={value!r} is outside the search space ({p.why})")
        params[p.name] = value
    if cfg.lr_decay_steps and abs(cfg.learning_rate_end - cfg.learning_rate * LR_END_SHARE) > 1e-12:
        raise ValueError(f"learning_rate_end={cfg.learning_rate_end} is not {LR_END_SHARE:g} x the learning rate")
    return params
