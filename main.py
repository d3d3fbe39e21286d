"""Train a Deep Q-Network to land Gymnasium's LunarLander.

Run ``python main.py`` to train with the original hyperparameters, ``python main.py --help``
for every option. The hyperparameters live in :class:`Config`; the episode loop is :func:`train`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# One BLAS thread: the matrices are tiny, and extra threads only contend with the environment.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from dqnkit import cli  # noqa: E402
from dqnkit.cli import (  # noqa: E402
    BEYOND,
    ORIGINAL,
    RUN,
    nonnegative_int,
    open_unit_interval,
    option,
    positive_float,
    positive_int,
    unit_interval,
)
from dqnkit.envs import SOLVED_SCORE, episode_outcome, make_env  # noqa: E402
from dqnkit.errors import UserError  # noqa: E402
from dqnkit.evaluation import evaluate  # noqa: E402
from dqnkit.files import (  # noqa: E402
    RUNS_DIR,
    STATE_FILE,
    check_writable,
    load_training_state,
    new_run_dir,
    run_name,
    save_torch,
    save_training_state,
    write_text,
)
from dqnkit.logs import Progress, TensorBoard, plot_learning_curve, read_metrics, solved_at, write_metrics  # noqa: E402
from dqnkit.videos import (  # noqa: E402
    VIDEO_DIR,
    BackgroundVideos,
    show_video,
    show_videos,
    video_path,
)

# What `import main` offers: the script's own names, and the package's that the README's notebook
# lines (`main.show_video(50)`, `main.plot_learning_curve(...)`) and benchmarks/ use through main.
__all__ = [
    "PRESETS",
    "Config",
    "build_agent",
    "linear_epsilon",
    "main",
    "next_epsilon",
    "play_episode",
    "seed_everything",
    "train",
    "show_video",
    "show_videos",
    "plot_learning_curve",
    "SOLVED_SCORE",
    "apply_preset",
    "episode_outcome",
    "evaluate",
    "make_env",
    "read_metrics",
    "save_torch",
    "solved_at",
]

if TYPE_CHECKING:  # torch is imported where it is used, so --help and bad flags answer at once
    import torch


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
    keep_training: bool = option(
        False, "go on training after the target score is reached", action="store_true", group=RUN
    )
    checkpoint: str = option(
        "checkpoint.pth", "where the trained network's weights are saved", metavar="PATH", group=RUN
    )
    video: bool = option(True, "record no videos", flag="--no-video", action="store_false", group=RUN)
    video_every: int = option(50, "record a greedy episode every this many episodes", positive_int, group=RUN)
    log_every: int = option(100, "print a progress line every this many episodes", positive_int, group=RUN)
    save_every: int = option(50, "save the resumable training state every this many episodes", positive_int, group=RUN)
    quiet: bool = option(False, "no progress bar and no progress lines", action="store_true", group=RUN)
    tensorboard: bool = option(
        False, "also log the metrics for TensorBoard (needs the tensorboard package)", action="store_true", group=RUN
    )
    device: str = option("auto", "where the networks run", choices=("auto", "cpu", "cuda"), group=RUN)
    backprop: str = option(
        "numpy",
        "how the loss gradient is computed on the CPU: numpy (hand-derived, ~3x faster) or autograd",
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


# Named sets of options; explicit flags override them. "fast" lands in the fewest episodes we measured.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {
        "double_dqn": True,
        "dueling": True,
        "n_step": 5,
        "grad_clip": 10.0,
        "learning_rate": 1e-3,
        "minibatch_size": 128,
        "hidden_size": 128,
        "learn_every": 1,
        "interpolation_parameter": 5e-3,
        "epsilon_decay_steps": 5_000,
        "epsilon_end": 0.03,  # a floor of exploration: hovering agents still try landing
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


def resolve_device(name: str) -> torch.device:
    """Pick the device once: ``auto`` means CUDA when available, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but PyTorch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


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
) -> tuple[float, int, float]:
    """Play and learn from one training episode; return its score, its length and the last epsilon.

    ``on_step`` (if given) is called with the total step count after every step.
    """
    state, _ = env.reset(seed=reset_seed)
    score, length = 0.0, 0
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
    return score, length, epsilon


# ---------------------------------------------------------------- atomic files


# ---------------------------------------------------------------- videos


# ---------------------------------------------------------------- checkpoints

# ---------------------------------------------------------------- progress, plots, TensorBoard


# ---------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What a training run produced."""

    scores: list[float]
    solved_episode: int | None
    total_steps: int
    seconds: float
    run_dir: Path
    checkpoint: Path
    state_path: Path
    stopped_by: int | None = None  # the signal that ended the run early, if one did


def build_agent(cfg: Config, env, device: torch.device, rng: np.random.Generator):
    """The :class:`agent.Agent` that ``cfg`` describes, sized for ``env``."""
    from agent import Agent

    return Agent(
        env.observation_space.shape[0],
        int(env.action_space.n),
        learning_rate=cfg.learning_rate,
        minibatch_size=cfg.minibatch_size,
        discount_factor=cfg.discount_factor,
        replay_buffer_size=cfg.replay_buffer_size,
        interpolation_parameter=cfg.interpolation_parameter,
        learn_every=cfg.learn_every,
        gradient_steps=cfg.gradient_steps,
        hidden_size=cfg.hidden_size,
        device=device,
        rng=rng,
        backprop=cfg.backprop,
        double_dqn=cfg.double_dqn,
        dueling=cfg.dueling,
        n_step=cfg.n_step,
        loss=cfg.loss,
        grad_clip=cfg.grad_clip,
        target_update_every=cfg.target_update_every,
        prioritized_replay=cfg.prioritized_replay,
        priority_alpha=cfg.priority_alpha,
        priority_beta=cfg.priority_beta,
        learning_rate_end=cfg.learning_rate_end,
        lr_decay_steps=cfg.lr_decay_steps,
    )


class _StopRequests:
    """Turn the first SIGINT/SIGTERM into a request to stop after the current episode.

    The episode is finished (well under a second) so that the saved state sits on an
    episode boundary and a resumed run is exactly the uninterrupted one. A second
    signal stops at once; the last periodic state on disk is still complete.
    """

    def __init__(self, out: Callable[[str], None]) -> None:
        self.signal: int | None = None
        self._out = out
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopRequests:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        self._out("stopping after this episode to save the training state (press Ctrl-C again to stop at once)")

    def __exit__(self, *exc: Any) -> None:
        import signal

        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def train(
    cfg: Config, out: Callable[[str], None] | None = None, resume: str | os.PathLike | None = None
) -> TrainResult:
    """Run the episode loop of the original DQN; with ``resume``, continue a saved run exactly.

    Messages and progress go to ``out`` when given, else to the terminal (a live bar
    when stdout is one, plain lines when it is a file or a pipe).
    """
    import torch

    start = time.time()
    device = resolve_device(cfg.device)
    # Tiny networks gain nothing from intra-op threads and lose to their start-up cost.
    torch.set_num_threads(1)
    saved = load_training_state(resume, Config) if resume is not None else None
    checkpoint = Path(cfg.checkpoint)
    # Check every output folder before creating any, and before minutes of training.
    if cfg.video:
        check_writable(VIDEO_DIR, "videos")
    check_writable(checkpoint.parent, "the checkpoint")
    if resume is not None:
        run_dir = Path(resume).parent
        check_writable(run_dir, "the run's files")
    else:
        run_dir = new_run_dir(RUNS_DIR, run_name(cfg, start))
    video_dir = VIDEO_DIR / run_dir.name

    env = make_env(cfg.env, cfg.max_steps)
    rng = seed_everything(cfg.seed)
    env.action_space.seed(cfg.seed)
    agent = build_agent(cfg, env, device, rng)
    progress: dict[str, Any] = {
        "episode": 0,
        "total_steps": 0,
        "epsilon": cfg.epsilon_start,
        "solved_episode": None,
        "seconds": 0.0,
        "rows": [],
    }
    if saved is not None:
        agent.load_state_dict(saved["agent"])
        progress = saved["progress"]
        random.setstate(saved["rng"]["python"])
        torch.set_rng_state(saved["rng"]["torch"])
        env.unwrapped.np_random.bit_generator.state = saved["rng"]["env"]
        env.action_space.np_random.bit_generator.state = saved["rng"]["action_space"]
    rows: list[dict[str, Any]] = progress["rows"]
    scores = [float(r["score"]) for r in rows]
    window: deque[float] = deque(scores[-100:], maxlen=100)
    epsilon: float = progress["epsilon"]
    total_steps: int = progress["total_steps"]
    solved_episode: int | None = progress["solved_episode"]
    first_episode = progress["episode"] + 1
    state_path = run_dir / STATE_FILE
    metrics_path = run_dir / "metrics.csv"
    write_text(run_dir / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    bar = Progress(cfg.episodes, first_episode - 1, cfg.log_every, cfg.quiet, out)
    out = bar.write
    tensorboard = TensorBoard(run_dir / "tensorboard") if cfg.tensorboard else None
    videos = BackgroundVideos(out) if cfg.video else None
    verb = f"resuming at episode {first_episode}" if saved is not None else "run"
    out(f"{verb} {run_dir.name} on {device}; metrics: {metrics_path}; training state: {state_path}")
    if not cfg.quiet:
        out("hyperparameters: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items()))

    def snapshot(episode: int) -> None:
        progress.update(episode=episode, total_steps=total_steps, epsilon=epsilon, solved_episode=solved_episode)
        progress["seconds"] = seconds_before + time.perf_counter() - loop_start
        save_training_state(state_path, agent, env, cfg, progress)

    seconds_before: float = progress["seconds"]
    loop_start = time.perf_counter()
    episode = first_episode - 1
    # Overflow shows up as a non-finite loss, which Agent.learn reports; NumPy need not warn first.
    with _StopRequests(out) as stop, np.errstate(over="ignore", invalid="ignore"):
        try:
            if solved_episode is not None and not cfg.keep_training:
                out(f"this run was solved at episode {solved_episode}; add --keep-training to go on")
            for episode in range(first_episode, cfg.episodes + 1):
                if solved_episode is not None and not cfg.keep_training:
                    episode -= 1
                    break
                # Seed the environment once; later resets continue its random stream.
                reset_seed = cfg.seed if episode == 1 else None
                score, length, epsilon = play_episode(env, agent, cfg, epsilon, total_steps, reset_seed)
                total_steps += length
                scores.append(score)
                window.append(score)
                average = float(np.mean(window))
                elapsed = seconds_before + time.perf_counter() - loop_start
                rows.append(
                    {
                        "episode": episode,
                        "total_steps": total_steps,
                        "score": score,  # full precision: a resumed run rebuilds its window from these
                        "length": length,
                        "epsilon": epsilon,
                        "average_100": average,
                        "wall_seconds": round(elapsed, 3),
                    }
                )
                if not cfg.epsilon_decay_steps:
                    epsilon = next_epsilon(epsilon, cfg.epsilon_end, cfg.epsilon_decay)

                if videos is not None and episode % cfg.video_every == 0:
                    path = video_path(episode, video_dir)
                    videos.submit(episode, agent.local_qnetwork, cfg.env, cfg.max_steps, path, seed=cfg.seed + episode)
                bar.update(episode, average, epsilon, total_steps, total_steps / max(elapsed, 1e-9))
                if tensorboard is not None:
                    tensorboard.log(rows[-1], agent.last_loss)
                if episode % cfg.log_every == 0:
                    write_metrics(metrics_path, rows)
                if solved_episode is None and len(window) == window.maxlen and average >= cfg.target_score:
                    solved_episode = episode
                    save_torch(agent.local_qnetwork.state_dict(), checkpoint)
                    out(
                        f"solved: 100-episode average {average:.2f} >= {cfg.target_score:g} at episode {episode} "
                        f"({total_steps} steps, {elapsed:.1f} s); weights saved to {checkpoint}"
                    )
                    if not cfg.keep_training:
                        break
                if stop.signal is not None:
                    break
                if episode % cfg.save_every == 0:
                    snapshot(episode)
        except FloatingPointError as exc:
            save_torch(agent.local_qnetwork.state_dict(), checkpoint)
            last = f"; the last saved training state is {state_path}" if state_path.exists() else ""
            raise UserError(
                f"training stopped in episode {episode}: {exc}; try a smaller --learning-rate. "
                f"The last good weights are in {checkpoint}{last}"
            ) from None
        finally:
            env.close()
            failure = sys.exc_info()[1]
            if videos is not None and failure is not None:  # after a second Ctrl-C, don't wait for them
                videos.close(wait=not isinstance(failure, KeyboardInterrupt))
            bar.close()
            if tensorboard is not None:
                tensorboard.close()
            write_metrics(metrics_path, rows)
        snapshot(episode)
    if rows:
        out(f"learning curve: {plot_learning_curve(metrics_path, target_score=cfg.target_score)}")
    save_torch(agent.local_qnetwork.state_dict(), checkpoint)
    if videos is not None:  # last: everything else is saved, so a Ctrl-C now loses only these videos
        videos.close()
    seconds = seconds_before + time.perf_counter() - loop_start
    if stop.signal is not None:
        out(f"stopped at episode {episode}; continue with: python main.py --resume {state_path}")
    elif solved_episode is None:
        out(f"not solved in {len(scores)} episodes; last weights saved to {checkpoint}")
    return TrainResult(scores, solved_episode, total_steps, seconds, run_dir, checkpoint, state_path, stop.signal)


# ---------------------------------------------------------------- evaluation


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    cfg, actions, given = cli.parse_command_line(argv, Config, PRESETS)
    try:
        if actions["plot"] is not None:
            print(f"learning curve: {plot_learning_curve(actions['plot'], target_score=cfg.target_score)}")
            return 0
        if actions["evaluate"] is not None:
            episodes = cfg.episodes if "episodes" in given else 100
            evaluate(
                actions["evaluate"],
                episodes,
                cfg.seed,
                actions["eval_video"],
                cfg.env if "env" in given else None,
                cfg.max_steps,
            )
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
    sys.exit(main())
