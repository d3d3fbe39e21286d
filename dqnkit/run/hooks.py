"""Hooks: services around the episode loop (docs/hooks.md), like Stable-Baselines3's callbacks and PFRL's step_hooks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dqnkit.run import processes


@dataclass
class Episode:
    """One finished training episode, as the loop saw it; hooks fill in ``evaluation`` and ``solved``."""

    episode: int
    score: float
    length: int
    # What env.step said at the last step: one that comes to rest on its last allowed step is terminated, not cut off.
    terminated: bool
    truncated: bool
    epsilon: float  # the exploration rate the episode ended with
    next_epsilon: float  # the next episode's
    total_steps: int
    average_100: float  # the mean score of the last 100 episodes (of all of them while fewer)
    evaluation: Any = None  # a dqnkit.report.evaluation.EvalResult (not imported: evaluation.py builds on this module)
    solved: bool = False  # True on the episode at which the run solved (and wrote --checkpoint)


class Hook:
    """A service around the episode loop, every method optional; setting ``stop`` ends the loop after the episode."""

    stop: str | None = None

    def on_start(self, agent: Any) -> None:
        """Before the first episode, with the agent the run trains (a caller's hook is made before it)."""

    def on_step(self, total_steps: int) -> None:
        """After every environment step, with the run's step count; called only where a hook overrides it."""

    def on_episode(self, episode: Episode) -> None:
        """After every finished episode, in list order."""

    def on_end(self) -> None:
        """When the loop has ended without an error, in reverse list order: the first hooks have the last word."""

    def on_failure(self, error: BaseException, episode: Episode | None) -> None:
        """When an error ended the loop, before :meth:`close`, in list order: save what can be saved.

        ``episode``: the last finished one, at whose end the agent stands, if the error came between episodes.
        """

    def close(self, error: BaseException | None) -> None:
        """Always, in reverse order: let go of files, processes, environments. ``error``: what ended the loop."""


class Hooks:
    """The hooks of one run, called as one; a context manager that ends and closes them."""

    def __init__(self, hooks: Iterable[Hook], agent: Any) -> None:
        self.hooks, self.agent = list(hooks), agent
        self.last: Episode | None = None  # the last episode handed to the hooks
        self._between = True  # False while an episode is being played: an error then strikes inside it
        self._stepping = [h.on_step for h in self.hooks if type(h).on_step is not Hook.on_step]
        # None when no hook wants steps: the loop then calls nothing per step.
        self.on_step: Callable[[int], None] | None = self._step if self._stepping else None

    def _step(self, total_steps: int) -> None:
        for call in self._stepping:
            call(total_steps)

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
                for hook in reversed(self.hooks):
                    hook.on_end()
        except BaseException as failure:  # a Ctrl-C while the videos finish, a full disk
            error = failure
            raise
        finally:
            if error is not None:
                episode = self.last if self._between else None  # the episode the agent stands at the end of
                for hook in self.hooks:
                    # One hook's failed rescue must not keep the next from saving; the first error is what is reported.
                    with contextlib.suppress(Exception):
                        hook.on_failure(error, episode)
            with contextlib.ExitStack() as closing:  # every close() runs, the last hook's first
                for hook in self.hooks:
                    closing.callback(hook.close, error)


class StopOnSignal(Hook):
    """The first SIGINT, SIGTERM or SIGHUP (a closed terminal) stops the run after this episode; a second, at once."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self._before: dict[int | str, Any] = {}

    def on_start(self, agent: Any) -> None:
        self._before = processes.catch_stop_signals(self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stop is not None:  # a second signal: at once, and the last state on disk is still complete
            raise KeyboardInterrupt
        # The episode is finished (well under a second): the state saved then is exactly where a resumed run goes on.
        self.stop, self.run.stopped_by = f"signal {signum}", signum
        self.run.out("stopping after this episode to save the training state (press Ctrl-C again to stop at once)")

    def close(self, error: BaseException | None) -> None:
        processes.restore(self._before)
        self._before = {}
