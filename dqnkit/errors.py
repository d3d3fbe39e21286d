"""Errors the user can fix, reported as one line."""


class UserError(Exception):
    """A problem the user can fix; reported as one line, without a traceback."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when the message is empty."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]
