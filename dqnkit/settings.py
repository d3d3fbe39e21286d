"""Every setting of a run beyond the original DQN's hyperparameters, and the named presets.

``main.Config`` is :class:`RunSettings`, :class:`BeyondOptions` and the original hyperparameters
that ``main.py`` declares itself (``main.Hyperparameters``). Each field is declared with
:func:`dqnkit.cli.setting`: its help, its validator and its ``--help`` group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dqnkit.cli import (
    BEYOND,
    RUN,
    finite_float,
    nonnegative_int,
    positive_float,
    positive_int,
    seed_number,
    setting,
    unit_interval,
)
from dqnkit.cli import apply_preset as _apply
from dqnkit.envs import SOLVED_SCORE


@dataclass
class RunSettings:
    """Where a run goes, what it shows and what it keeps; none of them changes what it learns."""

    env: str = setting(
        "LunarLander-v3",
        "Gymnasium environment id (LunarLander-v2 was removed in Gymnasium 1.0)",
        metavar="ID",
        group=RUN,
    )
    seed: int = setting(0, "seed for Python, NumPy, PyTorch and the environment", seed_number, group=RUN)
    target_score: float = setting(SOLVED_SCORE, "100-episode average that counts as solved", float, group=RUN)
    keep_training: bool = setting(False, "go on after reaching the target score", action="store_true", group=RUN)
    checkpoint: str = setting(
        "checkpoint.pth", "the weights of a run that solves (every run: runs/<run>/last.pth)", metavar="PATH", group=RUN
    )
    video: bool = setting(True, "record no videos", flag="--no-video", action="store_false", group=RUN)
    video_every: int = setting(50, "record a greedy episode every this many episodes", positive_int, group=RUN)
    log_every: int = setting(100, "print a status line every this many episodes", positive_int, group=RUN)
    save_every: int = setting(50, "save the resumable training state every this many episodes", positive_int, group=RUN)
    quiet: bool = setting(False, "no live status bar and no status lines", action="store_true", group=RUN)
    tensorboard: bool = setting(
        False, "also log the metrics for TensorBoard (needs the tensorboard package)", action="store_true", group=RUN
    )
    device: str = setting(
        "cpu", "auto = cuda when available; the CPU is fastest at this size", choices=("cpu", "cuda", "auto"), group=RUN
    )
    backprop: str = setting(
        "autograd",
        "how the loss gradient is computed: autograd (loss.backward() and torch.optim.Adam, the code agent.py "
        "shows) or numpy (the opt-in twin in dqnkit/learn/twin.py: the same numbers to float32 rounding, "
        "faster on a CPU; see the README)",
        choices=("numpy", "autograd"),
        group=RUN,
    )


@dataclass
class BeyondOptions:
    """Later improvements of the DQN, each off by default; the NumPy and autograd paths both compute each one."""

    double_dqn: bool = setting(
        False,
        "Double DQN (van Hasselt et al., 2016): the local network picks the next action, the target network "
        "values it; removes the overestimation of max over noisy Q-values",
        action="store_true",
        group=BEYOND,
    )
    dueling: bool = setting(
        False,
        "dueling head (Wang et al., 2016): Q = V(s) + A(s, a) - mean A(s, .); the state value is learnt from "
        "every sample, whatever the action",
        action="store_true",
        group=BEYOND,
    )
    n_step: int = setting(
        1,
        "n-step returns (Sutton, 1988; Hessel et al., 2018 Rainbow): bootstrap after N rewards; rewards "
        "such as the landing bonus reach earlier states N times faster",
        positive_int,
        group=BEYOND,
    )
    loss: str = setting(
        "mse",
        "loss on the TD error: mse, or huber (smooth L1, delta 1; Mnih et al., 2015), linear for big "
        "errors so a crash's -100 cannot give a huge gradient",
        choices=("mse", "huber"),
        group=BEYOND,
    )
    grad_clip: float = setting(
        0.0,
        "rescale the gradient to at most this L2 norm, a guard against rare huge updates; 0 = off",
        float,
        group=BEYOND,
    )
    target_update_every: int = setting(
        0,
        "copy the local network into the target every N learning steps (Mnih et al., 2015) instead of the "
        "soft update; 0 = soft update with --interpolation-parameter",
        nonnegative_int,
        group=BEYOND,
    )
    gradient_steps: int = setting(
        1,
        "learning steps each time the agent learns, each on its own minibatch: a higher replay ratio "
        "(Fedus et al., 2020), more learning from every environment step",
        positive_int,
        group=BEYOND,
    )
    epsilon_decay_steps: int = setting(
        0,
        "decay epsilon linearly from --epsilon-start to --epsilon-end over N environment steps (Mnih et al., "
        "2015) instead of per episode: exploration ends on time however long the episodes are; 0 = per episode",
        nonnegative_int,
        group=BEYOND,
    )
    lr_decay_steps: int = setting(
        0,
        "decay the learning rate linearly from --learning-rate to --learning-rate-end over N environment "
        "steps (decreasing step sizes, Robbins & Monro, 1951): big steps while the Q-values are far off, small "
        "ones to settle the policy once it lands; 0 = constant",
        nonnegative_int,
        group=BEYOND,
    )
    learning_rate_end: float = setting(
        1e-4, "the learning rate at the end of --lr-decay-steps", positive_float, group=BEYOND
    )
    prioritized_replay: bool = setting(
        False,
        "proportional prioritized replay (Schaul et al., 2016): replay transitions with large TD error "
        "more often, corrected by importance weights",
        action="store_true",
        group=BEYOND,
    )
    priority_alpha: float = setting(
        0.6, "prioritized replay: priority = |TD error| ** alpha (0 = uniform)", float, group=BEYOND
    )
    priority_beta: float = setting(
        0.4, "prioritized replay: importance-weight exponent at the start, annealed to 1", float, group=BEYOND
    )
    eval_every: int = setting(
        0,
        "evaluation during training: every N episodes, --eval-episodes greedy episodes on unseen seeds; "
        "the mean goes into metrics.csv and the plot, the best weights to runs/<run>/best.pth; 0 = off",
        nonnegative_int,
        group=BEYOND,
    )
    eval_episodes: int = setting(10, "greedy episodes per evaluation of --eval-every", positive_int, group=BEYOND)
    eval_target: float | None = setting(
        None,
        "a stopping rule on the greedy policy, not the training average: solved (--checkpoint written; stops unless "
        "--keep-training) once an evaluation of --eval-every scores this mean with --eval-landed of it landed",
        finite_float,
        metavar="SCORE",
        group=BEYOND,
    )
    eval_landed: float = setting(
        0.95,
        "with --eval-target: the least share of an evaluation's episodes that must land",
        unit_interval,
        group=BEYOND,
    )
    eval_from_average: float | None = setting(
        None,
        "evaluate only once the training average of the last 100 episodes reaches this: an evaluation costs "
        "about as much as 20 training episodes, and one made earlier seldom passes --eval-target",
        finite_float,
        metavar="SCORE",
        group=BEYOND,
    )


PRESETS: dict[str, dict[str, Any]] = {  # named sets of settings; explicit flags override them
    # fast: trial 19 of the study of docs/tuning.md (its rate and epsilon floor rounded), on agent.Agent
    "fast": {
        "double_dqn": True,
        "n_step": 3,
        "grad_clip": 10.0,
        "learning_rate": 1.5e-3,
        "minibatch_size": 64,
        "hidden_size": 128,  # learning every 4 steps, as the original: 128 wide costs little more than 64
        "discount_factor": 0.995,
        "interpolation_parameter": 5e-3,
        "epsilon_decay_steps": 14_000,
        "epsilon_end": 0.03,  # a floor of exploration: hovering agents still try landing
        "eval_every": 20,  # the stopping rule: 100 greedy episodes on unseen seeds every 20 episodes;
        "eval_episodes": 100,  # fewer let a policy that lands 91% of the time pass on a lucky sample
        "eval_target": 260.0,  # solved once their mean reaches 260 with at least 98 of the 100 at rest,
        "eval_landed": 0.98,
        "eval_from_average": 200.0,  # checked once the training average reaches the original's 200: no
    },  # evaluation of the study passed before it, and each costs about 20 training episodes
}


def apply_preset(cfg: Any, name: str) -> Any:
    """``cfg`` (a ``main.Config``) with the fields of preset ``name``."""
    return _apply(cfg, PRESETS[name])
