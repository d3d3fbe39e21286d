"""A run's folder in named pieces: its paths, its lock, its history, its console and its closing line."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dqnkit.errors import UserError, first_line
from dqnkit.report.logs import Console, write_metrics
from dqnkit.report.videos import VIDEO_DIR
from dqnkit.run import files
from dqnkit.run.paths import BEST_WEIGHTS as BEST_WEIGHTS  # re-exported: the tuner and benchmarks read it here
from dqnkit.run.paths import RunPaths, lock_run, new_run_dir

if TYPE_CHECKING:
    import gymnasium as gym
    import torch

    from agent import Agent

MaybePath = str | os.PathLike | None


@dataclass
class TrainResult:
    """What a training run produced."""

    scores: list[float]
    solved_episode: int | None
    total_steps: int
    seconds: float
    run_dir: Path
    checkpoint: Path  # written only when this run solved (solved_episode is not None)
    state_path: Path
    stopped_by: int | None = None  # the signal that ended the run early, if one did
    last_weights: Path | None = None  # the network the run ended with, in its folder


def resolve_device(name: str) -> torch.device:
    """Pick the device once: ``cpu`` unless asked; ``auto`` means CUDA when available, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but PyTorch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


@dataclass
class History:
    """How far a run has come: what a resumed run gets back, and its training state saves (as ``"progress"``)."""

    episode: int = 0  # the last finished
    total_steps: int = 0
    epsilon: float = 1.0  # the next episode's
    solved_episode: int | None = None
    seconds: float = 0.0  # of training, those before a resume included
    rows: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv's

    @classmethod
    def restored(cls, saved: dict[str, Any], agent: Agent, env: gym.Env, source: Any) -> History:
        """The run ``saved`` put back into ``agent`` and ``env``; one line if the file does not fit them."""
        try:
            history = files.restore_training_state(saved, agent, env)
            return cls(**{f.name: history[f.name] for f in dataclasses.fields(cls)})
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:  # another network, a missing entry
            raise UserError(
                f"{source} does not fit the run it describes ({type(exc).__name__}: "
                f"{first_line(exc)[:200]}); it is not a training state this version wrote whole"
            ) from None

    def nothing_left(self, cfg: Any) -> str | None:
        """Why a resumed run has no episode left to play, or None."""
        if self.solved_episode is not None and not cfg.keep_training:
            return f"this run was solved at episode {self.solved_episode}; add --keep-training to go on"
        if self.episode >= cfg.episodes:
            return f"this run already played its {self.episode} episodes; raise --episodes to go on"
        return None


class RunFolder:
    """One training run's folder: its :class:`RunPaths`, its lock, its :class:`History` and its console."""

    def __init__(
        self, cfg: Any, out: Callable[[str], None] | None = None, resume: MaybePath = None, root: MaybePath = None
    ) -> None:
        self.cfg, self.resume, self._out = cfg, resume, out
        self.root = Path(root if root is not None else "")  # Path("") / "runs" is "runs": messages stay relative
        self.saved = files.load_training_state(resume, type(cfg)) if resume is not None else None
        if cfg.video:
            files.check_writable(self.root / VIDEO_DIR, "videos")
        files.check_file_path(self.root / cfg.checkpoint, "the checkpoint")
        # Nothing is created yet: a new run's folder is made by open(), once the environment exists.
        self._dir = Path(resume).parent if resume is not None else None
        files.check_writable(self._dir or self.root / files.RUNS_DIR, "the run's files")
        self.stopped_by: int | None = None  # the signal that stopped the run, once one did
        self.saved_episode: int | None = None  # the episode of the training state on disk, once there is one
        self.rescued = False  # True once the state of the episode an error came after is saved

    def open(self, agent: Agent, env: gym.Env, device: torch.device) -> History:
        """Make (or take) the folder, lock it, restore a resumed run into ``agent`` and ``env``; return its history.

        Call it after seeding and building the agent, so that a resumed run overrides their random states.
        """
        cfg = self.cfg
        name = f"{cfg.env}__seed{cfg.seed}__{time.strftime('%Y%m%d-%H%M%S')}"  # sortable, and says what the run was
        run_dir = self._dir or new_run_dir(self.root / files.RUNS_DIR, name)
        self.paths = paths = RunPaths.of(run_dir, self.root, cfg.checkpoint)
        self._lock = lock_run(paths.lock)  # before any write: a second process resuming this run stops here
        try:
            if self.saved is None:
                self.history = History(epsilon=cfg.epsilon_start)
            else:
                self.history = History.restored(self.saved, agent, env, self.resume)
                self.saved_episode = self.history.episode
            self.done_before = self.history.nothing_left(cfg)
            config = dataclasses.asdict(cfg)
            files.write_text(paths.config, json.dumps(config, indent=2) + "\n")
            # Exactly the saved rows: a crash after the last save may have appended some that resuming replays.
            write_metrics(paths.metrics, self.history.rows)
            total = cfg.episodes if cfg.keep_training else None  # None: the run may stop early, at the target
            self.display = Console(total, self.history.episode, cfg.log_every, cfg.quiet, self._out, most=cfg.episodes)
            self.out = self.display.write
            announce(self, device, config)
        except BaseException:  # a run that cannot begin holds nothing
            if self._lock is not None:
                self._lock.close()
            raise
        self._seconds_before, self._loop_start = self.history.seconds, time.perf_counter()
        return self.history

    def episodes(self) -> Iterator[int]:
        """The numbers of the episodes to play; none if a resumed run has none left (open() said why)."""
        if self.done_before:
            return
        for episode in range(self.history.episode + 1, self.cfg.episodes + 1):
            self.playing = episode
            yield episode

    def elapsed(self) -> float:
        """Seconds of training in this run, those before a resume included."""
        return self._seconds_before + time.perf_counter() - self._loop_start

    def __enter__(self) -> RunFolder:
        # Overflow shows up as a non-finite loss, which the agent reports; NumPy need not warn first.
        self._errstate = np.errstate(over="ignore", invalid="ignore")
        self._errstate.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._errstate.__exit__(None, None, None)
        try:
            if exc is not None:
                explain_failure(self, exc)
        finally:
            if self._lock is not None:  # the run's files are complete (or the run failed): another process may have it
                self._lock.close()
            self.display.close()

    def result(self, stop: str | None = None) -> TrainResult:
        """What the run produced, after its last line if it stopped early or did not solve; ``stop``: why it stopped."""
        # A run that solved said so then; a resumed run with nothing left to play said so when it opened.
        h, p, speaks = self.history, self.paths, not self.done_before
        if speaks and (self.stopped_by is not None or stop not in (None, "solved")):
            why = "" if self.stopped_by is not None else f" ({stop})"
            resume = f"continue with: python main.py --resume {p.state}"
            self.out(f"stopped at episode {h.episode}{why}; last weights saved to {p.last_weights}; {resume}")
        elif speaks and h.solved_episode is None:
            unsolved = f"({p.checkpoint} is written only by a run that solves)"
            self.out(f"not solved in {len(h.rows)} episodes; last weights saved to {p.last_weights} {unsolved}")
        found = (h.solved_episode, h.total_steps, self.elapsed(), p.dir, p.checkpoint, p.state, self.stopped_by)
        return TrainResult([float(r["score"]) for r in h.rows], *found, p.last_weights)


def announce(run: RunFolder, device: torch.device, config: dict[str, Any]) -> None:
    """The first lines: the run and where its files go (or why a resumed one has nothing to do), leftovers."""
    p = run.paths
    verb = f"resuming at episode {run.history.episode + 1}" if run.saved is not None else "run"
    run.out(run.done_before or f"{verb} {p.dir.name} on {device}; metrics: {p.metrics}; training state: {p.state}")
    removed = files.remove_stale_temp_files(p.checkpoint.parent, p.checkpoint.name)
    if run.saved is not None:
        removed += files.remove_stale_temp_files(p.dir) + files.remove_stale_temp_files(p.videos)
    if removed:
        plural = "s" if len(removed) > 1 else ""
        listed = ", ".join(str(path) for path in removed)
        run.out(f"removed {len(removed)} temporary file{plural} left by an interrupted save: {listed}")
    if not run.cfg.quiet and not run.done_before:
        run.out("hyperparameters: " + ", ".join(f"{k}={v}" for k, v in config.items()))


def explain_failure(run: RunFolder, exc: BaseException) -> None:
    """Say in one line what ended the run and what is kept (the hooks have saved what they could)."""
    resume = f"python main.py --resume {run.paths.state}"
    if run.saved_episode is None:
        kept = "; no training state was saved yet"
    elif run.rescued:
        kept = f"; the training state of episode {run.saved_episode} is saved: {resume}"
    else:  # an error inside an episode, or the disk is still full: the last state saved before stands
        kept = f"; the training state on disk is episode {run.saved_episode}'s: {resume}"
    if isinstance(exc, KeyboardInterrupt):  # a second Ctrl-C: main.py says it, with this note
        exc.note = kept if run.saved_episode is None else "; the last saved training state is still complete"
    elif isinstance(exc, FloatingPointError):
        last = f"; the last saved training state is {run.paths.state}" if run.saved_episode is not None else ""
        raise UserError(
            f"training stopped in episode {run.playing}: {exc}; try a smaller --learning-rate. "
            f"The last good weights are in {run.paths.last_weights}{last}"
        ) from None
    elif isinstance(exc, UserError | OSError):  # a full disk, an unwritable file: the user can mend it
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc)
        raise UserError(f"training stopped: {what}{kept}") from None
    else:  # a bug of ours: the traceback follows, and the run is saved anyway
        run.out(f"training stopped by an unexpected error ({type(exc).__name__}: {first_line(exc)}){kept}")
