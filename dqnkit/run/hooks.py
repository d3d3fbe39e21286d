"""Hooks: the services around the episode loop, each a small object with its own state.

``main.train`` plays episodes and hands each finished one, as an :class:`Episode` record, to
every hook in a :class:`Hooks` list; any hook may ask the loop to stop after the episode. The
run's own services (metrics, progress, videos, evaluation, the solved checkpoint, the training
state, Ctrl-C) are hooks, and so are a benchmark's measurements or a tuner's pruning: a caller
passes its own with ``main.train(cfg, hooks=[...])``. The models: Stable-Baselines3's callbacks
(``callback.on_step()`` in the loop, ``False`` stops training) and PFRL's ``step_hooks``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass
class Episode:
    """One finished training episode, as the loop saw it.

    ``terminated`` and ``truncated`` are what ``env.step`` said at the last step: an episode
    that terminates on its last allowed step is terminated, not cut off. ``epsilon`` is the
    exploration rate the episode ended with, ``next_epsilon`` the next episode's. Hooks
    fill in what they found: ``evaluation`` when the greedy evaluation ran after this episode,
    ``solved`` on the episode at which the run solved (and wrote ``--checkpoint``).
    """

    episode: int
    score: float
    length: int
    terminated: bool
    truncated: bool
    epsilon: float
    next_epsilon: float
    total_steps: int
    average_100: float  # the mean score of the last 100 episodes (of all of them while fewer)
    evaluation: Any = None  # a dqnkit.report.evaluation.EvalResult (not imported: evaluation.py builds on this module)
    solved: bool = False


class Hook:
    """A service around the episode loop; every method is optional.

    Set up in ``__init__``; :meth:`on_start` hands it the agent before the first episode
    (for a caller's hook, which is made before the agent). :meth:`on_episode` after each episode, in list order;
    :meth:`on_step` after each environment step, only where a hook overrides it;
    :meth:`on_end` once the loop is over without an error (in reverse list order, so that
    the first hooks have the last word), :meth:`on_failure` instead after an error (in list
    order); :meth:`close` always, in reverse order. Setting
    :attr:`stop` to a reason asks the loop to stop after the episode.
    """

    stop: str | None = None

    def on_start(self, agent: Any) -> None:
        """Before the first episode, with the agent the run trains."""

    def on_step(self, total_steps: int) -> None:
        """After every environment step, with the run's step count."""

    def on_episode(self, episode: Episode) -> None:
        """After every finished episode."""

    def on_end(self) -> None:
        """When the loop has ended (finished, solved or stopped), not after an error."""

    def on_failure(self, error: BaseException, episode: Episode | None) -> None:
        """When an error ended the loop, before :meth:`close`, in list order: save what can be saved.

        ``episode`` is the last finished episode when the error came between episodes (from a
        hook), so that the agent stands at its end; None when it came in the middle of one.
        """

    def close(self, error: BaseException | None) -> None:
        """Let go of what the hook holds (files, processes, environments), however the run ended.

        ``error`` is what ended the loop early (a second Ctrl-C is a KeyboardInterrupt), or None.
        """


class Hooks:
    """The hooks of one run, called as one; a context manager that ends and closes them."""

    def __init__(self, hooks: Iterable[Hook], agent: Any) -> None:
        self.hooks, self.agent = list(hooks), agent
        self.last: Episode | None = None  # the last episode handed to the hooks
        self._between = True  # False while an episode is being played: an error then strikes inside it
        stepping = [h.on_step for h in self.hooks if type(h).on_step is not Hook.on_step]
        # None when no hook wants steps: the loop then calls nothing per step.
        self.on_step: Callable[[int], None] | None = None
        if stepping:

            def on_step(total_steps: int) -> None:
                for call in stepping:
                    call(total_steps)

            self.on_step = on_step

    def on_episode(self, episode: Episode) -> None:
        """Hand the episode to every hook, in order; the next episode starts when this returns."""
        self.last, self._between = episode, True
        for hook in self.hooks:
            hook.on_episode(episode)
        self._between = False

    @property
    def stop(self) -> str | None:
        """The first reason a hook gave to stop, or None."""
        return next((h.stop for h in self.hooks if h.stop is not None), None)

    def __enter__(self) -> Hooks:
        try:
            for hook in self.hooks:
                hook.on_start(self.agent)
        except BaseException as exc:  # the hooks started so far let go of what they hold
            self.__exit__(type(exc), exc, None)
            raise
        self._between = False
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        error = exc
        try:
            if exc is None:
                self._between = True
                try:
                    for hook in reversed(self.hooks):
                        hook.on_end()
                except BaseException as failure:  # a Ctrl-C while the videos finish, a full disk
                    error = failure
                    raise
        finally:
            if error is not None:
                self._fail(error)
            with contextlib.ExitStack() as closing:  # every close() runs, the last hook's first
                for hook in self.hooks:
                    closing.callback(hook.close, error)

    def _fail(self, error: BaseException) -> None:
        """Every hook's :meth:`Hook.on_failure`, in order, with the episode the agent stands at the end of."""
        episode = self.last if self._between else None
        for hook in self.hooks:
            # One hook's failed rescue must not keep the next from saving; the first error is what is reported.
            with contextlib.suppress(Exception):
                hook.on_failure(error, episode)


class StopOnSignal(Hook):
    """Turn the first SIGINT, SIGTERM or SIGHUP into a request to stop after the current episode.

    SIGHUP is what a closed terminal or ssh session sends: the run saves and stops as on Ctrl-C
    (its messages then go nowhere, which the console takes in its stride).

    The episode is finished (well under a second) so that the saved state sits on an
    episode boundary and a resumed run is exactly the uninterrupted one. A second
    signal stops at once; the last periodic state on disk is still complete. The run
    (a :class:`~dqnkit.run.folder.RunFolder`) learns which signal stopped it.
    """

    def __init__(self, run: Any) -> None:
        self.run = run
        self._old: dict[int, Any] = {}

    def on_start(self, agent: Any) -> None:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            hangup = [signal.SIGHUP] if hasattr(signal, "SIGHUP") else []  # none on Windows
            for sig in (signal.SIGINT, signal.SIGTERM, *hangup):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stop is not None:
            raise KeyboardInterrupt
        self.stop, self.run.stopped_by = f"signal {signum}", signum
        self.run.out("stopping after this episode to save the training state (press Ctrl-C again to stop at once)")

    def close(self, error: BaseException | None) -> None:
        import signal

        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}
