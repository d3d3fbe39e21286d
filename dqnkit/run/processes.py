"""Signals and child processes, in one place: how children start, take signals, and are stopped or killed.

Ctrl-C in a terminal reaches its whole foreground process group, even mid-write: so each child leads a group
of its own, and only the parent gets Ctrl-C and decides. Processes, not threads: training holds the GIL.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing.process import BaseProcess

GRACE_SECONDS = 10.0  # how long the tuner's workers have to end their runs once told to stop
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


# The handlers of runs in threads (main.py --seeds): only the main thread gets signals; it hands them on.
_IN_THREADS: list[Callable[[int, Any], None]] = []


def catch_stop_signals(handler: Callable[[int, Any], None]) -> dict[int | str, Any]:
    """Hand SIGINT, SIGTERM and SIGHUP (a closed terminal) to ``handler``; return the handlers before. Off the main
    thread (which alone may set handlers), ``handler`` gets what :func:`forward_stop_signals` hands on, if any."""
    if threading.current_thread() is not threading.main_thread():
        _IN_THREADS.append(handler)
        return {"thread": handler}
    return {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}


def forward_stop_signals() -> dict[int | str, Any]:
    """In the main thread: hand every stop signal to the handlers threads set (each run of ``--seeds``)."""

    def forward(signum: int, frame: Any) -> None:
        for handler in list(_IN_THREADS):  # a second signal raises KeyboardInterrupt here: all stop at once
            handler(signum, frame)

    return catch_stop_signals(forward)


def restore(handlers: dict[int | str, Any]) -> None:
    """Put back the signal handlers :func:`catch_stop_signals` returned."""
    for sig, handler in handlers.items():
        if sig == "thread":
            _IN_THREADS.remove(handler)
        else:
            signal.signal(sig, handler)


class StopFlag:
    """In a worker: true once SIGINT, SIGTERM or SIGHUP came (they interrupt nothing), or its command is gone."""

    def __init__(self, parent: int) -> None:
        self.parent, self.set = parent, False
        catch_stop_signals(self._handle)  # from now on; a training run puts its own handlers in place while it runs

    def _handle(self, signum: int, frame: Any) -> None:
        self.set = True

    def __call__(self) -> bool:
        return self.set or os.getppid() != self.parent  # a new parent: the command that started it is gone


def _enter(target: Callable[..., Any], index: int, parent: int, args: tuple) -> None:
    """A worker's first steps: its own process group, its stop flag, then ``target(index, stop, *args)``."""
    os.setpgrp()  # out of the terminal's foreground group: Ctrl-C reaches the command alone
    try:
        target(index, StopFlag(parent), *args)
    except KeyboardInterrupt:  # a second signal during a run stops it at once; the command says so
        sys.exit(130)


def start(target: Callable[..., Any], args: tuple, jobs: int) -> list[BaseProcess]:
    """Start ``jobs`` workers, fresh (spawned) interpreters each running ``target(index, stop, *args)``."""
    spawn = multiprocessing.get_context("spawn").Process
    processes = [spawn(target=_enter, args=(target, i, os.getpid(), args), name=f"worker-{i}") for i in range(jobs)]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited: ignored until they leave the terminal
    try:
        for process in processes:
            process.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    return processes


def watch(processes: list[BaseProcess], ended: Callable[[BaseProcess], None], say: Callable[[str], None]) -> int | None:
    """Wait for every worker, calling ``ended(process)`` as each ends; return the signal that stopped them, if any."""
    received: list[int] = []
    previous = catch_stop_signals(lambda signum, frame: received.append(signum))
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
                for process in running:  # a second signal, or GRACE_SECONDS without an end: kill them
                    _signal(process, signal.SIGKILL)
    finally:
        restore(previous)
    return received[0] if received else None


def _signal(process: BaseProcess, sig: int) -> None:
    """Send ``sig`` to a worker that may have just ended."""
    if process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)


def _pool_setup() -> None:
    """In the pool's worker, first: a process group of its own, which its ffmpeg joins; Ctrl-C and SIGHUP ignored."""
    if hasattr(os, "setpgrp"):  # none on Windows
        os.setpgrp()
        # imageio-ffmpeg would start each ffmpeg in a group of its own, which nothing ends with the worker: one
        # that outlived a stopped worker created a video's temporary file after it was removed.
        os.environ["IMAGEIO_FFMPEG_NO_PREVENT_SIGINT"] = "1"
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the training process
    if hasattr(signal, "SIGHUP"):  # a closed terminal: the training process saves, then waits for these videos
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # SIGTERM from outside ends the task in hand: imageio kills its ffmpeg, the atomic write removes its file.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def start_pool() -> ProcessPoolExecutor:
    """A pool of one worker process, for :func:`pool_task`; raises what the system does where none can start."""
    from concurrent.futures import ProcessPoolExecutor

    # Spawned, not forked: a forked copy of a process that runs torch threads can deadlock.
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_pool_setup)


def pool_task(target: Callable[..., Any], *args: Any) -> Any:
    """In the pool's worker: ``target(*args)``; a SIGTERM ends the process instead of letting it take the next task."""
    try:
        return target(*args)
    except SystemExit as stop:
        os._exit(int(stop.code or 1))


def kill_pool(pool: ProcessPoolExecutor) -> None:
    """SIGKILL the pool's worker and every process of its group now, and wait (a second at most) until none runs."""
    # Not SIGTERM, which the worker turns into SystemExit: inside the start of an ffmpeg it leaves that ffmpeg
    # running, unseen, and in a callback that ignores exceptions (an at-fork handler) it is lost.
    # Python 3.14 has pool.terminate_workers(); before it, the processes are only reachable here.
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        deadline = time.monotonic() + 1.0
        _kill_group(worker.pid)  # all at once: no process of the group can fork its way out
        worker.kill()  # where it has no group (yet; no killpg on Windows); nothing if it has ended
        worker.join(1.0)
        while _group_runs(worker.pid) and time.monotonic() < deadline:
            _kill_group(worker.pid)
            time.sleep(0.005)


def _kill_group(group: int) -> None:
    """SIGKILL every process of process group ``group``, if there is one."""
    with contextlib.suppress(ProcessLookupError, PermissionError, AttributeError):
        os.killpg(group, signal.SIGKILL)


def _group_runs(group: int) -> bool:
    """Whether a process of process group ``group`` still runs: a zombie has ended, and holds no files."""
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
