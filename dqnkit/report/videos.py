"""Videos of the greedy policy: recording, the worker process that records while training goes on, and playback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dqnkit.envs import final_outcome, make_env
from dqnkit.errors import first_line
from dqnkit.run.files import atomic_write, network_from_weights, remove_stale_temp_files, write_text
from dqnkit.run.hooks import Episode, Hook

if TYPE_CHECKING:
    from nnetwork import Network

VIDEO_DIR = Path("videos")


def record_video(
    policy: Callable[[np.ndarray], int], env_id: str, max_steps: int, path: str | os.PathLike, seed: int, fps: int = 50
) -> float:
    """Play one episode with ``policy`` (greedy) in a separate rendering environment; save an H.264 mp4.

    The rendering environment has its own seed, so recording never changes the
    training environment's random stream. Beside the video go a small animated WebP of it
    (``.webp``) and what happened (``.json``: score, length, outcome, on_pad), which the
    training-progress table shows. Returns the episode's score.
    """
    import imageio.v2 as imageio

    env = make_env(env_id, max_steps, render_mode="rgb_array")
    try:
        state, _ = env.reset(seed=seed)
        frames = [env.render()]
        score, done, length = 0.0, False, 0
        while not done:
            state, reward, terminated, truncated, _ = env.step(policy(state))
            score += float(reward)
            length += 1
            frames.append(env.render())
            done = terminated or truncated
        outcome, landed_on_pad = final_outcome(env, terminated)
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
    path = Path(path)
    save_thumbnail(frames, path.with_suffix(".webp"), fps)
    summary = {"score": score, "length": length, "outcome": outcome, "on_pad": landed_on_pad}
    write_text(path.with_suffix(".json"), json.dumps(summary) + "\n")
    return score


THUMBNAIL_SIZE = (180, 120)  # a third of the 600x400 frames: the lander and the flags stay visible
THUMBNAIL_EVERY = 4  # every 4th frame, shown at the real speed: a few hundred KB at most


def save_thumbnail(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: int = 50) -> Path:
    """A small animated WebP of ``frames`` (every 4th, 180x120, at the real speed), written atomically."""
    from PIL import Image

    small = [
        Image.fromarray(frame).resize(THUMBNAIL_SIZE, Image.BILINEAR)
        for i, frame in enumerate(frames)
        if i % THUMBNAIL_EVERY == 0
    ]
    if not small:
        raise ValueError(f"no frames for {path}")
    ms_per_frame = round(1000 * THUMBNAIL_EVERY / fps)

    def write(tmp: str) -> None:
        small[0].save(tmp, format="WEBP", save_all=True, append_images=small[1:], duration=ms_per_frame, loop=0)

    atomic_write(path, write, suffix=".webp")
    return Path(path)


def greedy_policy(net: Network) -> Callable[[np.ndarray], int]:
    """The greedy policy ``argmax_a Q(s, a)`` of a CPU network (``nnetwork.Network`` or ``DuelingNetwork``)."""
    import torch

    def policy(state: np.ndarray) -> int:
        with torch.inference_mode():
            return int(net(torch.from_numpy(np.asarray(state, dtype=np.float32))).argmax())

    return policy


def record_greedy_video(weights: dict, env_id: str, max_steps: int, path: str | os.PathLike, seed: int) -> float:
    """:func:`record_video` of the greedy policy of ``weights`` (a network's ``state_dict``); returns the score."""
    return record_video(greedy_policy(network_from_weights(weights, path)), env_id, max_steps, path, seed)


def _worker_signals() -> None:
    """In the video worker: Ctrl-C is for the training process; SIGTERM ends the video in hand.

    SIGTERM (from outside: the training process stops its worker with SIGKILL, see
    :meth:`BackgroundVideos._stop_worker`) raises SystemExit: imageio then kills its ffmpeg and
    :func:`~dqnkit.run.files.atomic_write` removes the temporary file.
    """

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):  # a closed terminal: the training process saves, then waits for these videos
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop)


def _worker_setup() -> None:
    """In the video worker, first: a process group of its own, which its ffmpeg joins; then :func:`_worker_signals`.

    imageio-ffmpeg starts each ffmpeg in a group of its own, so that the terminal's Ctrl-C cannot
    reach it; but then nothing ends it with the worker, and an ffmpeg that outlives a stopped
    worker can create a video's temporary file after it was removed. In the worker's group it is
    still out of the terminal's reach, and one signal to the group ends both.
    """
    if hasattr(os, "setpgrp"):
        os.setpgrp()
        os.environ["IMAGEIO_FFMPEG_NO_PREVENT_SIGINT"] = "1"  # imageio-ffmpeg: no group of its own for ffmpeg
    _worker_signals()


def _kill_process_group(process: Any, timeout: float = 1.0) -> None:
    """SIGKILL ``process`` (a :mod:`multiprocessing` process that leads its group) and every process of its
    group, then wait, at most ``timeout`` seconds, until none of them runs any more.

    A process that has ended but not yet been reaped (a zombie) holds no files and runs nothing.
    """
    group = process.pid
    deadline = time.monotonic() + timeout
    _kill_group(group)  # all at once: no process of the group can fork its way out
    process.kill()  # where it has no group (yet; no killpg on Windows); nothing if it has ended
    process.join(timeout)
    while _group_runs(group) and time.monotonic() < deadline:
        _kill_group(group)
        time.sleep(0.005)


def _kill_group(group: int) -> None:
    """SIGKILL every process of process group ``group``, if there is one."""
    with contextlib.suppress(ProcessLookupError, PermissionError, AttributeError):
        os.killpg(group, signal.SIGKILL)


def _group_runs(group: int) -> bool:
    """Whether a process of process group ``group`` still runs (a zombie has ended)."""
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError, AttributeError):
        return False
    proc = Path("/proc")
    if not proc.is_dir():  # no /proc to tell a zombie from a live process: alive while it exists
        return True
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # "pid (command) state ppid pgrp ...": the command may hold spaces and parentheses.
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == group and state not in ("Z", "X"):
                return True
    return False


def _record_in_worker(weights: dict[str, np.ndarray], env_id: str, max_steps: int, path: str, seed: int) -> float:
    """:func:`record_greedy_video` in the worker process, of weights sent as NumPy arrays.

    SIGTERM ends it once the video in hand is cleaned up.
    """
    import torch

    try:
        tensors = {name: torch.from_numpy(array) for name, array in weights.items()}
        return record_greedy_video(tensors, env_id, max_steps, path, seed)
    except SystemExit as stop:
        # The pool would report the SystemExit and take the next queued video; the process must end instead.
        os._exit(int(stop.code or 1))


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
            future = self._pool.submit(_record_in_worker, arrays, env_id, max_steps, str(path), seed)
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
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        try:
            # spawn, not fork: a forked copy of a process that runs torch threads can deadlock.
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(1, mp_context=context, initializer=_worker_setup)
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

        One SIGKILL to the worker's process group (:func:`_worker_setup`) ends both at once, and
        the files are removed only once neither runs, so nothing can write one again afterwards.
        Not SIGTERM, which the worker turns into SystemExit: one that lands inside the start of an
        ffmpeg leaves that ffmpeg running on, unseen, and one that lands in a callback that ignores
        exceptions (an at-fork handler) is lost, and the worker goes on.
        """
        pool, self._pool = self._pool, None
        # Python 3.14 has pool.terminate_workers(); before it, the processes are only reachable here.
        workers = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            _kill_process_group(worker)
        for folder in {path.parent for _, _, path in self._pending}:
            remove_stale_temp_files(folder)  # the worker's own, whose process has ended
        self._pending = []


class PeriodicVideos(Hook):
    """Film the greedy policy every ``every`` episodes into ``folder`` (:class:`BackgroundVideos`).

    The video of episode ``e`` starts from environment seed ``seed + e``. At the end of the run
    it waits for the videos still being made; after an error it waits too, but a second
    Ctrl-C stops the worker at once.
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


def video_path(episode: int, video_dir: str | os.PathLike = VIDEO_DIR) -> Path:
    """``<video_dir>/episode_0050.mp4`` for episode 50."""
    return Path(video_dir) / f"episode_{episode:04d}.mp4"


def find_video(episode: int, video_dir: str | os.PathLike = VIDEO_DIR) -> Path:
    """The newest saved video of ``episode``: training runs keep theirs in ``videos/<run name>/``."""
    name = video_path(episode, ".").name
    found = sorted(Path(video_dir).glob(f"**/{name}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no video of episode {episode} under {video_dir}/; one is written every --video-every")
    return found[-1]


def show_video(path_or_episode: str | os.PathLike | int, video_dir: str | os.PathLike = VIDEO_DIR):
    """Return an object that plays a saved video inline in Jupyter.

    ``show_video(50)`` plays the newest ``videos/**/episode_0050.mp4``; a path plays that
    file. The video is embedded (base64), so the notebook keeps it when saved.
    """
    from IPython.display import Video

    if isinstance(path_or_episode, int):
        path = find_video(path_or_episode, video_dir)
    else:
        path = Path(path_or_episode)
    if not path.is_file():
        raise FileNotFoundError(f"no video at {path}")
    return Video(str(path), embed=True, mimetype="video/mp4", html_attributes="controls loop")


def latest_video_folder(video_dir: str | os.PathLike = VIDEO_DIR) -> Path:
    """The folder of the run that saved a video last (``videos/<run name>``)."""
    root = Path(video_dir)
    runs = [p for p in root.glob("*/") if any(p.glob("episode_*.mp4"))]
    if not runs:
        raise FileNotFoundError(f"no run under {root}/ has saved a video yet")
    return max(runs, key=lambda p: max(v.stat().st_mtime for v in p.glob("episode_*.mp4")))


def show_videos(run: str | os.PathLike | None = None, video_dir: str | os.PathLike = VIDEO_DIR):
    """Return one Jupyter object playing every video of a run in episode order, each captioned.

    ``run`` is a run name (or its folder); by default the run that saved a video last.
    """
    import base64
    import html

    from IPython.display import HTML

    root = Path(video_dir)
    if run is None:
        folder = latest_video_folder(root)
    else:
        folder = Path(run) if Path(run).is_dir() else root / str(run)
    videos = sorted(folder.glob("episode_*.mp4"))
    if not videos:
        raise FileNotFoundError(f"no videos in {folder}/")
    cells = []
    for v in videos:
        data = base64.b64encode(v.read_bytes()).decode("ascii")
        episode = int(v.stem.split("_")[1])
        cells.append(
            '<figure style="display:inline-block;margin:4px">'
            f'<video controls loop muted width="300" src="data:video/mp4;base64,{data}"></video>'
            f"<figcaption>Episode {episode}</figcaption></figure>"
        )
    return HTML(f"<div><p>{html.escape(folder.name)}</p>{''.join(cells)}</div>")
