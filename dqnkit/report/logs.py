"""What a run shows and keeps: the console (a live bar or plain lines), metrics.csv, the learning curve, TensorBoard."""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dqnkit.envs import SOLVED_SCORE, final_outcome
from dqnkit.errors import UserError
from dqnkit.run.files import atomic_write_file, write_text
from dqnkit.run.hooks import Episode, Hook

if TYPE_CHECKING:
    import gymnasium as gym
    from matplotlib.figure import Figure

    from agent import Agent

NUMBER_FIELDS = ("episode", "total_steps", "score", "length", "epsilon", "average_100", "wall_seconds")
# How each episode ended ("landed", "crashed", "out of bounds", "timed out"), whether it came to rest on the
# pad (1/0), and the greedy evaluation's mean after it (blank unless --eval-every evaluated there).
# Newer than the rest: read_metrics accepts files without them.
METRIC_FIELDS = NUMBER_FIELDS + ("outcome", "on_pad", "eval_score")
Out = Callable[[str], None]  # where a run's messages go


class Console:
    """The run's console: a live bar on a terminal, else a plain line every ``log_every`` episodes.

    ``total`` is None when the run may stop early: the bar then counts against ``most`` and estimates no time
    left, which would say minutes to a run that may end in seconds. Messages go above it (:meth:`write`).
    """

    def __init__(self, total: int | None, done: int, log_every: int, quiet: bool, out: Out | None, most: int) -> None:
        self.log_every, self.quiet, self._out = log_every, quiet, out
        self.muted = False  # True once the terminal stopped taking our lines
        self._bar = None
        if out is None and not quiet and sys.stdout.isatty():
            from tqdm import tqdm

            # Without a total: "episode 37 of at most 2000 [00:12, avg100 ... steps/s]": no time left, and no
            # bar, which would fill towards 2,000 as wrongly; under 80 columns, so nothing is cut.
            form = None if total is not None else f"episode {{n_fmt}} of at most {most} [{{elapsed}}{{postfix}}]"
            width = shutil.get_terminal_size().columns  # a terminal that reports no width would get an empty bar
            self._bar = tqdm(total=total, initial=done, unit="ep", ncols=width, file=sys.stdout, bar_format=form)

    def write(self, message: str) -> None:
        """Print one message line; a terminal that is gone (closed, full, hung up) is not the run's end."""
        if self._bar is not None:
            self._quietly(self._bar.write, message)
        elif self._out is not None:
            self._out(message)
        else:
            self._quietly(print, message, flush=True)

    def _quietly(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """``write(*args, **kwargs)`` to the terminal; after its first failure, nothing more is written there."""
        # A full disk, a closed pipe or a hung-up terminal fails every later write too: train on, silent.
        if self.muted:
            return
        try:
            write(*args, **kwargs)
        except OSError:  # BrokenPipeError, ENOSPC, EIO after a hang-up
            self.muted = True
            if self._bar is not None:
                self._bar.disable = True  # tqdm writes on close too

    def update(self, episode: int, average: float, epsilon: float, total_steps: int, steps_per_s: float) -> None:
        if self._bar is not None:
            postfix = f"avg100 {average:7.1f}  eps {epsilon:.3f}  {steps_per_s:5.0f} steps/s"
            self._bar.set_postfix_str(postfix, refresh=False)
            self._quietly(self._bar.update, 1)
        elif not self.quiet and episode % self.log_every == 0:
            steps = f"steps {total_steps:8d}  {steps_per_s:6.0f} steps/s"
            self.write(f"episode {episode:5d}  average score {average:8.2f}  epsilon {epsilon:.3f}  {steps}")

    def close(self) -> None:
        if self._bar is not None:
            self._quietly(self._bar.close)


class ConsoleLog(Hook):
    """Each finished episode to the :class:`Console`: the bar moves, or a line every ``log_every`` episodes."""

    def __init__(self, console: Console, elapsed: Callable[[], float]) -> None:
        self.console, self.elapsed = console, elapsed

    def on_episode(self, episode: Episode) -> None:
        e, steps_per_s = episode, episode.total_steps / max(self.elapsed(), 1e-9)
        self.console.update(e.episode, e.average_100, e.next_epsilon, e.total_steps, steps_per_s)


@dataclass(eq=False)
class MetricsLog(Hook):
    """Each finished episode as a row: appended to metrics.csv at once, kept in ``rows``, and for TensorBoard.

    ``rows`` is the run's list (a resumed run's first), which the training state saves. At the end: the learning curve.
    """

    path: Path
    rows: list[dict[str, Any]]
    env: gym.Env
    agent: Agent
    elapsed: Callable[[], float]
    out: Out
    target_score: float = SOLVED_SCORE
    tensorboard_dir: Path | None = None
    tensorboard: Any = field(default=None, init=False)  # a SummaryWriter with --tensorboard

    def on_start(self, agent: Agent) -> None:
        if self.tensorboard_dir is not None:  # imported only then
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
            self.tensorboard = SummaryWriter(log_dir=str(self.tensorboard_dir))

    def on_episode(self, episode: Episode) -> None:
        row = self.row(episode)
        self.rows.append(row)
        if self.tensorboard is not None:
            step, loss = episode.episode, self.agent.last_loss
            for key in ("score", "average_100", "epsilon", "length"):
                self.tensorboard.add_scalar(f"train/{key}", row[key], step)
            if math.isfinite(loss):
                self.tensorboard.add_scalar("train/loss", loss, step)
            if row["eval_score"] != "":
                self.tensorboard.add_scalar("eval/score", row["eval_score"], step)
        # Appended at once, the file opened and closed each time (tens of microseconds): a crashed run's metrics
        # are never stale, and no descriptor stays open to keep a full disk's space.
        try:
            with open(self.path, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=METRIC_FIELDS).writerow(row)
        except OSError as exc:
            raise UserError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def row(self, episode: Episode) -> dict[str, Any]:
        """The metrics row of ``episode``; read before the next reset (how it ended, from what env.step said)."""
        outcome, landed_on_pad = final_outcome(self.env, episode.terminated)
        # The score at full precision: a resumed run rebuilds its window from these.
        row: dict[str, Any] = {name: getattr(episode, name) for name in NUMBER_FIELDS if name != "wall_seconds"}
        row.update(wall_seconds=round(self.elapsed(), 3), outcome=outcome, on_pad=int(landed_on_pad))
        row["eval_score"] = "" if episode.evaluation is None else episode.evaluation.mean_score
        return row

    def on_failure(self, error: BaseException, episode: Episode | None) -> None:
        # An error between episodes before this hook saw the last one: its row still belongs to the run.
        if episode is not None and (not self.rows or self.rows[-1]["episode"] != episode.episode):
            self.rows.append(self.row(episode))

    def on_end(self) -> None:
        if self.rows:
            self.out(f"learning curve: {plot_learning_curve(self.path, target_score=self.target_score)}")

    def close(self, error: BaseException | None) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()  # flushes the event file


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write the per-episode metrics CSV atomically: the header, then ``rows``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def read_metrics(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The metrics CSV of a run as one array per column."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    try:
        with open(p, newline="") as fh:
            rows = list(csv.DictReader(fh))
        columns = {name: np.array([float(r[name]) for r in rows]) for name in NUMBER_FIELDS}
        if rows and "outcome" in rows[0]:
            columns["outcome"] = np.array([r["outcome"] or "" for r in rows])
            for name in ("on_pad", "eval_score"):  # blank where not measured: NaN
                columns[name] = np.array([float(r[name]) if r[name] else math.nan for r in rows])
    except (KeyError, ValueError, TypeError, UnicodeDecodeError, csv.Error):
        raise UserError(f"{p} is not a metrics CSV of this project (columns {', '.join(NUMBER_FIELDS)})") from None
    if not rows:
        raise UserError(f"{p} has no episodes yet")
    return columns


def solved_at(average_100: np.ndarray, target_score: float = SOLVED_SCORE) -> int | None:
    """First episode (1-based) whose full 100-episode average reached ``target_score``."""
    hits = np.flatnonzero(average_100[99:] >= target_score)
    return int(hits[0]) + 100 if hits.size else None


def plot_learning_curve(
    metrics_csv: str | os.PathLike, png_path: str | os.PathLike | None = None, target_score: float = SOLVED_SCORE
) -> Path:
    """Draw the learning curve of a run's metrics CSV (:func:`learning_curve_figure`); save a PNG (900x500)."""
    m = read_metrics(metrics_csv)
    png = Path(png_path) if png_path is not None else Path(metrics_csv).with_name("learning_curve.png")
    fig = learning_curve_figure(m, target_score, Path(metrics_csv).parent.name or "learning curve")
    atomic_write_file(png, lambda fh: fig.savefig(fh, format="png"))
    return png


def learning_curve_figure(m: dict[str, np.ndarray], target_score: float, title: str) -> Figure:
    """Score per episode, the 100-episode average, epsilon and the solved line, as a 9x5 inch figure.

    The legend sits below the axes and the "solved at" label at their top: neither hides the end of a
    curve, where a run is judged.
    """
    # The object API with the Agg canvas: no display needed, no global pyplot state to close,
    # and no pyplot import (about half a second at the end of every run).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    episodes = m["episode"]
    ax.plot(episodes, m["score"], color="tab:blue", alpha=0.3, linewidth=0.8, label="score")
    ax.plot(episodes, m["average_100"], color="tab:blue", linewidth=2, label="100-episode average")
    evaluated = np.isfinite(m["eval_score"]) if "eval_score" in m else np.zeros(0, dtype=bool)
    if evaluated.any():
        scores = m["eval_score"]
        ax.plot(episodes[evaluated], scores[evaluated], "o-", color="tab:purple", ms=3, lw=1, label="greedy evaluation")
        best = int(np.nanargmax(np.where(evaluated, scores, np.nan)))  # the first of equal maxima
        label = f"best evaluation, best.pth ({scores[best]:.1f}, episode {int(episodes[best])})"
        ax.plot(episodes[best], scores[best], "*", color="tab:purple", markersize=14, label=label)
    ax.axhline(target_score, color="tab:green", linestyle="--", linewidth=1, label=f"solved ({target_score:g})")
    crossed = solved_at(m["average_100"], target_score)
    if crossed is not None:
        ax.axvline(crossed, color="tab:green", linewidth=1)
        # At the top of the axes, beside the line, on the side with more room (a run that stops at the
        # target crosses at its right end).
        ha, dx = ("right", -4) if crossed > (episodes[0] + episodes[-1]) / 2 else ("left", 4)
        box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1}
        where = {"xycoords": ("data", "axes fraction"), "textcoords": "offset points", "va": "top", "bbox": box}
        ax.annotate(f"solved at episode {crossed}", (crossed, 1.0), xytext=(dx, -4), color="tab:green", ha=ha, **where)
    ax.set(xlabel="episode", ylabel="score")
    ax.set_title(title, fontsize=10)
    eps_ax = ax.twinx()
    eps_ax.plot(episodes, m["epsilon"], color="tab:orange", linewidth=1, label="epsilon")
    eps_ax.set(ylabel="epsilon", ylim=(0, 1.05))
    fig.legend(loc="outside lower center", ncols=5, fontsize=8, frameon=False)  # both axes' labelled lines
    return fig
