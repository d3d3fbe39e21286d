"""Worker processes: started apart from the terminal, stopped by the command that started them, never left behind.

Ctrl-C in a terminal reaches every process of the foreground process group, at any moment, even in
the middle of a write to a study's storage. Workers here have a process group of their own, so only
the command gets it. The command then tells each worker (SIGINT), which ends its run after the
current episode, and kills (SIGKILL) any worker still running ``GRACE_SECONDS`` later, or at once on
a second Ctrl-C. A worker whose command is gone stops too. Processes, not threads: a training run
holds the GIL, and Optuna's ``n_jobs`` threads would take turns on one core.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

GRACE_SECONDS = 10.0
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class StopFlag:
    """In a worker: set by SIGINT, SIGTERM or SIGHUP (which interrupt nothing), asked between episodes and trials.

    Also true once the command that started the worker is gone: its parent process id changes.
    """

    def __init__(self, parent: int) -> None:
        self.parent, self.set = parent, False

    def install(self) -> None:
        """Catch the stop signals from now on (a training run puts its own handlers in place while it runs)."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.set = True

    def __call__(self) -> bool:
        return self.set or os.getppid() != self.parent


def _enter(target: Callable[..., Any], index: int, parent: int, args: tuple) -> None:
    """A worker's first steps: its own process group, its stop flag, then ``target(index, stop, *args)``."""
    os.setpgrp()  # out of the terminal's foreground group: Ctrl-C reaches the command alone
    stop = StopFlag(parent)
    stop.install()
    try:
        target(index, stop, *args)
    except KeyboardInterrupt:  # a second signal during a run stops it at once; the command says so
        sys.exit(130)


def start(target: Callable[..., Any], args: tuple, jobs: int) -> list[multiprocessing.process.BaseProcess]:
    """Start ``jobs`` worker processes, each running ``target(index, stop, *args)`` (all picklable).

    Fresh interpreters (spawn), which import what they need; Ctrl-C is ignored from their start
    until they have left the terminal's process group.
    """
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_enter, args=(target, i, os.getpid(), args), name=f"worker-{i}") for i in range(jobs)
    ]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the new interpreters
    try:
        for process in processes:
            process.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    return processes


def watch(
    processes: list[multiprocessing.process.BaseProcess],
    ended: Callable[[multiprocessing.process.BaseProcess], None],
    say: Callable[[str], None],
) -> int | None:
    """Wait for every worker, calling ``ended(process)`` as each one ends; return the signal that stopped them, if any.

    The first SIGINT, SIGTERM or SIGHUP tells each worker to stop after its episode; a second one,
    or ``GRACE_SECONDS`` without an end, kills those still running.
    """
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in STOP_SIGNALS}
    told_at: float | None = None
    running = list(processes)
    try:
        while running:
            for process in list(running):
                process.join(0.1)
                if not process.is_alive():
                    running.remove(process)
                    ended(process)
            if received and told_at is None and running:
                told_at = time.monotonic()
                say("stopping: each worker ends its run after the current episode (Ctrl-C again to stop at once)")
                for process in running:
                    _signal(process, signal.SIGINT)
            if told_at is not None and (len(received) > 1 or time.monotonic() - told_at > GRACE_SECONDS):
                for process in running:
                    _signal(process, signal.SIGKILL)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return received[0] if received else None


def _signal(process: multiprocessing.process.BaseProcess, sig: int) -> None:
    """Send ``sig`` to a worker that may have just ended."""
    if process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)
