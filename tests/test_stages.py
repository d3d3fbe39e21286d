"""The training-progress table: stage words from hand-made measurements, thumbnails, Markdown and HTML."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from PIL import Image

from dqnkit.errors import UserError
from dqnkit.report.logs import METRIC_FIELDS
from dqnkit.report.progress import describe, markdown_table, run_stages, select, write_progress, write_thumbnail


@pytest.mark.parametrize(
    ("landed", "on_pad", "timed_out", "length", "expected"),
    [
        (0.02, 0.0, 0.0, 90.0, "crashes or flies off"),
        (0.10, 0.05, 0.6, 900.0, "hovers: 60% of its episodes reach the time limit"),
        (0.40, 0.30, 0.1, 300.0, "first landings among many crashes"),
        (0.90, 0.85, 0.05, 600.0, "lands, but slowly (mean 600 steps)"),
        (0.95, 0.90, 0.0, 250.0, "lands fast on the pad (mean 250 steps)"),
        (0.95, 0.50, 0.0, 250.0, "often beside the pad"),
    ],
)
def test_stage_words_follow_the_measurements(
    landed: float, on_pad: float, timed_out: float, length: float, expected: str
) -> None:
    text = describe(landed, on_pad, timed_out, length, None)
    assert expected in text
    assert f"lands in {landed:.0%} of its training episodes ({on_pad:.0%} on the pad)" in text


def test_the_filmed_episode_is_described_too() -> None:
    text = describe(0.9, 0.9, 0.0, 200.0, {"score": 250.0, "length": 212, "outcome": "landed", "on_pad": True})
    assert text.endswith("Filmed without exploring: landed after 212 steps")


def test_select_keeps_the_first_and_the_last() -> None:
    stages = list(range(16))
    assert select(stages, 4) == [0, 5, 10, 15]
    assert select(stages, 20) == stages


def _video(path: Path, frames: int) -> Path:
    """A small mp4 whose frames are plain colours: 600x400 at 50 fps, like the recorded episodes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=50, codec="libx264", macro_block_size=2, ffmpeg_log_level="error") as writer:
        for i in range(frames):
            writer.append_data(np.full((400, 600, 3), (i * 5) % 256, dtype=np.uint8))
    return path


def test_thumbnail_is_a_small_animated_webp(tmp_path: Path) -> None:
    thumbnail = write_thumbnail(_video(tmp_path / "v.mp4", 40), tmp_path / "v.webp")
    with Image.open(thumbnail) as image:
        assert image.format == "WEBP" and image.size == (180, 120)
        assert image.n_frames == 10  # every 4th of 40 frames
    assert thumbnail.stat().st_size < 300_000
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def _run(tmp_path: Path) -> tuple[Path, Path]:
    """A run of 6 episodes filmed at 3 and 6: crashes first, then landings on the pad."""
    run, videos = tmp_path / "runs" / "r", tmp_path / "videos" / "r"
    run.mkdir(parents=True)
    rows = []
    for episode in range(1, 7):
        early = episode <= 3
        rows.append(
            {
                "episode": episode,
                "total_steps": 100 * episode,
                "score": -150.0 if early else 240.0,
                "length": 80 if early else 220,
                "epsilon": 0.5,
                "average_100": -150.0 if early else 45.0,
                "wall_seconds": float(episode),
                "outcome": "crashed" if early else "landed",
                "on_pad": 0 if early else 1,
            }
        )
    with open(run / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    for episode in (3, 6):
        _video(videos / f"episode_{episode:04d}.mp4", 8)
    filmed = {"score": 251.5, "length": 230, "outcome": "landed", "on_pad": True}
    (videos / "episode_0006.json").write_text(json.dumps(filmed))
    return run, videos


def test_stages_of_a_hand_made_run(tmp_path: Path) -> None:
    run, videos = _run(tmp_path)
    first, second = run_stages(run, videos)
    assert (first.first, first.last, second.first, second.last) == (1, 3, 4, 6)
    assert (first.landed, first.timed_out, first.mean_length, first.average) == (0.0, 0.0, 80.0, -150.0)
    assert (second.landed, second.on_pad, second.mean_length, second.average) == (1.0, 1.0, 220.0, 45.0)
    assert first.greedy is None and second.greedy["score"] == 251.5
    assert "crashes or flies off" in first.words and "lands fast on the pad" in second.words


def test_progress_files_link_thumbnails_and_videos(tmp_path: Path) -> None:
    run, videos = _run(tmp_path)
    md, page = write_progress(run, videos)
    text = md.read_text()
    assert "| **4-6** | 45.0 | 251.5 |" in text and "| **1-3** | -150.0 | - |" in text
    assert "[![episode 6](../../videos/r/episode_0006.webp)](../../videos/r/episode_0006.mp4)" in text
    assert (videos / "episode_0006.webp").is_file() and (videos / "episode_0003.webp").is_file()
    assert '<a href="../../videos/r/episode_0003.mp4"><img src="../../videos/r/episode_0003.webp"' in page.read_text()
    assert markdown_table(run_stages(run, videos), run).count("\n") == 4  # header, rule, two rows


def test_a_run_without_outcomes_is_refused_in_one_line(tmp_path: Path) -> None:
    run, videos = _run(tmp_path)
    lines = (run / "metrics.csv").read_text().splitlines()
    (run / "metrics.csv").write_text("\n".join(",".join(line.split(",")[:7]) for line in lines) + "\n")
    with pytest.raises(UserError, match="no outcome column") as info:
        run_stages(run, videos)
    assert "\n" not in str(info.value)
