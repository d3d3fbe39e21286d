"""Filming during training: a greedy episode every ``--video-every`` episodes, recorded by a worker process.

The worker is started, stopped and killed by :mod:`dqnkit.run.processes`, the one place that handles child processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dqnkit.errors import first_line
from dqnkit.report.logs import Out
from dqnkit.report.videos import record_greedy_video, video_path
from dqnkit.run import processes
from dqnkit.run.files import remove_stale_temp_files
from dqnkit.run.hooks import Episode, Hook

if TYPE_CHECKING:
    from nnetwork import Network


def _record_in_worker(weights: dict[str, np.ndarray], env_id: str, max_steps: int, path: str, seed: int) -> float:
    """:func:`record_greedy_video` in the worker process, of weights sent as NumPy arrays."""
    import torch

    tensors = {name: torch.from_numpy(array) for name, array in weights.items()}
    return record_greedy_video(tensors, env_id, max_steps, path, seed)


class BackgroundVideos:
    """Record the periodic videos in one worker process while training goes on; ``out`` takes the warnings.

    Rendering and encoding an episode takes 1-5 s, which stopped training 16 times in a default run. Each request
    carries its episode's weights and seed, so training computes the same numbers with or without videos.
    """

    MAX_PENDING = 2  # videos queued or being made; one more makes training wait for the oldest

    def __init__(self, out: Out) -> None:
        self._out = out
        self._pool: Any = None
        self._pending: list[tuple[int, Any, Path]] = []  # (episode, future, video path)
        self.scores: dict[int, float] = {}  # the score of each episode's finished video
        self._inline = False  # True where no worker process can start

    def submit(self, episode: int, network: Network, env_id: str, max_steps: int, path: Path, seed: int) -> None:
        """Queue the video of ``network``'s greedy policy at ``episode``; return at once."""
        from concurrent.futures import BrokenExecutor

        # A copy now: the queue pickles it later, and training keeps changing the live weights.
        weights = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        if self._pool is None and not self._inline:
            self._start_worker()
        if self._inline:  # no worker process on this system: record here, between episodes
            try:
                self.scores[episode] = record_greedy_video(weights, env_id, max_steps, path, seed)
            except Exception as exc:
                self._warn(episode, exc)
            return
        try:
            # As NumPy arrays, which pickle by value: torch sends a tensor as a file descriptor that the worker
            # fetches from a thread of this one, which prints a traceback if the worker stops while fetching it.
            arrays = {name: tensor.numpy() for name, tensor in weights.items()}
            task = (_record_in_worker, arrays, env_id, max_steps, str(path), seed)
            future = self._pool.submit(processes.pool_task, *task)  # a SIGTERM ends the worker, not just the task
        except BrokenExecutor as exc:  # the worker died (killed, out of memory): the next video starts a new one
            self._warn(episode, exc)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            return
        self._pending.append((episode, future, Path(path)))
        # At most MAX_PENDING behind: with frequent videos and short episodes the queue would
        # otherwise grow without end, and the end of the run (or a Ctrl-C) would wait for all of it.
        self._collect(keep=self.MAX_PENDING)

    def _warn(self, episode: int, exc: BaseException) -> None:
        """One warning line for a video that could not be written; training goes on."""
        self._out(f"warning: could not write video for episode {episode}: {first_line(exc)}")

    def _start_worker(self) -> None:
        """Start the worker process, or fall back to recording inline where processes cannot start."""
        try:
            self._pool = processes.start_pool()
        except (OSError, NotImplementedError, ValueError) as exc:  # e.g. no semaphores in a sandbox
            self._out(f"warning: no video worker ({first_line(exc)}); videos are recorded between episodes")
            self._inline = True

    def _collect(self, keep: int) -> None:
        """Take in the finished videos, waiting (oldest first) until at most ``keep`` are still pending."""
        still = []
        for i, (episode, future, path) in enumerate(self._pending):
            if not future.done() and len(self._pending) - i <= keep:
                still.append((episode, future, path))
                continue
            try:
                self.scores[episode] = future.result()
            except Exception as exc:  # a missing encoder or a full disk must not end a training run
                self._warn(episode, exc)
        self._pending = still

    def close(self, wait: bool = True) -> None:
        """Wait for the videos still being made; with ``wait=False``, or at a Ctrl-C while waiting, stop at once.

        Stopping loses the unfinished videos, nothing else: it ends the worker and its ffmpeg, and removes their files.
        """
        if self._pool is None:
            return
        if not wait:
            self._stop_worker()
            return
        try:
            if self._pending:
                episodes = ", ".join(str(episode) for episode, _, _ in self._pending)
                plural = "s" if len(self._pending) > 1 else ""
                self._out(f"finishing the video{plural} of episode{plural} {episodes} ... (Ctrl-C to skip)")
                self._collect(keep=0)
            self._pool.shutdown(wait=True)
            self._pool = None
        except KeyboardInterrupt:
            self._stop_worker()
            raise

    def _stop_worker(self) -> None:
        """End the worker process and its ffmpeg now, then remove the temporary files of its unfinished videos."""
        pool, self._pool = self._pool, None
        processes.kill_pool(pool)  # both at once: once neither runs, nothing can write a temporary file again
        for folder in {path.parent for _, _, path in self._pending}:
            remove_stale_temp_files(folder)  # the worker's own, whose process has ended
        self._pending = []


class PeriodicVideos(Hook):
    """Film the greedy policy every ``every`` episodes into ``folder``, episode ``e`` from reset seed ``seed + e``.

    The end of the run, or an error, waits for the videos still being made; a second Ctrl-C stops the worker at once.
    """

    def __init__(
        self, network: Network, env_id: str, max_steps: int, every: int, seed: int, folder: Path, out: Out
    ) -> None:
        self.network, self.env_id, self.max_steps, self.every, self.seed = network, env_id, max_steps, every, seed
        self.folder = folder
        self.videos = BackgroundVideos(out)

    def on_episode(self, episode: Episode) -> None:
        e = episode.episode
        if e % self.every == 0:
            self.videos.submit(e, self.network, self.env_id, self.max_steps, video_path(e, self.folder), self.seed + e)

    def on_end(self) -> None:
        self.videos.close()  # last but for the table: everything else is saved, so a Ctrl-C now loses only videos

    def close(self, error: BaseException | None) -> None:
        self.videos.close(wait=not isinstance(error, KeyboardInterrupt))  # nothing left to do after on_end
