"""Train a Deep Q-Network to land Gymnasium's LunarLander.

Run ``python main.py`` to train with the original hyperparameters, ``python main.py --help``
for every option. The original hyperparameters live in :class:`Hyperparameters`; the episode loop
is :func:`train`.
Everything around the loop (files, videos, logs, the command line) lives in the ``dqnkit`` package.
"""

from __future__ import annotations

import os
import random
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

# One BLAS thread: the matrices are tiny, and extra threads only contend with the environment.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from dqnkit import cli  # noqa: E402
from dqnkit.cli import ORIGINAL, open_unit_interval, positive_float, positive_int, setting, unit_interval  # noqa: E402
from dqnkit.envs import make_env  # noqa: E402
from dqnkit.errors import UserError, run_script  # noqa: E402
from dqnkit.report.evaluation import evaluate  # noqa: E402
from dqnkit.report.logs import plot_learning_curve  # noqa: E402
from dqnkit.report.progress import show_progress as show_progress  # noqa: E402
from dqnkit.report.progress import write_progress  # noqa: E402
from dqnkit.run.batch import seed_configs, train_seeds  # noqa: E402
from dqnkit.run.files import load_training_state  # noqa: E402
from dqnkit.run.folder import RunFolder, TrainResult, resolve_device  # noqa: E402
from dqnkit.run.hooks import Episode, Hook, Hooks  # noqa: E402
from dqnkit.run.session import run_hooks  # noqa: E402
from dqnkit.saved_config import resumed_config  # noqa: E402
from dqnkit.settings import PRESETS, BeyondOptions, RunSettings  # noqa: E402

if TYPE_CHECKING:  # torch is imported where it is used, so --help and bad flags answer at once
    import torch

# Re-exported ("x as x"): a notebook calls main.show_video(50).
from dqnkit.report.videos import show_video as show_video  # noqa: E402
from dqnkit.report.videos import show_videos as show_videos  # noqa: E402


@dataclass
class Hyperparameters:
    """The original DQN's hyperparameters: these defaults are the original's."""

    episodes: int = setting(2000, "most training episodes", positive_int, group=ORIGINAL)
    max_steps: int = setting(
        1000, "most steps per episode; reaching it truncates the episode", positive_int, group=ORIGINAL
    )
    epsilon_start: float = setting(1.0, "exploration rate at the first episode", unit_interval, group=ORIGINAL)
    epsilon_end: float = setting(0.01, "lowest exploration rate", unit_interval, group=ORIGINAL)
    epsilon_decay: float = setting(
        0.995, "epsilon is multiplied by this after every episode", open_unit_interval, group=ORIGINAL
    )
    learning_rate: float = setting(5e-4, "Adam learning rate", positive_float, group=ORIGINAL)
    minibatch_size: int = setting(100, "experiences per learning step", positive_int, group=ORIGINAL)
    discount_factor: float = setting(0.99, "gamma: weight of future rewards", unit_interval, group=ORIGINAL)
    replay_buffer_size: int = setting(100_000, "replay memory capacity", positive_int, group=ORIGINAL)
    interpolation_parameter: float = setting(1e-3, "tau of the soft target update", open_unit_interval, group=ORIGINAL)
    learn_every: int = setting(4, "learn once every this many environment steps", positive_int, group=ORIGINAL)
    hidden_size: int = setting(64, "units in each hidden layer", positive_int, group=ORIGINAL)


@dataclass  # a dataclass takes its bases' fields from the last base to the first: the hyperparameters first
class Config(BeyondOptions, RunSettings, Hyperparameters):
    """Every setting of a training run: the hyperparameters above first, then where the run goes
    (:class:`dqnkit.settings.RunSettings`) and the options beyond the original DQN
    (:class:`dqnkit.settings.BeyondOptions`), each off by default. Each field is a ``--flag``.
    """


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
    """The agent that ``cfg`` describes (see :func:`dqnkit.learn.build_agent`)."""
    from dqnkit.learn import build_agent as build

    return build(cfg, env, device, rng)


def train(
    cfg: Config,
    out: Callable[[str], None] | None = None,
    resume: str | os.PathLike | None = None,
    hooks: Sequence[Hook] = (),
    root: str | os.PathLike | None = None,
) -> TrainResult:
    """Run the episode loop of the original DQN; with ``resume``, continue a saved run exactly.

    Each finished episode goes to the run's hooks (metrics, progress table, videos, evaluation, the
    solved checkpoint, the training state, Ctrl-C: ``dqnkit/run/session.py``), then to ``hooks``;
    any of them may stop the run. Messages go to ``out`` when given, else to the terminal.
    ``runs/``, ``videos/`` and a relative ``--checkpoint`` go under ``root``, by default the working folder.
    """
    import torch

    device = resolve_device(cfg.device)
    torch.set_num_threads(1)  # tiny networks gain nothing from intra-op threads and lose to their start-up cost
    run = RunFolder(cfg, out, resume, root)  # checks every output folder, creates none yet
    env = make_env(cfg.env, cfg.max_steps)
    rng = seed_everything(cfg.seed)
    env.action_space.seed(cfg.seed)
    agent = build_agent(cfg, env, device, rng)
    history = run.open(agent, env, device)  # locked; a resumed run gets its agent, random states and history back
    epsilon, total_steps = history.epsilon, history.total_steps
    scores_window = deque((float(row["score"]) for row in history.rows[-100:]), maxlen=100)
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
    return run.result(every.stop)  # the hooks have saved the state, the last weights, the curve and the videos


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
        resumes = actions["resume"] or []
        cfgs = [resumed_config(cfg, given, Config(**load_training_state(r, Config)["config"]), r) for r in resumes]
        if actions["seeds"] or len(resumes) > 1:  # several runs at once: dqnkit/run/batch.py
            cfgs = cfgs or seed_configs(cfg, actions["seeds"])
            results = train_seeds(train, cfgs, resumes or [None] * len(cfgs))
        else:
            results = [train(cfgs[0] if cfgs else cfg, resume=resumes[0] if resumes else None)]
    except UserError as exc:
        print(f"main.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # a second Ctrl-C; a training run notes what it kept
        print(f"main.py: interrupted{getattr(exc, 'note', '')}", file=sys.stderr)
        return 130
    if stopped := next((r.stopped_by for r in results if r.stopped_by is not None), None):
        return 128 + stopped
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))  # as main(), and `python main.py ... | head` ends quietly
