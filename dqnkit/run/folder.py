"""A run's folder: its name, its lock, what a resumed run gets back, ``config.json``, and its console.

Where the weights go: ``--checkpoint`` (``checkpoint.pth``) is written only by a run that
solves, as in the original, and the checkpoint it replaces is kept in that run's folder.
Every run keeps the weights it ended with in its own folder (``runs/<run>/last.pth``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dqnkit.errors import UserError, first_line
from dqnkit.report.logs import Progress, write_metrics
from dqnkit.report.videos import VIDEO_DIR
from dqnkit.run.files import (
    RUNS_DIR,
    STATE_FILE,
    RunLock,
    check_file_path,
    check_writable,
    load_training_state,
    new_run_dir,
    remove_stale_temp_files,
    restore_training_state,
    run_name,
    write_text,
)

if TYPE_CHECKING:
    import gymnasium as gym
    import torch

    from agent import Agent

LAST_WEIGHTS = "last.pth"  # in the run's folder: the network a run ended with
BEST_WEIGHTS = "best.pth"  # in the run's folder: the network that scored best in --eval-every's evaluations
PREVIOUS_CHECKPOINT = "previous-checkpoint.pth"  # in the run's folder: the checkpoint its solving replaced
SOLVED_WEIGHTS = "solved.pth"  # in the run's folder: the network that solved, whatever became of --checkpoint


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


def fresh_progress(epsilon_start: float) -> dict[str, Any]:
    """The progress of a run that has played nothing yet (what :meth:`RunFolder.open` returns)."""
    return dict(episode=0, total_steps=0, epsilon=epsilon_start, solved_episode=None, seconds=0.0, rows=[])


def resolve_device(name: str) -> torch.device:
    """Pick the device once: ``cpu`` unless asked; ``auto`` means CUDA when available, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but PyTorch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


class RunFolder:
    """The folder of one training run, held (locked) while the run trains in it.

    ``RunFolder(cfg, out, resume)`` checks every output folder before minutes of training and
    creates none (``cfg`` is a ``main.Config``; messages go to ``out``, by default the terminal,
    with a live bar when stdout is one; ``resume`` is a training state whose folder is reused).
    :meth:`open` makes the folder (or takes a resumed run's), locks it, puts a resumed run's
    agent and random states back, writes ``config.json`` and says where everything goes. As a
    context manager around the loop it releases the lock however the loop ends, and turns a
    diverging loss into one line that says where the last good files are.
    """

    def __init__(self, cfg: Any, out: Callable[[str], None] | None = None, resume: str | os.PathLike | None = None):
        self.cfg = cfg
        self.resume, self.saved = resume, load_training_state(resume, type(cfg)) if resume is not None else None
        self.checkpoint = Path(cfg.checkpoint)
        if cfg.video:
            check_writable(VIDEO_DIR, "videos")
        check_file_path(self.checkpoint, "the checkpoint")
        # A new run's folder is made by open(), once the environment exists: a mistyped --env leaves none.
        self.dir: Path | None = Path(resume).parent if resume is not None else None
        check_writable(self.dir or RUNS_DIR, "the run's files")
        self._out = out
        self.stopped_by: int | None = None  # the signal that stopped the run, once one did
        self.saved_episode: int | None = None  # the episode of the training state on disk, once there is one
        self.rescued = False  # True once the state of the episode an error came after is saved

    def open(self, agent: Agent, env: gym.Env, device: torch.device) -> dict[str, Any]:
        """Make (or take) the folder, lock it, restore a resumed run into ``agent`` and ``env``; return the progress.

        The progress holds ``episode`` (the last finished), ``total_steps``, ``epsilon`` (the next
        episode's), ``solved_episode``, ``seconds`` and ``rows`` (metrics.csv's). Call it after
        seeding and building the agent, so a resumed run overrides their random states.
        """
        self.agent, self.env = agent, env
        if self.dir is None:
            self.dir = new_run_dir(RUNS_DIR, run_name(self.cfg, time.time()))
        self.state_path, self.metrics_path = self.dir / STATE_FILE, self.dir / "metrics.csv"
        self.last_weights = self.dir / LAST_WEIGHTS
        self._lock = RunLock(self.dir)
        self._lock.acquire()  # before any write: a second process resuming this run stops here, in one line
        try:
            if self.saved is not None:
                self.progress = self._restore(agent, env)
            else:
                self.progress = fresh_progress(self.cfg.epsilon_start)
            self.done_before = self._nothing_to_do()
            self.saved_episode = self.progress["episode"] if self.saved is not None else None
            config = dataclasses.asdict(self.cfg)
            write_text(self.dir / "config.json", json.dumps(config, indent=2) + "\n")
            # Exactly the saved rows: a crash after the last save may have appended some that resuming replays.
            write_metrics(self.metrics_path, self.progress["rows"])
            # The bar's total only when the run will play every episode: one that may stop at the
            # target would show minutes left for a run that ends in seconds.
            total = self.cfg.episodes if self.cfg.keep_training else None
            episode, cfg = self.progress["episode"], self.cfg
            self.display = Progress(total, episode, cfg.log_every, cfg.quiet, self._out, most=cfg.episodes)
            self.out = self.display.write
            announce(self, device, config)
        except BaseException:  # a run that cannot begin holds nothing
            self._lock.release()
            raise
        self._seconds_before: float = self.progress["seconds"]
        self._loop_start = time.perf_counter()
        return self.progress

    def _restore(self, agent: Agent, env: gym.Env) -> dict[str, Any]:
        """The saved run put back into ``agent`` and ``env``; one line if the file does not fit them."""
        try:
            progress = restore_training_state(self.saved, agent, env)
            for key in ("episode", "total_steps", "epsilon", "solved_episode", "seconds", "rows"):
                progress[key]  # noqa: B018 - presence check
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:  # another network, a missing entry
            raise UserError(
                f"{self.resume} does not fit the run it describes ({type(exc).__name__}: "
                f"{first_line(exc)[:200]}); it is not a training state this version wrote whole"
            ) from None
        return progress

    def _nothing_to_do(self) -> str | None:
        """Why a resumed run has no episode left to play, or None."""
        if self.progress["solved_episode"] is not None and not self.cfg.keep_training:
            return f"this run was solved at episode {self.progress['solved_episode']}; add --keep-training to go on"
        if self.progress["episode"] >= self.cfg.episodes:
            return f"this run already played its {self.progress['episode']} episodes; raise --episodes to go on"
        return None

    def episodes(self) -> Iterator[int]:
        """The numbers of the episodes to play; none if a resumed run has none left (open() said why)."""
        if self.done_before:
            return
        for episode in range(self.progress["episode"] + 1, self.cfg.episodes + 1):
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
            self._lock.release()  # the run's files are complete (or the run failed): another process may have it
            self.display.close()

    def result(self, stop: str | None = None) -> TrainResult:
        """What the run produced; with a closing line that says where to find it. ``stop``: why the loop stopped."""
        scores = [float(r["score"]) for r in self.progress["rows"]]
        solved = self.progress["solved_episode"]
        if self.done_before:
            pass  # a resumed run with nothing left to play: open() said so, all is as it was
        elif self.stopped_by is not None or (stop is not None and stop != "solved"):  # a signal, a caller's hook
            why = "" if self.stopped_by is not None else f" ({stop})"
            self.out(
                f"stopped at episode {self.progress['episode']}{why}; last weights saved to {self.last_weights}; "
                f"continue with: python main.py --resume {self.state_path}"
            )
        elif solved is None:
            self.out(
                f"not solved in {len(scores)} episodes; last weights saved to {self.last_weights} "
                f"({self.checkpoint} is written only by a run that solves)"
            )
        return TrainResult(
            scores,
            solved,
            self.progress["total_steps"],
            self.elapsed(),
            self.dir,
            self.checkpoint,
            self.state_path,
            self.stopped_by,
            self.last_weights,
        )


# ---------------------------------------------------------------- what the run says


def announce(run: RunFolder, device: torch.device, config: dict[str, Any]) -> None:
    """The first lines: the run and where its files go (or why a resumed one has nothing to do), leftovers."""
    if run.done_before:
        run.out(run.done_before)
    else:
        verb = f"resuming at episode {run.progress['episode'] + 1}" if run.saved is not None else "run"
        run.out(
            f"{verb} {run.dir.name} on {device}; metrics: {run.metrics_path}; training state: {run.state_path}"
        )
    removed = remove_stale_temp_files(run.checkpoint.parent, run.checkpoint.name)
    if run.saved is not None:
        removed += remove_stale_temp_files(run.dir) + remove_stale_temp_files(VIDEO_DIR / run.dir.name)
    if removed:
        plural = "s" if len(removed) > 1 else ""
        listed = ", ".join(str(path) for path in removed)
        run.out(f"removed {len(removed)} temporary file{plural} left by an interrupted save: {listed}")
    if not run.cfg.quiet and not run.done_before:
        run.out("hyperparameters: " + ", ".join(f"{k}={v}" for k, v in config.items()))


def explain_failure(run: RunFolder, exc: BaseException) -> None:
    """Say in one line what ended the run and what is kept (the hooks have saved what they could)."""
    resume = f"python main.py --resume {run.state_path}"
    if run.saved_episode is None:
        kept = "; no training state was saved yet"
    elif run.rescued:
        kept = f"; the training state of episode {run.saved_episode} is saved: {resume}"
    else:  # an error inside an episode, or the disk is still full: the last state saved before stands
        kept = f"; the training state on disk is episode {run.saved_episode}'s: {resume}"
    if isinstance(exc, KeyboardInterrupt):  # a second Ctrl-C: main.py says it, with this note
        complete = "; the last saved training state is still complete"
        exc.note = complete if run.saved_episode is not None else "; no training state was saved yet"
    elif isinstance(exc, FloatingPointError):
        last = f"; the last saved training state is {run.state_path}" if run.saved_episode is not None else ""
        raise UserError(
            f"training stopped in episode {run.playing}: {exc}; try a smaller --learning-rate. "
            f"The last good weights are in {run.last_weights}{last}"
        ) from None
    elif isinstance(exc, UserError | OSError):  # a full disk, an unwritable file: the user can mend it
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc)
        raise UserError(f"training stopped: {what}{kept}") from None
    else:  # a bug of ours: the traceback follows, and the run is saved anyway
        run.out(f"training stopped by an unexpected error ({type(exc).__name__}: {first_line(exc)}){kept}")
