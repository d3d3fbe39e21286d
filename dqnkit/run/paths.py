"""Where a run's files go: every path of a run, a new run's folder, and the lock that keeps one process in it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dqnkit.errors import UserError
from dqnkit.report.videos import VIDEO_DIR
from dqnkit.run.files import STATE_FILE, check_writable

BEST_WEIGHTS = "best.pth"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class RunPaths:
    """Every path of one run: the files in its folder, its videos, and ``--checkpoint``."""

    dir: Path
    videos: Path  # <root>/videos/<run name>
    checkpoint: Path  # --checkpoint, written only by a run that solves
    state: Path  # the training state, for --resume
    metrics: Path
    config: Path
    last_weights: Path  # the network the run ended with
    best_weights: Path  # the network that scored best in --eval-every's evaluations
    solved_weights: Path  # the network that solved, whatever became of --checkpoint
    previous_checkpoint: Path  # the checkpoint its solving replaced
    lock: Path  # locked while a process trains in the run (lock_run)

    @classmethod
    def of(cls, d: Path, root: Path, checkpoint: str | os.PathLike) -> RunPaths:
        """The paths of the run in folder ``d``: videos in ``root/videos/<run>``, a relative checkpoint in ``root``."""
        names = ("metrics.csv", "config.json", "last.pth", BEST_WEIGHTS, "solved.pth", "previous-checkpoint.pth")
        return cls(
            d, root / VIDEO_DIR / d.name, root / checkpoint, d / STATE_FILE, *(d / n for n in names), d / LOCK_FILE
        )


def new_run_dir(parent: Path, name: str) -> Path:
    """Create ``parent/name`` for a new run, or ``name-2``, ``name-3``... if another run has it."""
    check_writable(parent, "the run's files")
    for n in range(1, 1000):
        path = parent / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir(parents=True)  # atomic, parents or not: of two runs started in one second, one gets each name
            return path
        except FileExistsError:
            continue
    raise UserError(f"too many runs named {name} in {parent}/")


def lock_run(path: Path) -> BinaryIO | None:
    """An exclusive ``flock`` on a run's ``.lock``, held until the file returned is closed; None on Windows."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(path, "a+b")  # noqa: SIM115 - held open for the run's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # it ends with its process, however that ends: never stale
    except BlockingIOError:  # a second process resuming the run would append to the same metrics.csv
        handle.close()
        raise UserError(
            f"{path.parent} is in use: another process is training in it; wait for it to stop, "
            "or stop it (Ctrl-C saves its state) and resume then"
        ) from None
    return handle
