"""Train a Deep Q-Network to land Gymnasium's LunarLander.

Run ``python main.py`` to train with the original hyperparameters, ``python main.py --help``
for every option. The hyperparameters live in :class:`Config`; the episode loop is :func:`train`.
Everything around the loop (files, videos, logs, the command line) lives in the ``dqnkit`` package.
"""

from __future__ import annotations

import os
import random
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# One BLAS thread: the matrices are tiny, and extra threads only contend with the environment.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from dqnkit import cli  # noqa: E402
from dqnkit.cli import (  # noqa: E402
    BEYOND,
    ORIGINAL,
    RUN,
    finite_float,
    nonnegative_int,
    open_unit_interval,
    option,
    positive_float,
    positive_int,
    unit_interval,
)
from dqnkit.envs import SOLVED_SCORE, make_env  # noqa: E402
from dqnkit.errors import UserError  # noqa: E402
from dqnkit.evaluation import evaluate  # noqa: E402
from dqnkit.files import load_training_state  # noqa: E402
from dqnkit.hooks import Episode, Hook, Hooks  # noqa: E402
from dqnkit.logs import plot_learning_curve  # noqa: E402
from dqnkit.runfolder import RunFolder, TrainResult, resolve_device  # noqa: E402
from dqnkit.session import run_hooks  # noqa: E402
from dqnkit.stages import show_progress as show_progress  # noqa: E402
from dqnkit.stages import write_progress  # noqa: E402

if TYPE_CHECKING:  # torch is imported where it is used, so --help and bad flags answer at once
    import torch

# Re-exported ("x as x"): a notebook calls main.show_video(50).
from dqnkit.videos import show_video as show_video  # noqa: E402
from dqnkit.videos import show_videos as show_videos  # noqa: E402


@dataclass
class Config:
    """Every setting of a training run; the defaults are the original DQN's."""

    env: str = option(
        "LunarLander-v3",
        "Gymnasium environment id (LunarLander-v2 was removed in Gymnasium 1.0)",
        metavar="ID",
        group=RUN,
    )
    episodes: int = option(2000, "most training episodes", positive_int, group=ORIGINAL)
    max_steps: int = option(
        1000, "most steps per episode; reaching it truncates the episode", positive_int, group=ORIGINAL
    )
    epsilon_start: float = option(1.0, "exploration rate at the first episode", unit_interval, group=ORIGINAL)
    epsilon_end: float = option(0.01, "lowest exploration rate", unit_interval, group=ORIGINAL)
    epsilon_decay: float = option(
        0.995, "epsilon is multiplied by this after every episode", open_unit_interval, group=ORIGINAL
    )
    learning_rate: float = option(5e-4, "Adam learning rate", positive_float, group=ORIGINAL)
    minibatch_size: int = option(100, "experiences per learning step", positive_int, group=ORIGINAL)
    discount_factor: float = option(0.99, "gamma: weight of future rewards", unit_interval, group=ORIGINAL)
    replay_buffer_size: int = option(100_000, "replay memory capacity", positive_int, group=ORIGINAL)
    interpolation_parameter: float = option(1e-3, "tau of the soft target update", open_unit_interval, group=ORIGINAL)
    learn_every: int = option(4, "learn once every this many environment steps", positive_int, group=ORIGINAL)
    hidden_size: int = option(64, "units in each hidden layer", positive_int, group=ORIGINAL)
    seed: int = option(0, "seed for Python, NumPy, PyTorch and the environment", nonnegative_int, group=RUN)
    target_score: float = option(SOLVED_SCORE, "100-episode average that counts as solved", float, group=RUN)
    keep_training: bool = option(False, "go on after reaching the target score", action="store_true", group=RUN)
    checkpoint: str = option(
        "checkpoint.pth", "the weights of a run that solves (every run: runs/<run>/last.pth)", metavar="PATH", group=RUN
    )
    video: bool = option(True, "record no videos", flag="--no-video", action="store_false", group=RUN)
    video_every: int = option(50, "record a greedy episode every this many episodes", positive_int, group=RUN)
    log_every: int = option(100, "print a progress line every this many episodes", positive_int, group=RUN)
    save_every: int = option(50, "save the resumable training state every this many episodes", positive_int, group=RUN)
    quiet: bool = option(False, "no progress bar and no progress lines", action="store_true", group=RUN)
    tensorboard: bool = option(
        False, "also log the metrics for TensorBoard (needs the tensorboard package)", action="store_true", group=RUN
    )
    device: str = option(
        "cpu", "auto = cuda when available; the CPU is fastest at this size", choices=("cpu", "cuda", "auto"), group=RUN
    )
    backprop: str = option(
        "autograd",
        "how the loss gradient is computed: autograd (loss.backward() and torch.optim.Adam, the code agent.py "
        "shows) or numpy (the opt-in twin in dqnkit/numpy_twin.py: the same numbers to float32 rounding, "
        "faster on a CPU; see the README)",
        choices=("numpy", "autograd"),
        group=RUN,
    )
    # Beyond the original DQN: each is off by default; the NumPy and autograd paths both compute each one.
    double_dqn: bool = option(
        False,
        "Double DQN (van Hasselt et al., 2016): the local network picks the next action, the target network "
        "values it; removes the overestimation of max over noisy Q-values",
        action="store_true",
        group=BEYOND,
    )
    dueling: bool = option(
        False,
        "dueling head (Wang et al., 2016): Q = V(s) + A(s, a) - mean A(s, .); the state value is learnt from "
        "every sample, whatever the action",
        action="store_true",
        group=BEYOND,
    )
    n_step: int = option(
        1,
        "n-step returns (Sutton, 1988; Hessel et al., 2018 Rainbow): bootstrap after N rewards; rewards "
        "such as the landing bonus reach earlier states N times faster",
        positive_int,
        group=BEYOND,
    )
    loss: str = option(
        "mse",
        "loss on the TD error: mse, or huber (smooth L1, delta 1; Mnih et al., 2015), linear for big "
        "errors so a crash's -100 cannot give a huge gradient",
        choices=("mse", "huber"),
        group=BEYOND,
    )
    grad_clip: float = option(
        0.0,
        "rescale the gradient to at most this L2 norm, a guard against rare huge updates; 0 = off",
        float,
        group=BEYOND,
    )
    target_update_every: int = option(
        0,
        "copy the local network into the target every N learning steps (Mnih et al., 2015) instead of the "
        "soft update; 0 = soft update with --interpolation-parameter",
        nonnegative_int,
        group=BEYOND,
    )
    gradient_steps: int = option(
        1,
        "learning steps each time the agent learns, each on its own minibatch: a higher replay ratio "
        "(Fedus et al., 2020), more learning from every environment step",
        positive_int,
        group=BEYOND,
    )
    epsilon_decay_steps: int = option(
        0,
        "decay epsilon linearly from --epsilon-start to --epsilon-end over N environment steps (Mnih et al., "
        "2015) instead of per episode: exploration ends on time however long the episodes are; 0 = per episode",
        nonnegative_int,
        group=BEYOND,
    )
    lr_decay_steps: int = option(
        0,
        "decay the learning rate linearly from --learning-rate to --learning-rate-end over N environment "
        "steps (decreasing step sizes, Robbins & Monro, 1951): big steps while the Q-values are far off, small "
        "ones to settle the policy once it lands; 0 = constant",
        nonnegative_int,
        group=BEYOND,
    )
    learning_rate_end: float = option(
        1e-4, "the learning rate at the end of --lr-decay-steps", positive_float, group=BEYOND
    )
    prioritized_replay: bool = option(
        False,
        "proportional prioritized replay (Schaul et al., 2016): replay transitions with large TD error "
        "more often, corrected by importance weights",
        action="store_true",
        group=BEYOND,
    )
    priority_alpha: float = option(
        0.6, "prioritized replay: priority = |TD error| ** alpha (0 = uniform)", float, group=BEYOND
    )
    priority_beta: float = option(
        0.4, "prioritized replay: importance-weight exponent at the start, annealed to 1", float, group=BEYOND
    )
    eval_every: int = option(
        0,
        "evaluation during training: every N episodes, --eval-episodes greedy episodes on unseen seeds; "
        "the mean goes into metrics.csv and the plot, the best weights to runs/<run>/best.pth; 0 = off",
        nonnegative_int,
        group=BEYOND,
    )
    eval_episodes: int = option(10, "greedy episodes per evaluation of --eval-every", positive_int, group=BEYOND)
    eval_target: float | None = option(
        None,
        "a stopping rule on the greedy policy, not the training average: solved (--checkpoint written; stops unless "
        "--keep-training) once an evaluation of --eval-every scores this mean with --eval-landed of it landed",
        finite_float,
        metavar="SCORE",
        group=BEYOND,
    )
    eval_landed: float = option(
        0.95,
        "with --eval-target: the least share of an evaluation's episodes that must land",
        unit_interval,
        group=BEYOND,
    )


PRESETS: dict[str, dict[str, Any]] = {  # named sets of options; explicit flags override them
    "fast": {  # lands fast and sure: the saved agent is one whose greedy evaluation passed (docs/tuning.md)
        "double_dqn": True,
        "dueling": True,
        "n_step": 5,
        "grad_clip": 10.0,
        "learning_rate": 1e-3,
        "lr_decay_steps": 250_000,  # then 5e-5: big steps while the values are far off, small ones to settle
        "learning_rate_end": 5e-5,
        "minibatch_size": 128,
        "hidden_size": 128,
        "learn_every": 1,
        "interpolation_parameter": 5e-3,
        "epsilon_decay_steps": 5_000,
        "epsilon_end": 0.03,  # a floor of exploration: hovering agents still try landing
        "eval_every": 20,  # the stopping rule: 100 greedy episodes on unseen seeds every 20 episodes;
        "eval_episodes": 100,  # fewer let a policy that lands 91% of the time pass on a lucky sample
        "eval_target": 260.0,  # solved once their mean reaches 260 with at least 98 of the 100 at rest
        "eval_landed": 0.98,
        "backprop": "numpy",  # 128 wide, learning every step: the twin's per-step cost pays (docs/speed.md)
    },
}


def apply_preset(cfg: Config, name: str) -> Config:
    """``cfg`` with the fields of preset ``name`` (for benchmarks/)."""
    return cli.apply_preset(cfg, PRESETS[name])


def parse_config(argv: list[str] | None = None) -> Config:
    """Parse the command line into a validated :class:`Config`; bad input exits with one line."""
    return cli.parse_command_line(argv, Config, PRESETS)[0]


# ---------------------------------------------------------------- setup


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and PyTorch; return the generator the agent draws from.

    The environment is seeded separately through its own API (``env.reset(seed=...)``).
    """
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def next_epsilon(epsilon: float, epsilon_end: float, epsilon_decay: float) -> float:
    """Multiplicative decay per episode, floored at ``epsilon_end``."""
    return max(epsilon_end, epsilon_decay * epsilon)


def linear_epsilon(step: int, epsilon_start: float, epsilon_end: float, decay_steps: int) -> float:
    """Epsilon after ``step`` environment steps: a straight line from start to end over ``decay_steps``, then flat."""
    return epsilon_start + (epsilon_end - epsilon_start) * min(1.0, step / decay_steps)


def play_episode(
    env,
    agent,
    cfg: Config,
    epsilon: float,
    steps_before: int,
    reset_seed: int | None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[float, int, bool, bool, float]:
    """Play and learn from one training episode.

    Returns its score, its length, whether it terminated or was cut off by the time limit
    (as ``env.step`` said at its last step), and the last epsilon. ``on_step`` (if given) is
    called with the total step count after every step.
    """
    state, _ = env.reset(seed=reset_seed)
    score, length, terminated, truncated = 0.0, 0, False, False
    for _ in range(cfg.max_steps):
        if cfg.epsilon_decay_steps:  # linear in environment steps, instead of per episode
            epsilon = linear_epsilon(steps_before + length, cfg.epsilon_start, cfg.epsilon_end, cfg.epsilon_decay_steps)
        action = agent.act(state, epsilon)
        next_state, reward, terminated, truncated, _ = env.step(action)
        # Store *terminated*, not truncated: a time-limit cut-off still has a future.
        agent.step(state, action, reward, next_state, terminated)
        state = next_state
        score += float(reward)
        length += 1
        if on_step is not None:
            on_step(steps_before + length)
        if terminated or truncated:
            break
    agent.end_episode()  # n-step returns never reach across episodes
    return score, length, terminated, truncated, epsilon


# ---------------------------------------------------------------- training


def build_agent(cfg: Config, env, device: torch.device, rng: np.random.Generator):
    """The agent that ``cfg`` describes (see :func:`dqnkit.agents.build_agent`)."""
    from dqnkit.agents import build_agent as build

    return build(cfg, env, device, rng)


def train(
    cfg: Config,
    out: Callable[[str], None] | None = None,
    resume: str | os.PathLike | None = None,
    hooks: Sequence[Hook] = (),
) -> TrainResult:
    """Run the episode loop of the original DQN; with ``resume``, continue a saved run exactly.

    Each finished episode goes to the run's hooks (metrics, progress, videos, evaluation, the
    solved checkpoint, the training state, Ctrl-C: ``dqnkit/session.py``), then to ``hooks``;
    any of them may stop the run. Messages go to ``out`` when given, else to the terminal.
    """
    import torch

    device = resolve_device(cfg.device)
    torch.set_num_threads(1)  # tiny networks gain nothing from intra-op threads and lose to their start-up cost
    run = RunFolder(cfg, out, resume)  # checks every output folder, creates none yet
    env = make_env(cfg.env, cfg.max_steps)
    rng = seed_everything(cfg.seed)
    env.action_space.seed(cfg.seed)
    agent = build_agent(cfg, env, device, rng)
    progress = run.open(agent, env, device)  # locked; a resumed run gets its agent, random states and progress back
    epsilon, total_steps = progress["epsilon"], progress["total_steps"]
    scores_window = deque((float(row["score"]) for row in progress["rows"][-100:]), maxlen=100)
    with run, env, Hooks([*run_hooks(cfg, run, agent, env), *hooks], agent) as every:
        for episode in run.episodes():
            # Seed the environment once; later resets continue its random stream.
            reset_seed = cfg.seed if episode == 1 else None
            score, length, terminated, truncated, epsilon = play_episode(
                env, agent, cfg, epsilon, total_steps, reset_seed, every.on_step
            )
            total_steps += length
            scores_window.append(score)
            average = float(np.mean(scores_window))  # the original's measure: solved at 200
            # Decay per episode, as in the original, unless play_episode decays it step by step.
            decayed = epsilon if cfg.epsilon_decay_steps else next_epsilon(epsilon, cfg.epsilon_end, cfg.epsilon_decay)
            record = Episode(episode, score, length, terminated, truncated, epsilon, decayed, total_steps, average)
            every.on_episode(record)
            epsilon = decayed
            if every.stop:  # solved (unless --keep-training), Ctrl-C, or a caller's hook
                break
    return run.result()  # the hooks have saved the state, the last weights, the learning curve and the videos


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    cfg, actions, given = cli.parse_command_line(argv, Config, PRESETS)
    try:
        if actions["plot"] is not None:
            print(f"learning curve: {plot_learning_curve(actions['plot'], target_score=cfg.target_score)}")
            return 0
        if actions["progress"] is not None:
            markdown, page = write_progress(actions["progress"])
            print(f"progress table: {markdown} and {page}")
            return 0
        if actions["evaluate"] is not None:
            episodes = cfg.episodes if "episodes" in given else 100
            env_id = cfg.env if "env" in given else None
            evaluate(actions["evaluate"], episodes, cfg.seed, actions["eval_video"], env_id, cfg.max_steps)
            return 0
        resume = actions["resume"]
        if resume is not None:
            saved = Config(**load_training_state(resume, Config)["config"])
            cfg = cli.resumed_config(cfg, given, saved, resume)
        result = train(cfg, resume=resume)
    except UserError as exc:
        print(f"main.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("main.py: interrupted; the last saved training state is still complete", file=sys.stderr)
        return 130
    if result.stopped_by is not None:
        return 128 + result.stopped_by
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_script(main))  # as main(), and `python main.py ... | head` ends quietly
