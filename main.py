"""Train a Deep Q-Network to land Gymnasium's LunarLander.

Run ``python main.py`` to train with the original hyperparameters, ``python main.py --help``
for every option. The hyperparameters live in :class:`Config`; the episode loop is :func:`train`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import random
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# One BLAS thread: the matrices are tiny, and extra threads only contend with the environment.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

SOLVED_SCORE = 200.0  # LunarLander-v3's reward threshold, over a 100-episode average
VIDEO_DIR = Path("videos")
RUNS_DIR = Path("runs")
_UMASK = os.umask(0)
os.umask(_UMASK)


def _positive_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _nonnegative_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text, float, "a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _unit_interval(text: str) -> float:
    value = _number(text, float, "a number")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _open_unit_interval(text: str) -> float:
    value = _number(text, float, "a number")
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be greater than 0 and at most 1, got {text}")
    return value


def _number(text: str, kind: Callable[[str], Any], what: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if isinstance(value, float) and not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _opt(default: Any, help: str, check: Callable[[str], Any] | None = None, **extra: Any) -> Any:
    """A dataclass field carrying its command-line help and validator."""
    return field(default=default, metadata={"help": help, "type": check, **extra})


@dataclass
class Config:
    """Every setting of a training run; the defaults are the original DQN's."""

    env: str = _opt(
        "LunarLander-v3", "Gymnasium environment id (LunarLander-v2 was removed in Gymnasium 1.0)", metavar="ID"
    )
    episodes: int = _opt(2000, "most training episodes", _positive_int)
    max_steps: int = _opt(1000, "most steps per episode; reaching it truncates the episode", _positive_int)
    epsilon_start: float = _opt(1.0, "exploration rate at the first episode", _unit_interval)
    epsilon_end: float = _opt(0.01, "lowest exploration rate", _unit_interval)
    epsilon_decay: float = _opt(0.995, "epsilon is multiplied by this after every episode", _open_unit_interval)
    learning_rate: float = _opt(5e-4, "Adam learning rate", _positive_float)
    minibatch_size: int = _opt(100, "experiences per learning step", _positive_int)
    discount_factor: float = _opt(0.99, "gamma: weight of future rewards", _unit_interval)
    replay_buffer_size: int = _opt(100_000, "replay memory capacity", _positive_int)
    interpolation_parameter: float = _opt(1e-3, "tau of the soft target update", _open_unit_interval)
    learn_every: int = _opt(4, "learn once every this many environment steps", _positive_int)
    hidden_size: int = _opt(64, "units in each hidden layer", _positive_int)
    seed: int = _opt(0, "seed for Python, NumPy, PyTorch and the environment", _nonnegative_int)
    target_score: float = _opt(SOLVED_SCORE, "100-episode average that counts as solved", float)
    keep_training: bool = _opt(False, "go on training after the target score is reached", action="store_true")
    checkpoint: str = _opt("checkpoint.pth", "where the trained network's weights are saved", metavar="PATH")
    video: bool = _opt(True, "record no videos", flag="--no-video", action="store_false")
    video_every: int = _opt(50, "record a greedy episode every this many episodes", _positive_int)
    log_every: int = _opt(100, "print a progress line every this many episodes", _positive_int)
    device: str = _opt("auto", "where the networks run", choices=("auto", "cpu", "cuda"))
    backprop: str = _opt(
        "numpy",
        "how the loss gradient is computed on the CPU: numpy (hand-derived, ~3x faster) or autograd",
        choices=("numpy", "autograd"),
    )


class UserError(Exception):
    """A problem the user can fix; reported as one line, without a traceback."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        if action.nargs == 0:  # on/off switches: "(default: True)" would only confuse
            return action.help or ""
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Turn every :class:`Config` field into a ``--flag``."""
    parser = _Parser(
        prog="main.py",
        description="Train a Deep Q-Network on LunarLander (defaults: the original hyperparameters).",
        formatter_class=_HelpFormatter,
    )
    for f in dataclasses.fields(Config):
        meta = dict(f.metadata)
        flag = meta.pop("flag", "--" + f.name.replace("_", "-"))
        kwargs: dict[str, Any] = {"dest": f.name, "default": f.default, "help": meta.pop("help")}
        check = meta.pop("type")
        if check is not None:
            kwargs["type"] = check
            kwargs["metavar"] = {int: "N", float: "X"}.get(type(f.default), "VALUE")
        kwargs.update(meta)
        parser.add_argument(flag, **kwargs)
    return parser


def parse_config(argv: list[str] | None = None) -> Config:
    """Parse the command line into a validated :class:`Config`; bad input exits with one line."""
    parser = build_parser()
    cfg = Config(**vars(parser.parse_args(argv)))
    problem = config_problem(cfg)
    if problem:
        parser.error(problem)
    return cfg


def config_problem(cfg: Config) -> str | None:
    """Checks that involve more than one field; returns a message or None."""
    if cfg.epsilon_end > cfg.epsilon_start:
        return f"--epsilon-end ({cfg.epsilon_end}) must not exceed --epsilon-start ({cfg.epsilon_start})"
    if cfg.replay_buffer_size < cfg.minibatch_size:
        return (
            f"--replay-buffer-size ({cfg.replay_buffer_size}) must be at least --minibatch-size ({cfg.minibatch_size})"
        )
    if not cfg.checkpoint.strip():
        return "--checkpoint must be a file path"
    return None


# ---------------------------------------------------------------- setup


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and PyTorch; return the generator the agent draws from.

    The environment is seeded separately through its own API (``env.reset(seed=...)``).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def resolve_device(name: str) -> torch.device:
    """Pick the device once: ``auto`` means CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but PyTorch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def make_env(env_id: str, max_steps: int, render_mode: str | None = None):
    """Create the environment, turning Gymnasium's errors about the id into a :class:`UserError`."""
    import gymnasium as gym

    if env_id.startswith("LunarLander-v") and env_id != "LunarLander-v3":
        raise UserError(f"{env_id} is not available: Gymnasium 1.x has only LunarLander-v3; use --env LunarLander-v3")
    try:
        env = gym.make(env_id, max_episode_steps=max_steps, render_mode=render_mode)
    except gym.error.Error as exc:
        raise UserError(f"cannot create environment {env_id!r}: {str(exc).splitlines()[0]}") from None
    if not isinstance(env.action_space, gym.spaces.Discrete) or len(env.observation_space.shape or ()) != 1:
        env.close()
        raise UserError(f"{env_id} needs a discrete action space and a flat observation vector for a DQN")
    return env


def next_epsilon(epsilon: float, epsilon_end: float, epsilon_decay: float) -> float:
    """Multiplicative decay per episode, floored at ``epsilon_end``."""
    return max(epsilon_end, epsilon_decay * epsilon)


def run_name(cfg: Config, start: float) -> str:
    """``{env}__seed{seed}__{YYYYmmdd-HHMMSS}``: sortable, and says what the run was."""
    return f"{cfg.env}__seed{cfg.seed}__{time.strftime('%Y%m%d-%H%M%S', time.localtime(start))}"


# ---------------------------------------------------------------- atomic files


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> None:
    """Call ``write(tmp_path)``, then rename the temporary file onto ``path``.

    The temporary file sits in the same folder, so the rename is atomic: a crash at
    any moment leaves either the old complete file or the new complete one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + suffix)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    atomic_write(path, write)


# ---------------------------------------------------------------- videos


def record_video(agent, env_id: str, max_steps: int, path: str | os.PathLike, seed: int, fps: int = 50) -> float:
    """Play one greedy episode in a separate rendering environment and save it as an H.264 mp4.

    The rendering environment has its own seed, so recording never changes the
    training environment's random stream. Returns the episode's score.
    """
    import imageio.v2 as imageio

    env = make_env(env_id, max_steps, render_mode="rgb_array")
    try:
        state, _ = env.reset(seed=seed)
        frames = [env.render()]
        score, done = 0.0, False
        while not done:
            state, reward, terminated, truncated, _ = env.step(agent.greedy_action(state))
            score += float(reward)
            frames.append(env.render())
            done = terminated or truncated
    finally:
        env.close()

    def write(tmp: str) -> None:
        # yuv420p and even frame sizes let every browser play the file; faststart puts
        # the index first so a notebook can start playing before it has read it all.
        with imageio.get_writer(
            tmp,
            format="FFMPEG",
            fps=fps,
            codec="libx264",
            pixelformat="yuv420p",
            macro_block_size=2,
            output_params=["-movflags", "+faststart"],
            ffmpeg_log_level="error",
        ) as writer:
            for frame in frames:
                writer.append_data(frame)

    atomic_write(path, write, suffix=".mp4")
    return score


def video_path(episode: int, video_dir: str | os.PathLike = VIDEO_DIR) -> Path:
    """``videos/episode_0050.mp4`` for episode 50."""
    return Path(video_dir) / f"episode_{episode:04d}.mp4"


def show_video(path_or_episode: str | os.PathLike | int, video_dir: str | os.PathLike = VIDEO_DIR):
    """Return an object that plays a saved video inline in Jupyter.

    ``show_video(50)`` plays ``videos/episode_0050.mp4``; a path plays that file.
    The video is embedded (base64), so the notebook keeps it when saved.
    """
    from IPython.display import Video

    path = video_path(path_or_episode, video_dir) if isinstance(path_or_episode, int) else Path(path_or_episode)
    if not path.is_file():
        raise FileNotFoundError(f"no video at {path}; videos are written every --video-every episodes")
    return Video(str(path), embed=True, mimetype="video/mp4", html_attributes="controls loop")


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


METRIC_FIELDS = ("episode", "total_steps", "score", "length", "epsilon", "average_100", "wall_seconds")


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write the per-episode metrics CSV atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def check_writable(folder: Path, what: str) -> None:
    """Fail before training, not after it, when an output folder cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write {what} to {folder}/: {exc.strerror or exc}") from None


def train(cfg: Config, out: Callable[[str], None] = print) -> TrainResult:
    """Run the episode loop of the original DQN and return the scores."""
    from agent import Agent

    start = time.time()
    device = resolve_device(cfg.device)
    # Tiny networks gain nothing from intra-op threads and lose to their start-up cost.
    torch.set_num_threads(1)
    checkpoint = Path(cfg.checkpoint)
    run_dir = RUNS_DIR / run_name(cfg, start)
    check_writable(checkpoint.parent if str(checkpoint.parent) else Path("."), "the checkpoint")
    check_writable(run_dir, "the run's metrics")
    if cfg.video:
        check_writable(VIDEO_DIR, "videos")

    env = make_env(cfg.env, cfg.max_steps)
    rng = seed_everything(cfg.seed)
    env.action_space.seed(cfg.seed)
    state_size = env.observation_space.shape[0]
    agent = Agent(
        state_size,
        int(env.action_space.n),
        learning_rate=cfg.learning_rate,
        minibatch_size=cfg.minibatch_size,
        discount_factor=cfg.discount_factor,
        replay_buffer_size=cfg.replay_buffer_size,
        interpolation_parameter=cfg.interpolation_parameter,
        learn_every=cfg.learn_every,
        hidden_size=cfg.hidden_size,
        device=device,
        rng=rng,
        backprop=cfg.backprop,
    )
    metrics_path = run_dir / "metrics.csv"
    write_text(run_dir / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    out(f"run {run_dir.name} on {device}; metrics: {metrics_path}")
    out("hyperparameters: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items()))

    scores: list[float] = []
    window: deque[float] = deque(maxlen=100)
    rows: list[dict[str, Any]] = []
    epsilon = cfg.epsilon_start
    total_steps = 0
    solved_episode: int | None = None
    loop_start = time.perf_counter()
    try:
        for episode in range(1, cfg.episodes + 1):
            # Seed the environment once; later resets continue its random stream.
            state, _ = env.reset(seed=cfg.seed if episode == 1 else None)
            score, length = 0.0, 0
            for _ in range(cfg.max_steps):
                action = agent.act(state, epsilon)
                next_state, reward, terminated, truncated, _ = env.step(action)
                # Store *terminated*, not truncated: a time-limit cut-off still has a future.
                agent.step(state, action, reward, next_state, terminated)
                state = next_state
                score += float(reward)
                length += 1
                if terminated or truncated:
                    break
            total_steps += length
            scores.append(score)
            window.append(score)
            average = float(np.mean(window))
            rows.append(
                {
                    "episode": episode,
                    "total_steps": total_steps,
                    "score": round(score, 4),
                    "length": length,
                    "epsilon": round(epsilon, 6),
                    "average_100": round(average, 4),
                    "wall_seconds": round(time.perf_counter() - loop_start, 3),
                }
            )
            epsilon = next_epsilon(epsilon, cfg.epsilon_end, cfg.epsilon_decay)

            if cfg.video and episode % cfg.video_every == 0:
                try:
                    record_video(agent, cfg.env, cfg.max_steps, video_path(episode), seed=cfg.seed + episode)
                except Exception as exc:  # a missing encoder must not end a training run
                    out(f"warning: could not write video for episode {episode}: {exc}")
            if episode % cfg.log_every == 0:
                write_metrics(metrics_path, rows)
                elapsed = time.perf_counter() - loop_start
                out(
                    f"episode {episode:5d}  average score {average:8.2f}  epsilon {epsilon:.3f}  "
                    f"steps {total_steps:8d}  {total_steps / elapsed:6.0f} steps/s"
                )
            if solved_episode is None and len(window) == window.maxlen and average >= cfg.target_score:
                solved_episode = episode
                save_torch(agent.local_qnetwork.state_dict(), checkpoint)
                out(
                    f"solved: 100-episode average {average:.2f} >= {cfg.target_score:g} at episode {episode} "
                    f"({total_steps} steps, {time.perf_counter() - loop_start:.1f} s); weights saved to {checkpoint}"
                )
                if not cfg.keep_training:
                    break
    finally:
        env.close()
        write_metrics(metrics_path, rows)
    save_torch(agent.local_qnetwork.state_dict(), checkpoint)
    seconds = time.perf_counter() - loop_start
    if solved_episode is None:
        out(f"not solved in {len(scores)} episodes; last weights saved to {checkpoint}")
    return TrainResult(scores, solved_episode, total_steps, seconds, run_dir, checkpoint)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    cfg = parse_config(argv)
    try:
        train(cfg)
    except UserError as exc:
        print(f"main.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("main.py: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
