"""Filming during training: a greedy episode every ``--video-every`` episodes, recorded by a worker process.

The recording itself is :func:`dqnkit.report.videos.record_greedy_video`; the worker process is started,
stopped and killed by :mod:`dqnkit.run.processes`, the one place that handles child processes and signals.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dqnkit.errors import first_line
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
    """Record the periodic videos in one worker process while training goes on.

    Why: rendering and encoding one greedy episode takes 1-5 s. Inline, a default run of
    ``python main.py`` stopped training 16 times for that. The worker, a fresh (spawned)
    interpreter, works on another core. Each request carries a copy of the weights of its
    episode, so a video shows that episode's policy whatever training has done since, and
    the recording environment has its own seed, as before: training computes the same
    numbers with or without videos. A failed video is a warning, never the end of a run.
    Where no process can start (some sandboxes), it records between episodes, as before.

    Args:
        out: where warnings go.
    """

    MAX_PENDING = 2  # videos queued or being made; one more makes training wait for the oldest

    def __init__(self, out: Callable[[str], None]) -> None:
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
            # As NumPy arrays, which pickle by value: torch sends a tensor to another process as a file
            # descriptor that the worker fetches from a thread of this one, and a worker stopped while
            # fetching it makes that thread print a traceback.
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
        """Take in the finished videos, waiting (oldest first) until at most ``keep`` are still pending.

        A failed video is reported as a warning line.
        """
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

        Stopping ends the worker and its ffmpeg (:meth:`_stop_worker`) and removes the temporary
        files of the videos it was making; those videos are lost, nothing else.
        """
        if self._pool is None:
            return
        try:
            if wait and self._pending:
                episodes = ", ".join(str(episode) for episode, _, _ in self._pending)
                plural = "s" if len(self._pending) > 1 else ""
                self._out(f"finishing the video{plural} of episode{plural} {episodes} ... (Ctrl-C to skip)")
                self._collect(keep=0)
            if wait:
                self._pool.shutdown(wait=True)
                self._pool = None
                return
        except KeyboardInterrupt:
            self._stop_worker()
            raise
        self._stop_worker()

    def _stop_worker(self) -> None:
        """End the worker process and its ffmpeg now, then remove the temporary files of its unfinished videos.

        :func:`~dqnkit.run.processes.kill_pool` ends both at once, and the files are removed only once
        neither runs, so nothing can write one again afterwards.
        """
        pool, self._pool = self._pool, None
        processes.kill_pool(pool)
        for folder in {path.parent for _, _, path in self._pending}:
            remove_stale_temp_files(folder)  # the worker's own, whose process has ended
        self._pending = []


class PeriodicVideos(Hook):
    """Film the greedy policy every ``every`` episodes into ``folder`` (:class:`BackgroundVideos`).

    Episode ``e``'s video starts from environment seed ``seed + e``. The end of the run, or an error, waits
    for the videos still being made; a second Ctrl-C stops the worker at once.
    """

    def __init__(
        self,
        network: Network,
        env_id: str,
        max_steps: int,
        every: int,
        seed: int,
        folder: Path,
        out: Callable[[str], None],
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


