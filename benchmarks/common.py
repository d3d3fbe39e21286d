"""What the benchmark scripts share: one BLAS thread, the repository on ``sys.path``, the machine, clocks,
numbers, a command line whose errors are one line, a training run aside, and an evaluation's summary.

Imported first by every script here (``import common``), before NumPy loads.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# One thread everywhere, before NumPy and PyTorch load: OpenBLAS reads this once, at import. With two
# BLAS threads the 128-wide matrix products of the preset round differently, and runs stop being reproducible.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dqnkit.cli import HelpFormatter  # noqa: E402

if TYPE_CHECKING:
    from dqnkit.report.evaluation import EvalResult
    from dqnkit.run.folder import TrainResult
    from dqnkit.run.hooks import Hook


# ---------------------------------------------------------------- the machine


def utc_now() -> str:
    """The date and time now, UTC, to the second (ISO 8601)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def machine_info() -> dict[str, Any]:
    """Date (UTC), CPU, load, library versions, threads and the commit measured."""
    import gymnasium
    import numpy as np
    import torch

    cpu_model = None
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu_model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    return {
        "date": utc_now(),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
        "torch_threads": torch.get_num_threads(),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "commit": git_commit(),
    }


def machine_line(info: dict[str, Any]) -> str:
    """:func:`machine_info` in one line: ``2026-12-01 18:02 UTC, <CPU>, 2 cores, Python ..., torch ...``."""
    date = datetime.datetime.fromisoformat(info["date"]).strftime("%Y-%m-%d %H:%M UTC")
    cpu = info["cpu_model"] or "unknown CPU"
    return f"{date}, {cpu}, {info['cpu_count']} cores, Python {info['python']}, torch {info['torch']}"


def git_commit() -> str | None:
    """The checked-out commit, with ``+changes`` when tracked files differ from it; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=REPO, capture_output=True).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+changes" if dirty else "")


class Stopwatch:
    """Seconds since it was made: of the wall-clock (what a user waits) and of this process's CPU time.

    The CPU time hardly moves when other processes share the machine: it leaves out the time the
    process waited for a core.
    """

    def __init__(self) -> None:
        self.start, self.start_cpu = time.perf_counter(), time.process_time()

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def cpu_seconds(self) -> float:
        return time.process_time() - self.start_cpu


# ---------------------------------------------------------------- output and the command line


def fmt(value: float | None, spec: str = ",.0f") -> str:
    """``value`` formatted by ``spec``, or ``-`` for None (a run that never got there)."""
    return "-" if value is None else format(value, spec)


def note(message: str) -> None:
    """A progress line, on stderr at once: stdout keeps the table and the JSON line."""
    print(message, file=sys.stderr, flush=True)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``prog: error: message``, without the usage before it."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser(prog: str, description: str) -> Parser:
    """The command line of a benchmark: defaults in ``--help``, every error one line (:class:`Parser`)."""
    return Parser(prog=prog, description=description, formatter_class=HelpFormatter)


def check_distinct(parser: Parser, flag: str, values: Sequence[Any]) -> None:
    """Refuse, in one line, a list flag that names a value twice (a seed run twice would count twice)."""
    if len(set(values)) != len(values):
        parser.error(f"{flag} must be distinct, got {' '.join(map(str, values))}")


# ---------------------------------------------------------------- a training run and its evaluation


@contextlib.contextmanager
def train_aside(cfg: Any, hooks: Sequence[Hook] = ()) -> Iterator[tuple[TrainResult, Any]]:
    """``main.train(cfg, hooks=hooks)`` in a temporary folder, silent; yields the result and the config it ran.

    The run's folder and its checkpoint go to the temporary folder, never into the user's
    ``runs/`` or ``checkpoint.pth``, and exist until the ``with`` ends; inside it the working
    directory is the temporary folder, where the result's relative paths point. The run goes
    on after it solves (``keep_training``): the hooks decide when it stops.
    """
    import main

    with tempfile.TemporaryDirectory(prefix="dqn-benchmark-") as tmp:
        cfg = dataclasses.replace(cfg, keep_training=True, checkpoint=str(Path(tmp) / "checkpoint.pth"))
        cwd = os.getcwd()
        os.chdir(tmp)  # the run's folder is runs/<run> under the working directory
        try:
            yield main.train(cfg, out=lambda _: None, hooks=list(hooks)), cfg
        finally:
            os.chdir(cwd)


def main_py(flags: Sequence[str], folder: str | os.PathLike) -> tuple[str, float, dict[str, Any]]:
    """``python main.py FLAGS`` run in ``folder``: its output, its wall-clock seconds and its run's metrics.csv
    (one array per column); a run that fails raises RuntimeError with the end of its stderr."""
    from dqnkit.report.logs import read_metrics

    cmd = [sys.executable, str(REPO / "main.py"), *flags]
    clock = Stopwatch()
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    wall = clock.seconds()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:])} exited with {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc.stdout, wall, read_metrics(next(Path(folder).glob("runs/*/metrics.csv")))


def eval_summary(result: EvalResult) -> dict[str, float]:
    """Mean score, the shares of episodes landed and on the pad, and the mean length of a greedy evaluation."""
    return {
        "mean_score": result.mean_score,
        "landed_share": result.landed_share,
        "on_pad_share": result.on_pad / len(result.outcomes),
        "mean_length": result.mean_length,
    }
