"""Videos of the greedy policy: recording one, and playing them back (the filming during training: ``filming.py``)."""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Callable, Iterable
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dqnkit.envs import final_outcome, make_env
from dqnkit.run.files import atomic_write, network_from_weights, write_text

if TYPE_CHECKING:
    from nnetwork import Network

VIDEO_DIR = Path("videos")
FPS = 50  # LunarLander's own frame rate: the videos play at the real speed
Policy = Callable[[np.ndarray], int]  # a state to an action


def record_video(policy: Policy, env_id: str, max_steps: int, path: str | os.PathLike, seed: int) -> float:
    """Play one episode with ``policy`` (greedy) in a rendering environment of its own seed; save an H.264 mp4.

    Training's random stream never changes. Beside the video go an animated WebP of it (``.webp``) and what
    happened (``.json``: score, length, outcome, on_pad) for the training-progress table. Returns the score.
    """
    import imageio.v2 as imageio

    env = make_env(env_id, max_steps, render_mode="rgb_array")
    try:
        state, _ = env.reset(seed=seed)
        frames = [env.render()]
        score, length, terminated, truncated = 0.0, 0, False, False
        while not (terminated or truncated):
            state, reward, terminated, truncated, _ = env.step(policy(state))
            score += float(reward)
            length += 1
            frames.append(env.render())
        outcome, landed_on_pad = final_outcome(env, terminated)
    finally:
        env.close()

    # yuv420p and even frame sizes let every browser play the file; faststart puts the index first,
    # so a notebook can start playing before it has read it all.
    mp4 = {"codec": "libx264", "pixelformat": "yuv420p", "macro_block_size": 2, "ffmpeg_log_level": "error"}

    def write(tmp: str) -> None:
        with imageio.get_writer(tmp, format="FFMPEG", fps=FPS, output_params=["-movflags", "+faststart"], **mp4) as out:
            for frame in frames:
                out.append_data(frame)

    atomic_write(path, write, suffix=".mp4")
    path = Path(path)
    save_thumbnail(frames, path.with_suffix(".webp"))
    summary = {"score": score, "length": length, "outcome": outcome, "on_pad": landed_on_pad}
    write_text(path.with_suffix(".json"), json.dumps(summary) + "\n")
    return score


THUMBNAIL_SIZE = (180, 120)  # a third of the 600x400 frames: the lander and the flags stay visible
THUMBNAIL_EVERY = 4  # every 4th frame, shown at the real speed: a few hundred KB at most


def save_thumbnail(frames: Iterable[np.ndarray], path: str | os.PathLike) -> Path:
    """A small animated WebP of ``frames`` (every 4th, 180x120, at the real speed), written atomically."""
    from PIL import Image

    kept = islice(frames, 0, None, THUMBNAIL_EVERY)
    small = [Image.fromarray(frame).resize(THUMBNAIL_SIZE, Image.BILINEAR) for frame in kept]
    if not small:
        raise ValueError(f"no frames for {path}")
    ms_per_frame = round(1000 * THUMBNAIL_EVERY / FPS)

    def write(tmp: str) -> None:
        small[0].save(tmp, format="WEBP", save_all=True, append_images=small[1:], duration=ms_per_frame, loop=0)

    atomic_write(path, write, suffix=".webp")
    return Path(path)


def greedy_policy(net: Network) -> Policy:
    """The greedy policy ``argmax_a Q(s, a)`` of a CPU network (``nnetwork.Network`` or ``DuelingNetwork``)."""
    import torch

    def policy(state: np.ndarray) -> int:
        with torch.inference_mode():
            return int(net(torch.from_numpy(np.asarray(state, dtype=np.float32))).argmax())

    return policy


def record_greedy_video(weights: dict, env_id: str, max_steps: int, path: str | os.PathLike, seed: int) -> float:
    """:func:`record_video` of the greedy policy of ``weights`` (a network's ``state_dict``); returns the score."""
    return record_video(greedy_policy(network_from_weights(weights, path)), env_id, max_steps, path, seed)


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
    """A Jupyter object playing a saved video, embedded (base64) so that a saved notebook keeps it.

    ``show_video(50)`` plays the newest ``videos/**/episode_0050.mp4``; a path plays that file.
    """
    from IPython.display import Video

    path = find_video(path_or_episode, video_dir) if isinstance(path_or_episode, int) else Path(path_or_episode)
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
    """One Jupyter object playing every video of a run in episode order, each captioned.

    ``run`` is a run name (or its folder); by default the run that saved a video last.
    """
    from IPython.display import HTML

    if run is None:
        folder = latest_video_folder(video_dir)
    else:
        folder = Path(run) if Path(run).is_dir() else Path(video_dir) / str(run)
    videos = sorted(folder.glob("episode_*.mp4"))
    if not videos:
        raise FileNotFoundError(f"no videos in {folder}/")
    cells = []
    for v in videos:
        data = base64.b64encode(v.read_bytes()).decode("ascii")
        cells.append(
            '<figure style="display:inline-block;margin:4px">'
            f'<video controls loop muted width="300" src="data:video/mp4;base64,{data}"></video>'
            f"<figcaption>Episode {int(v.stem.split('_')[1])}</figcaption></figure>"
        )
    return HTML(f"<div><p>{html.escape(folder.name)}</p>{''.join(cells)}</div>")
