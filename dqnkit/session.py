"""The plumbing of one training run, so that ``main.train`` can read like the original episode loop.

A :class:`TrainingSession` checks and creates the run's folders, restores a saved run, writes
``config.json``, shows progress, keeps ``metrics.csv`` and TensorBoard, hands the periodic videos
to the worker process, saves the resumable training state, turns Ctrl-C into a stop after the
episode, and has the last word at the end of the run.

Where the weights go: ``--checkpoint`` (``checkpoint.pth``) is written only by a run that
solves, as in the original, and the checkpoint it replaces is kept in that run's folder.
Every run keeps the weights it ended with in its own folder (``runs/<run>/last.pth``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dqnkit.envs import final_outcome
from dqnkit.errors import UserError, first_line
from dqnkit.evaluation import PeriodicEvaluation
from dqnkit.files import (
    RUNS_DIR,
    STATE_FILE,
    RunLock,
    check_writable,
    copy_file,
    load_training_state,
    new_run_dir,
    remove_stale_temp_files,
    run_name,
    save_torch,
    save_training_state,
    write_text,
)
from dqnkit.logs import Progress, TensorBoard, append_metrics, plot_learning_curve, write_metrics
from dqnkit.videos import VIDEO_DIR, BackgroundVideos, video_path

if TYPE_CHECKING:
    import gymnasium as gym
    import torch

    from agent import Agent
    from nnetwork import Network


LAST_WEIGHTS = "last.pth"  # in the run's folder: the network a run ended with
BEST_WEIGHTS = "best.pth"  # in the run's folder: the network that scored best in --eval-every's evaluations
PREVIOUS_CHECKPOINT = "previous-checkpoint.pth"  # in the run's folder: the checkpoint its solving replaced


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


def resolve_device(name: str) -> torch.device:
    """Pick the device once: ``cpu`` unless asked; ``auto`` means CUDA when available, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but PyTorch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


class TrainingSession:
    """Everything a training run does besides playing and learning.

    Use: ``session = TrainingSession(cfg, out, resume)``, build the environment and the agent,
    ``session.start(agent, env, device)``, then ``with session:`` around the episode loop, which
    calls :meth:`episodes`, :meth:`record`, :meth:`film`, :meth:`show_progress`, :meth:`save_solved`
    and :meth:`save_state`; :meth:`finish` after it.

    Args:
        cfg: the run's configuration (``main.Config``), a dataclass instance.
        out: where messages go; by default the terminal, with a live bar when stdout is one.
        resume: a training state to continue; its run folder is reused.
    """

    def __init__(
        self, cfg: Any, out: Callable[[str], None] | None = None, resume: str | os.PathLike | None = None
    ) -> None:
        self.cfg = cfg
        self._saved = load_training_state(resume, type(cfg)) if resume is not None else None
        self.checkpoint = Path(cfg.checkpoint)
        # Check every output folder before creating any, and before minutes of training.
        if cfg.video:
            check_writable(VIDEO_DIR, "videos")
        check_writable(self.checkpoint.parent, "the checkpoint")
        # A new run's folder is made by start(), once the environment exists: a mistyped --env leaves none.
        self.run_dir: Path | None = None
        if resume is not None:
            self.run_dir = Path(resume).parent
            check_writable(self.run_dir, "the run's files")
        else:
            check_writable(RUNS_DIR, "the run's files")
        self._out = out

    # ------------------------------------------------------------ before the loop

    def start(self, agent: Agent, env: gym.Env, device: torch.device) -> tuple[float, int]:
        """Make the run's folder or restore a saved run into ``agent`` and ``env``; return epsilon and the steps.

        Call it after seeding and building the agent, so a resumed run overrides their random states.
        """
        self.agent, self.env = agent, env
        if self.run_dir is None:
            self.run_dir = new_run_dir(RUNS_DIR, run_name(self.cfg, time.time()))
        self._lock = RunLock(self.run_dir)
        self._lock.acquire()  # before any write: a second process resuming this run stops here, in one line
        try:
            return self._begin(device)
        except BaseException:  # a run that cannot begin holds nothing
            self._lock.release()
            raise

    def _begin(self, device: torch.device) -> tuple[float, int]:
        """The rest of :meth:`start`, under the run's lock."""
        self.state_path = self.run_dir / STATE_FILE
        self.metrics_path = self.run_dir / "metrics.csv"
        self.last_weights = self.run_dir / LAST_WEIGHTS
        self.progress = self._restore() if self._saved is not None else self._fresh_progress()
        self.rows: list[dict[str, Any]] = self.progress["rows"]
        self.scores = [float(r["score"]) for r in self.rows]
        self.window: deque[float] = deque(self.scores[-100:], maxlen=100)
        self.episode: int = self.progress["episode"]  # the last finished episode
        self._saved_episode = self.episode if self._saved is not None else None  # the one on disk
        self.total_steps: int = self.progress["total_steps"]
        self.solved_episode: int | None = self.progress["solved_episode"]
        self.done_before = self._done_before()
        config = dataclasses.asdict(self.cfg)
        write_text(self.run_dir / "config.json", json.dumps(config, indent=2) + "\n")
        # Exactly the saved rows: a crash after the last save may have appended some that resuming replays.
        write_metrics(self.metrics_path, self.rows)
        self._open_logs()
        self._announce(device, config)
        self._seconds_before: float = self.progress["seconds"]
        self._loop_start = time.perf_counter()
        return self.progress["epsilon"], self.total_steps

    def _done_before(self) -> str | None:
        """Why a resumed run has no episode left to play, or None."""
        if self.solved_episode is not None and not self.cfg.keep_training:
            return f"this run was solved at episode {self.solved_episode}; add --keep-training to go on"
        if self.episode >= self.cfg.episodes:
            return f"this run already played its {self.episode} episodes; raise --episodes to go on"
        return None

    def _open_logs(self) -> None:
        """The progress bar (through which every message then goes), TensorBoard and the video worker."""
        # The bar's total only when the run will play every episode: one that may stop at the
        # target would show minutes left for a run that ends in seconds.
        total = self.cfg.episodes if self.cfg.keep_training else None
        self._bar = Progress(total, self.episode, self.cfg.log_every, self.cfg.quiet, self._out, most=self.cfg.episodes)
        self.out = self._bar.write
        self.tensorboard = TensorBoard(self.run_dir / "tensorboard") if self.cfg.tensorboard else None
        self.videos = BackgroundVideos(self.out) if self.cfg.video and not self.done_before else None
        self.periodic = None
        if self.cfg.eval_every and not self.done_before:
            best = self.run_dir / BEST_WEIGHTS
            self.periodic = PeriodicEvaluation(
                self.cfg.env, self.cfg.max_steps, self.cfg.eval_every, self.cfg.eval_episodes, best
            )
            self.periodic.best_score = max(
                (float(r["eval_score"]) for r in self.rows if r.get("eval_score", "") != ""), default=-math.inf
            )  # a resumed run keeps the best of the evaluations before it

    def _announce(self, device: torch.device, config: dict[str, Any]) -> None:
        """The first lines: the run and where its files go (or why a resumed one has nothing to do), leftovers."""
        if self.done_before:
            self.out(self.done_before)
        else:
            verb = f"resuming at episode {self.episode + 1}" if self._saved is not None else "run"
            self.out(
                f"{verb} {self.run_dir.name} on {device}; metrics: {self.metrics_path}; "
                f"training state: {self.state_path}"
            )
        removed = remove_stale_temp_files(self.checkpoint.parent, self.checkpoint.name)
        if self._saved is not None:
            removed += remove_stale_temp_files(self.run_dir) + remove_stale_temp_files(VIDEO_DIR / self.run_dir.name)
        if removed:
            plural = "s" if len(removed) > 1 else ""
            self.out(
                f"removed {len(removed)} temporary file{plural} left by an interrupted save: "
                + ", ".join(str(path) for path in removed)
            )
        if not self.cfg.quiet and not self.done_before:
            self.out("hyperparameters: " + ", ".join(f"{k}={v}" for k, v in config.items()))

    def _fresh_progress(self) -> dict[str, Any]:
        return {
            "episode": 0,
            "total_steps": 0,
            "epsilon": self.cfg.epsilon_start,
            "solved_episode": None,
            "seconds": 0.0,
            "rows": [],
        }

    def _restore(self) -> dict[str, Any]:
        """Put the saved agent and random states back; return the saved progress."""
        import torch

        saved = self._saved
        self.agent.load_state_dict(saved["agent"])
        random.setstate(saved["rng"]["python"])
        torch.set_rng_state(saved["rng"]["torch"])
        self.env.unwrapped.np_random.bit_generator.state = saved["rng"]["env"]
        self.env.action_space.np_random.bit_generator.state = saved["rng"]["action_space"]
        return saved["progress"]

    # ------------------------------------------------------------ around the loop

    def __enter__(self) -> TrainingSession:
        self._exits = contextlib.ExitStack()
        self._stop = self._exits.enter_context(_StopRequests(self.out))
        # Overflow shows up as a non-finite loss, which the agent reports; NumPy need not warn first.
        self._exits.enter_context(np.errstate(over="ignore", invalid="ignore"))
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if isinstance(exc, FloatingPointError):
                # Into the run's folder: the checkpoint may hold a solved agent, and these weights did not solve.
                save_torch(self.agent.local_qnetwork.state_dict(), self.last_weights)
                last = f"; the last saved training state is {self.state_path}" if self.state_path.exists() else ""
                raise UserError(
                    f"training stopped in episode {self._playing}: {exc}; try a smaller --learning-rate. "
                    f"The last good weights are in {self.last_weights}{last}"
                ) from None
        finally:
            if exc is not None:  # finish() will not run: let another process have the run
                self._lock.release()
            with self._exits:
                if self.videos is not None and exc is not None:  # after a second Ctrl-C, don't wait for them
                    self.videos.close(wait=not isinstance(exc, KeyboardInterrupt))
                self._bar.close()
                if self.tensorboard is not None:
                    self.tensorboard.close()
                if self.periodic is not None:
                    self.periodic.close()

    def episodes(self) -> Iterator[int]:
        """The numbers of the episodes to play; none if a resumed run has none left (start() said why)."""
        if self.done_before:
            return
        for episode in range(self.episode + 1, self.cfg.episodes + 1):
            self._playing = episode
            yield episode

    # ------------------------------------------------------------ in the loop

    def elapsed(self) -> float:
        """Seconds of training in this run, those before a resume included."""
        return self._seconds_before + time.perf_counter() - self._loop_start

    def record(
        self, episode: int, score: float, length: int, epsilon: float, total_steps: int, network: Network | None = None
    ) -> float:
        """Keep a finished episode (a row appended to metrics.csv, TensorBoard); return the average.

        The average is over the last 100 episodes, or all of them while there are fewer. With
        ``--eval-every``, ``network`` is evaluated greedily first when the episode is due (see
        :class:`dqnkit.evaluation.PeriodicEvaluation`) and the mean goes into the row.
        """
        # Read before the next reset: how the episode ended (a cut-off at max_steps is not terminal).
        outcome, landed_on_pad = final_outcome(self.env, terminated=length < self.cfg.max_steps)
        eval_score = ""
        if self.periodic is not None and network is not None and self.periodic.due(episode):
            eval_score = self.periodic.run(network)
        self.episode, self.total_steps = episode, total_steps
        self.scores.append(score)
        self.window.append(score)
        average = float(np.mean(self.window))
        self._elapsed = self.elapsed()
        row = {
            "episode": episode,
            "total_steps": total_steps,
            "score": score,  # full precision: a resumed run rebuilds its window from these
            "length": length,
            "epsilon": epsilon,
            "average_100": average,
            "wall_seconds": round(self._elapsed, 3),
            "outcome": outcome,
            "on_pad": int(landed_on_pad),
            "eval_score": eval_score,
        }
        self.rows.append(row)
        if self.tensorboard is not None:
            self.tensorboard.log(row, self.agent.last_loss)
        append_metrics(self.metrics_path, row)  # every episode: a crashed run's metrics are never stale
        return average

    def film(self, episode: int, network: Network) -> None:
        """Have the worker process film ``network``'s greedy policy; training goes on meanwhile."""
        path = video_path(episode, VIDEO_DIR / self.run_dir.name)
        self.videos.submit(episode, network, self.cfg.env, self.cfg.max_steps, path, seed=self.cfg.seed + episode)

    def show_progress(self, episode: int, average: float, epsilon: float, total_steps: int) -> None:
        """Move the bar, or print a progress line every ``log_every`` episodes."""
        self._bar.update(episode, average, epsilon, total_steps, total_steps / max(self._elapsed, 1e-9))

    def evaluation_passed(self, episode: int) -> bool:
        """Whether ``episode``'s evaluation passed the stopping rule of ``--eval-target`` and ``--eval-landed``."""
        return self.periodic is not None and self.periodic.passed(episode, self.cfg.eval_target, self.cfg.eval_landed)

    def save_solved(self, episode: int, average: float, network: Network) -> None:
        """The target is reached: note the episode, save ``network``'s weights to the checkpoint, say so.

        A checkpoint already there is another run's (a run solves once): it is kept in this run's folder first.
        """
        self.solved_episode = episode
        if self.checkpoint.is_file():
            kept = self.run_dir / PREVIOUS_CHECKPOINT
            copy_file(self.checkpoint, kept)  # a copy: the checkpoint stays whole if the save below fails
            self.out(f"the previous {self.checkpoint} (another run's) is kept as {kept}")
        save_torch(network.state_dict(), self.checkpoint)
        if self.cfg.eval_target is None:
            rule = f"100-episode average {average:.2f} >= {self.cfg.target_score:g}"
        else:
            last = self.periodic.last
            rule = (
                f"greedy evaluation mean {last.mean_score:.2f} >= {self.cfg.eval_target:g}, "
                f"{last.outcomes.count('landed')} of {len(last.outcomes)} landed"
            )
        self.out(
            f"solved: {rule} at episode {episode} "
            f"({self.total_steps} steps, {self._elapsed:.1f} s); weights saved to {self.checkpoint}"
        )

    @property
    def stop_requested(self) -> bool:
        """True once Ctrl-C (or SIGTERM) asked the run to stop after its episode."""
        return self._stop.signal is not None

    def save_state(self, epsilon: float) -> None:
        """Save the resumable training state as of the last finished episode; ``epsilon`` is the next one's.

        Nothing to do when the state on disk is already that episode's.
        """
        if self._saved_episode == self.episode:
            return
        self.progress.update(
            episode=self.episode,
            total_steps=self.total_steps,
            epsilon=epsilon,
            solved_episode=self.solved_episode,
            seconds=self.elapsed(),
        )
        save_training_state(self.state_path, self.agent, self.env, self.cfg, self.progress)
        self._saved_episode = self.episode

    # ------------------------------------------------------------ after the loop

    def finish(self, network: Network) -> TrainResult:
        """Draw the learning curve, keep ``network``'s weights in the run's folder, wait for the videos, sum up."""
        try:
            return self._finish(network)
        finally:
            self._lock.release()  # the run's files are complete: another process may resume it now

    def _finish(self, network: Network) -> TrainResult:
        if self.done_before:  # a resumed run with nothing left to play: start() said so, all is as it was
            return self._result()
        try:
            if self.rows:
                curve = plot_learning_curve(self.metrics_path, target_score=self.cfg.target_score)
                self.out(f"learning curve: {curve}")
            save_torch(network.state_dict(), self.last_weights)
            if self.videos is not None:  # last: everything else is saved, so a Ctrl-C now loses only these videos
                self.videos.close()
                self._write_progress_table()
        except BaseException:
            if self.videos is not None:  # a Ctrl-C (or an error) here must not wait for the video worker
                self.videos.close(wait=False)
            raise
        if self._stop.signal is not None:
            self.out(
                f"stopped at episode {self.episode}; last weights saved to {self.last_weights}; "
                f"continue with: python main.py --resume {self.state_path}"
            )
        elif self.solved_episode is None:
            self.out(
                f"not solved in {len(self.scores)} episodes; last weights saved to {self.last_weights} "
                f"({self.checkpoint} is written only by a run that solves)"
            )
        return self._result()

    def _write_progress_table(self) -> None:
        """The training-progress table of the run's videos (progress.md and .html); a failure is a warning."""
        from dqnkit.stages import write_progress

        try:
            markdown, _ = write_progress(self.run_dir, VIDEO_DIR / self.run_dir.name)
        except (UserError, OSError, ValueError) as exc:  # no video finished, a full disk: the run is still fine
            self.out(f"warning: no progress table: {first_line(exc)}")
            return
        self.out(f"progress table: {markdown}")

    def _result(self) -> TrainResult:
        return TrainResult(
            self.scores,
            self.solved_episode,
            self.total_steps,
            self.elapsed(),
            self.run_dir,
            self.checkpoint,
            self.state_path,
            self._stop.signal,
            self.last_weights,
        )
