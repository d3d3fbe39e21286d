"""Seeing the agent learn: the console output, the learning curve, TensorBoard, videos, separate run folders."""

from __future__ import annotations

import csv
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

import main
from dqnkit.report.logs import METRIC_FIELDS, learning_curve_figure, plot_learning_curve, read_metrics, solved_at
from dqnkit.run.paths import new_run_dir

TINY = ["--max-steps", "60", "--minibatch-size", "16", "--replay-buffer-size", "2000"]


def _run(root: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(root / "main.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


# ---------------------------------------------------------------- learning curve


def test_solved_at_by_hand() -> None:
    average = np.array([0.0] * 99 + [150.0, 199.9, 200.0, 250.0, 190.0])
    assert solved_at(average) == 102  # the first full window at or above 200 ends at episode 102
    assert solved_at(np.full(99, 300.0)) is None  # no full 100-episode window yet
    assert solved_at(np.full(150, 300.0), target_score=400) is None


def _write_csv(path: Path, n: int) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
        writer.writeheader()
        for i in range(1, n + 1):
            score = -200 + 2.5 * i
            writer.writerow(
                {
                    "episode": i,
                    "total_steps": 100 * i,
                    "score": score,
                    "length": 100,
                    "epsilon": 0.995 ** (i - 1),
                    "average_100": score - 50,
                    "wall_seconds": i / 10,
                }
            )


def test_plot_is_a_png_of_the_expected_size(tmp_path: Path) -> None:
    _write_csv(tmp_path / "metrics.csv", 250)
    png = plot_learning_curve(tmp_path / "metrics.csv")
    assert png == tmp_path / "learning_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imageio.imread(png)
    assert image.shape[:2] == (500, 900)
    assert image[..., :3].std() > 10  # something was drawn


def _inside(box, points: np.ndarray) -> np.ndarray:
    """Which display-space ``points`` fall in the bounding ``box``."""
    x, y = points[:, 0], points[:, 1]
    return (box.x0 <= x) & (x <= box.x1) & (box.y0 <= y) & (y <= box.y1)


def test_the_solved_label_and_the_legend_hide_no_curve(tmp_path: Path) -> None:
    """Issue item 12: the label sat on the average curve, and the legend on the end of the epsilon curve."""
    _write_csv(tmp_path / "metrics.csv", 250)  # the average reaches 200 at episode 180
    m = read_metrics(tmp_path / "metrics.csv")
    fig = learning_curve_figure(m, 200.0, "a run")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax, eps_ax = fig.axes
    (label,) = [t for t in ax.texts if t.get_text() == "solved at episode 180"]
    box = label.get_window_extent(renderer)
    frame = ax.get_window_extent(renderer)
    assert frame.y1 - 30 < box.y0 < box.y1 <= frame.y1  # at the top of the axes
    assert box.x1 <= ax.transData.transform((180, 0))[0]  # beside the line, on the side with room
    episodes = np.linspace(1, 250, 5000)  # the curves as drawn: straight lines between the points
    average = ax.transData.transform(np.column_stack([episodes, np.interp(episodes, m["episode"], m["average_100"])]))
    assert not _inside(box, average).any(), "the label covers the average curve"
    (legend,) = fig.legends
    where = legend.get_window_extent(renderer)
    assert not where.overlaps(frame), "the legend sits on the axes"
    epsilon = eps_ax.transData.transform(np.column_stack([m["episode"], m["epsilon"]]))
    assert not _inside(where, epsilon).any() and not _inside(box, epsilon).any()


def test_plot_flag_draws_an_existing_csv(root: Path, tmp_path: Path) -> None:
    _write_csv(tmp_path / "metrics.csv", 120)
    proc = _run(root, tmp_path, "--plot", "metrics.csv")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "learning_curve.png").is_file()
    bad = _run(root, tmp_path, "--plot", "nothing.csv")
    assert bad.returncode == 1 and bad.stderr.strip() == "main.py: error: nothing.csv: no such file"


def test_training_run_leaves_a_plot(tmp_path: Path) -> None:
    cfg = main.Config(episodes=3, max_steps=40, minibatch_size=16, video=False, checkpoint="w.pth")
    result = main.train(cfg, out=lambda _: None, root=tmp_path)
    image = imageio.imread(result.run_dir / "learning_curve.png")
    assert image.shape[:2] == (500, 900)
    assert sorted(p.name for p in result.run_dir.iterdir()) == [
        ".lock",  # empty; locked while a process trains in the folder
        "config.json",
        "last.pth",
        "learning_curve.png",
        "metrics.csv",
        "training_state.pth",
    ]


# ---------------------------------------------------------------- console


def test_console_is_plain_lines_when_not_a_terminal(root: Path, tmp_path: Path) -> None:
    proc = _run(root, tmp_path, "--episodes", "6", "--log-every", "2", "--no-video", *TINY)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("episode")]
    assert [line.split()[1] for line in lines] == ["2", "4", "6"]
    assert "\r" not in proc.stdout
    quiet = _run(root, tmp_path, "--episodes", "6", "--log-every", "2", "--no-video", "--quiet", *TINY)
    assert quiet.returncode == 0
    assert not [line for line in quiet.stdout.splitlines() if line.startswith("episode")]
    assert "\r" not in quiet.stdout


def _run_in_pty(root: Path, cwd: Path, *args: str) -> str:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    proc = subprocess.Popen(
        [sys.executable, str(root / "main.py"), *args], cwd=cwd, stdout=follower, stderr=follower, close_fds=True
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(leader)
    assert proc.returncode == 0
    return b"".join(chunks).decode(errors="replace")


def test_console_is_a_live_bar_in_a_terminal(root: Path, tmp_path: Path) -> None:
    screen = _run_in_pty(root, tmp_path, "--episodes", "8", "--log-every", "2", "--no-video", *TINY)
    assert re.search(r"\r(?!\n)", screen), screen  # the bar redraws itself in place
    assert "avg100" in screen and "eps" in screen and "steps/s" in screen
    assert "episode     2" not in screen  # no plain console lines under the bar
    assert "learning curve:" in screen  # messages still get through
    # The run may stop at the target score: episodes against the most it may play, and no time left,
    # which for 2,000 episodes said "06:18 left" to a run that solved 40 s later.
    assert "episode 8 of at most 8" in screen and "8/8" not in screen
    assert not re.search(r"<\d\d:\d\d", screen), screen


def test_console_bar_shows_time_left_when_every_episode_will_be_played(root: Path, tmp_path: Path) -> None:
    screen = _run_in_pty(root, tmp_path, "--episodes", "8", "--keep-training", "--no-video", *TINY)
    assert "8/8" in screen and re.search(r"<\d\d:\d\d", screen), screen


# ---------------------------------------------------------------- TensorBoard


def test_tensorboard_only_when_asked(root: Path, tmp_path: Path) -> None:
    code = (
        "import sys, main\n"
        "cfg = main.Config(episodes=3, max_steps=40, minibatch_size=16, video=False, tensorboard={tb})\n"
        "r = main.train(cfg, out=lambda _: None)\n"
        "print('torch.utils.tensorboard' in sys.modules, r.run_dir)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    off = subprocess.run(
        [sys.executable, "-c", code.format(tb=False)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert off.returncode == 0, off.stderr
    assert off.stdout.split()[0] == "False"
    on = subprocess.run(
        [sys.executable, "-c", code.format(tb=True)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert on.returncode == 0, on.stderr
    imported, run_dir = on.stdout.split()
    assert imported == "True"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/score", "train/average_100", "train/epsilon", "train/length"} <= tags
    assert [e.step for e in events.Scalars("train/score")] == [1, 2, 3]


# ---------------------------------------------------------------- videos


def test_every_video_is_browser_ready_h264(tmp_path: Path) -> None:
    cfg = main.Config(episodes=4, max_steps=50, minibatch_size=16, video_every=2, checkpoint="w.pth")
    result = main.train(cfg, out=lambda _: None, root=tmp_path)
    videos = sorted((tmp_path / "videos" / result.run_dir.name).glob("*.mp4"))
    assert [v.name for v in videos] == ["episode_0002.mp4", "episode_0004.mp4"]
    for video in videos:
        with imageio.get_reader(video, format="FFMPEG") as reader:
            meta = reader.get_meta_data()
            frames = list(reader.iter_data())
        assert meta["codec"] == "h264"
        assert meta["pix_fmt"].startswith("yuv420p")
        assert meta["size"] == (600, 400) and all(s % 2 == 0 for s in meta["size"])
        assert 2 <= len(frames) <= 51  # the reset frame plus at most max_steps steps
        assert frames[0].shape == (400, 600, 3)
        assert frames[0].std() > 5, f"{video.name} starts with a blank frame"
    gallery = main.show_videos(video_dir=tmp_path / "videos")._repr_html_()
    assert gallery.count("<video") == 2 and gallery.count("data:video/mp4;base64,") == 2
    assert gallery.index("Episode 2") < gallery.index("Episode 4")


# ---------------------------------------------------------------- runs kept apart


def test_run_folders_never_collide(tmp_path: Path) -> None:
    first = new_run_dir(tmp_path, "LunarLander-v3__seed0__20260101-000000")
    second = new_run_dir(tmp_path, "LunarLander-v3__seed0__20260101-000000")
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name.endswith("-2")


def test_two_runs_started_together_keep_their_files_apart(root: Path, tmp_path: Path) -> None:
    args = [sys.executable, str(root / "main.py"), "--episodes", "4", "--video-every", "2", "--seed", "3", *TINY]
    procs = [
        subprocess.Popen(
            [*args, "--checkpoint", f"w{i}.pth"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    run_dirs = sorted((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 2
    for run_dir in run_dirs:
        with open(run_dir / "metrics.csv") as fh:
            assert [int(r["episode"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4]
        videos = sorted(p.name for p in (tmp_path / "videos" / run_dir.name).glob("*.mp4"))
        assert videos == ["episode_0002.mp4", "episode_0004.mp4"]


def test_the_best_evaluation_is_starred(tmp_path: Path) -> None:
    """Evaluations scoring 10, 30 and 30: the star sits on the first 30, the one best.pth holds."""
    _write_csv(tmp_path / "metrics.csv", 150)
    m = read_metrics(tmp_path / "metrics.csv")
    m["eval_score"] = np.full(150, np.nan)
    m["eval_score"][[49, 99, 149]] = [10.0, 30.0, 30.0]
    ax = learning_curve_figure(m, 200.0, "a run").axes[0]
    (star,) = [line for line in ax.get_lines() if line.get_label().startswith("best evaluation")]
    assert star.get_label() == "best evaluation, best.pth (30.0, episode 100)"
    assert list(star.get_xdata()) == [100] and list(star.get_ydata()) == [30.0]
    _write_csv(tmp_path / "plain.csv", 150)  # no evaluations: no star
    plain = learning_curve_figure(read_metrics(tmp_path / "plain.csv"), 200.0, "a run").axes[0]
    assert not [line for line in plain.get_lines() if line.get_label().startswith("best evaluation")]
