"""The training-progress table: one row per filmed stage of a run, the episodes since the previous video (1-50, ...).

``python main.py --progress RUN`` writes it into the run's folder; :func:`show_progress` shows it in Jupyter.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dqnkit.envs import GENERIC_OUTCOMES
from dqnkit.errors import UserError, first_line
from dqnkit.report.logs import read_metrics
from dqnkit.report.videos import THUMBNAIL_SIZE, VIDEO_DIR, latest_video_folder, save_thumbnail
from dqnkit.run.files import RUNS_DIR, write_text
from dqnkit.run.hooks import Hook


@dataclass
class Stage:
    """One row of the table: the episodes ``first``..``last`` and the video filmed at ``last``."""

    first: int
    last: int
    average: float  # the 100-episode training average at episode ``last``
    greedy: dict | None  # the filmed greedy episode: score, length, outcome, on_pad (None if not recorded)
    landed: float  # share of the range's training episodes that came to rest
    on_pad: float  # share that came to rest between the flags
    timed_out: float  # share cut off by the time limit (the lander hovered)
    mean_length: float
    video: Path
    thumbnail: Path | None = None
    lander: bool = True  # LunarLander's outcomes; False for another environment (terminated or timed out)

    @property
    def words(self) -> str:
        return describe(self.landed, self.on_pad, self.timed_out, self.mean_length, self.greedy, self.lander)


def describe(
    landed: float, on_pad: float, timed_out: float, mean_length: float, greedy: dict | None, lander: bool = True
) -> str:
    """A sentence for a stage: crashes, hovers, lands slowly, or lands fast on the pad, with its figures.

    For an environment other than LunarLander (``lander`` False) only what every environment
    says: how many episodes ended before the time limit, and their length.
    """
    share = f"lands in {landed:.0%} of its training episodes ({on_pad:.0%} on the pad)"
    if not lander:
        text = f"{1 - timed_out:.0%} of its training episodes end before the time limit (mean {mean_length:.0f} steps)"
    elif timed_out >= 0.3:
        text = f"hovers: {timed_out:.0%} of its episodes reach the time limit; {share}"
    elif landed < 0.2:
        text = f"crashes or flies off: it is still mostly exploring; {share}"
    elif landed < 0.6:
        text = f"first landings among many crashes; {share}"
    elif mean_length > 450:
        text = f"lands, but slowly (mean {mean_length:.0f} steps); {share}"
    elif on_pad >= 0.8 * landed:
        text = f"lands fast on the pad (mean {mean_length:.0f} steps); {share}"
    else:
        text = f"lands fast (mean {mean_length:.0f} steps), often beside the pad; {share}"
    if greedy is not None:
        text += f". Filmed without exploring: {greedy['outcome']} after {greedy['length']} steps"
    return text


def run_stages(run_dir: str | os.PathLike, video_dir: str | os.PathLike | None = None) -> list[Stage]:
    """The stages of the run in ``run_dir`` (its ``metrics.csv``) and its videos (``videos/<run name>/``)."""
    run_dir = Path(run_dir)
    videos = Path(video_dir) if video_dir is not None else VIDEO_DIR / run_dir.name
    m = read_metrics(run_dir / "metrics.csv")
    if "outcome" not in m:  # the words need every episode's outcome, which older runs did not record
        raise UserError(
            f"{run_dir}/metrics.csv has no outcome column; the progress table needs a run from this version"
        )
    filmed = sorted(int(p.stem.split("_")[1]) for p in videos.glob("episode_*.mp4"))
    if not filmed:
        raise UserError(f"no videos of {run_dir.name} in {videos}/; a run films one every --video-every episodes")
    stages, first, lander = [], 1, not set(m["outcome"]) <= GENERIC_OUTCOMES
    for last in filmed:
        window = (m["episode"] >= first) & (m["episode"] <= last)
        if not window.any():
            continue
        outcomes, at_last = m["outcome"][window], m["episode"] == last
        landed, timed_out = float(np.mean(outcomes == "landed")), float(np.mean(outcomes == "timed out"))
        on_pad, length = float(np.mean(m["on_pad"][window])), float(np.mean(m["length"][window]))
        average = float(m["average_100"][at_last][0]) if at_last.any() else float("nan")
        video = videos / f"episode_{last:04d}.mp4"
        try:  # what the video worker wrote of the filmed episode
            greedy = json.loads(video.with_suffix(".json").read_text())
            float(greedy["score"]), int(greedy["length"]), str(greedy["outcome"])  # noqa: B018 - shape check
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):  # missing, half-written or foreign
            greedy = None
        stages.append(Stage(first, last, average, greedy, landed, on_pad, timed_out, length, video, lander=lander))
        first = last + 1
    return stages


def write_thumbnail(video: str | os.PathLike, thumbnail: str | os.PathLike) -> Path:
    """The animated WebP of a saved video (for videos recorded before thumbnails were made with them)."""
    import imageio.v2 as imageio

    with imageio.get_reader(str(video)) as reader:
        return save_thumbnail(reader, thumbnail)


def add_thumbnails(stages: list[Stage]) -> None:
    """Give each stage the WebP beside its video, made once (and again only if the video is newer)."""
    for stage in stages:
        thumbnail = stage.video.with_suffix(".webp")
        try:
            if not thumbnail.is_file() or thumbnail.stat().st_mtime < stage.video.stat().st_mtime:
                write_thumbnail(stage.video, thumbnail)
        except Exception:  # an empty or damaged video (imageio raises many kinds): its row links it, no picture
            continue
        stage.thumbnail = thumbnail


def _score(stage: Stage) -> str:
    return f"{stage.greedy['score']:.1f}" if stage.greedy is not None else "-"


def markdown_table(stages: list[Stage], relative_to: str | os.PathLike) -> str:
    """The table in Markdown, linking thumbnails and videos relative to the folder the file will be in."""
    rows = ["| episodes | training average | greedy score | what the agent does | video |", "|---|---|---|---|---|"]
    for s in stages:
        video = os.path.relpath(s.video, relative_to)
        thumbnail = os.path.relpath(s.thumbnail, relative_to) if s.thumbnail else None
        cell = f"[![episode {s.last}]({thumbnail})]({video})" if thumbnail else f"[episode {s.last}]({video})"
        rows.append(f"| **{s.first}-{s.last}** | {s.average:.1f} | {_score(s)} | {s.words} | {cell} |")
    return "\n".join(rows) + "\n"


def html_table(stages: list[Stage], embed: bool = False, relative_to: str | os.PathLike = ".") -> str:
    """The table in HTML; with ``embed`` the thumbnails are data URIs, so a notebook keeps them when saved."""
    head = "".join(f"<th>{h}</th>" for h in ("episodes", "training average", "greedy score", "what it does", "video"))
    rows = []
    for s in stages:
        src = os.path.relpath(s.thumbnail, relative_to) if s.thumbnail else ""
        if s.thumbnail and embed:
            src = "data:image/webp;base64," + base64.b64encode(s.thumbnail.read_bytes()).decode("ascii")
        link = os.path.relpath(s.video, relative_to)
        image = f'<a href="{html.escape(link)}"><img src="{src}" width="{THUMBNAIL_SIZE[0]}"></a>' if src else ""
        cells = (f"<b>{s.first}-{s.last}</b>", f"{s.average:.1f}", _score(s), html.escape(s.words), image)
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def select(stages: list[Stage], rows: int | None) -> list[Stage]:
    """At most ``rows`` stages (all without ``rows``), evenly spread, always with the first and the last."""
    if not rows or rows >= len(stages):
        return stages
    picks = np.unique(np.linspace(0, len(stages) - 1, rows).round().astype(int))
    return [stages[i] for i in picks]


def write_progress(run_dir: str | os.PathLike, video_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write ``progress.md`` and ``progress.html`` into the run's folder; returns both paths."""
    run_dir = Path(run_dir)
    stages = run_stages(run_dir, video_dir)
    add_thumbnails(stages)
    title = f"Training progress of {run_dir.name}"
    md, page = run_dir / "progress.md", run_dir / "progress.html"
    write_text(md, f"# {title}\n\n{markdown_table(stages, run_dir)}")
    head = f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>"
    write_text(page, f"{head}{html_table(stages, relative_to=run_dir)}\n")
    return md, page


class ProgressTable(Hook):
    """At the end of a run with videos, once all are written, its progress table; a failure is only a warning."""

    def __init__(self, run_dir: Path, video_dir: Path, out: Callable[[str], None]) -> None:
        self.run_dir, self.video_dir, self.out = run_dir, video_dir, out

    def on_end(self) -> None:
        try:
            markdown, _ = write_progress(self.run_dir, self.video_dir)
        except (UserError, OSError, ValueError) as exc:
            self.out(f"warning: no progress table: {first_line(exc)}")
            return
        self.out(f"progress table: {markdown}")


def show_progress(run_dir: str | os.PathLike | None = None, rows: int | None = None):
    """A Jupyter object showing the progress table of a run, thumbnails embedded (at most ``rows`` rows).

    ``run_dir`` is the run's folder (``runs/<run name>``); by default the run that saved a video last.
    """
    from IPython.display import HTML

    if run_dir is None:
        run_dir = RUNS_DIR / latest_video_folder().name
    stages = select(run_stages(run_dir), rows)
    add_thumbnails(stages)
    return HTML(html_table(stages, embed=True))
