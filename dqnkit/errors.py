"""Errors the user can fix, reported as one line, and how a script ends (its exit status)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix; reported as one line, without a traceback."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when the message is empty."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def run_script(main: Callable[[], int]) -> int:
    """Run a script's ``main()`` and return its exit status; a closed stdout ends it quietly.

    ``python main.py --evaluate x.pth | head -3``: once ``head`` has its lines, writing more
    raises BrokenPipeError, here or in the final flush. Python's recipe: point stdout at
    /dev/null so that the interpreter's own flush at exit cannot fail again, and exit with
    141 = 128 + SIGPIPE, the status of a process a closed pipe ends (as 130 is Ctrl-C's).
    """
    status = None
    try:
        status = main()
        sys.stdout.flush()  # here, inside the try: the interpreter's flush at exit would print a traceback
        return status
    except BrokenPipeError:
        _stdout_to_devnull()
        return 141
    except OSError:
        if status is None:  # main() itself failed: not a stdout problem
            raise
        _stdout_to_devnull()  # a full disk under a redirected stdout: the work is done, its last lines are lost
        return status


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so that the interpreter's own flush at exit cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
