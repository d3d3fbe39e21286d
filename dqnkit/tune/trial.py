"""One trial of ``tune.py``: ``main.train`` with one more hook (:class:`TrialReport`) and the trial's folder,
``runs/tune/<study>/trial-NNNN/``, as its ``root``: its ``runs/<run>/`` and ``checkpoint.pth`` stay there."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqnkit.errors import UserError, first_line
from dqnkit.run.files import STATE_FILE
from dqnkit.run.hooks import Episode, Hook
from dqnkit.tune.space import draw

# What --objective asks the sampler for: the directions of what a trial returns, the greedy mean of the agent the
# run saves (quality), CPU seconds until it saves one that passes the stopping rule (time), or both (a Pareto front).
OBJECTIVES = {"quality": ("maximize",), "time": ("minimize",), "both": ("maximize", "minimize")}


class Interrupted(Exception):
    """The trial's run was stopped by Ctrl-C (or SIGTERM): the trial fails, the worker stops."""


@dataclass
class TrialPlan:
    """What every trial of a study shares; handed to each worker process, so it must pickle."""

    base: Any  # the Config of the budget and stopping rule, the searched settings at their defaults
    space: str
    objective: str
    seed: int  # trial N trains with seed + N
    folder: Path  # the study's, absolute
    train: Callable[..., Any]  # main.train


class TrialReport(Hook):
    """The hook that makes a run a trial: it reports, prunes, and measures the cost to a passing agent. With
    ``report`` (single-objective quality), each evaluation's mean is Optuna's intermediate value at its episode,
    and the run stops when ``trial.should_prune()``, or ``stopping()`` after any episode."""

    def __init__(self, trial: Any, report: bool, stopping: Callable[[], bool]) -> None:
        self.trial, self.report, self.stopping = trial, report, stopping
        self.best: tuple[int, Any] | None = None  # (episode, EvalResult) of the best evaluation so far
        self.passed: dict[str, Any] | None = None  # the moment the stopping rule passed
        self.last: dict[str, Any] | None = None  # the moment of the last finished episode
        self.diverged: str | None = None  # the FloatingPointError of a diverging loss

    def on_start(self, agent: Any) -> None:
        self.cpu_start, self.wall_start = time.process_time(), time.perf_counter()

    def on_episode(self, episode: Episode) -> None:
        cpu, wall = time.process_time() - self.cpu_start, time.perf_counter() - self.wall_start
        self.last = {"episode": episode.episode, "steps": episode.total_steps, "cpu_seconds": cpu, "wall_seconds": wall}
        if (evaluation := episode.evaluation) is not None:
            if self.best is None or evaluation.mean_score > self.best[1].mean_score:  # the first of equals
                self.best = (episode.episode, evaluation)
            if episode.solved:
                self.passed = {**self.last, "saved": (episode.episode, evaluation)}
            if self.report:
                self.trial.report(evaluation.mean_score, episode.episode)
                if not episode.solved and self.trial.should_prune():
                    self.stop = "pruned"
        if self.stop is None and self.stopping():
            self.stop = "interrupted"

    def on_failure(self, error: BaseException, episode: Episode | None) -> None:
        if isinstance(error, FloatingPointError):
            self.diverged = str(error)

    def outcome(self, ceiling_steps: int) -> dict[str, Any]:
        """What the trial records: the saved agent's evaluation and the run's cost (see :func:`time_cost`)."""
        # The agent that passed, or else the best evaluated weights (best.pth), as compare.py takes them.
        saved_episode, agent = self.passed["saved"] if self.passed else self.best or (None, None)
        end = self.passed or self.last or {"episode": 0, "steps": 0, "cpu_seconds": 0.0, "wall_seconds": 0.0}
        record = {**{k: end[k] for k in ("steps", "cpu_seconds", "wall_seconds")}, "passed": self.passed is not None}
        record.update(episodes=(self.last or end)["episode"], saved_episode=saved_episode)
        record["time_cost"] = time_cost(record, ceiling_steps)
        if agent is not None:
            record.update(score=agent.mean_score, landed=agent.landed_share, mean_length=agent.mean_length)
        return record


def time_cost(record: dict[str, Any], ceiling_steps: int) -> float:
    """The time objective: CPU seconds until the saved agent passed the stopping rule. A run that never
    passes is charged as if it had played every step its budget allows (``ceiling_steps``) at its own pace:
    it ranks behind any run of that pace that passes, however short its failed episodes were."""
    if record["passed"]:
        return record["cpu_seconds"]
    return record["cpu_seconds"] * ceiling_steps / max(record["steps"], 1)


def run_trial(trial: Any, plan: TrialPlan, stopping: Callable[[], bool]) -> float | tuple[float, float]:
    """The objective: train the settings ``trial`` draws in the trial's folder; record and return what it gave.
    A pruned or diverging (NaN loss) run raises ``optuna.TrialPruned``, one stopped by Ctrl-C :class:`Interrupted`,
    any other error fails the trial; the trial keeps the reason as ``reason``."""
    import optuna

    try:
        seed, folder = plan.seed + trial.number, plan.folder / f"trial-{trial.number:04d}"
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("folder", folder.name)
        cfg = dataclasses.replace(plan.base, **draw(trial, plan.space), seed=seed)
        hook = TrialReport(trial, report=plan.objective == "quality", stopping=stopping)
        try:
            result = plan.train(cfg, out=lambda _: None, hooks=[hook], root=folder)
        except UserError:
            if hook.diverged is None:
                raise
            episode = hook.last["episode"] + 1 if hook.last else 1
            raise optuna.TrialPruned(f"diverged in episode {episode}: {hook.diverged}") from None
        finally:
            record = hook.outcome(cfg.episodes * cfg.max_steps)
            for key, value in record.items():
                trial.set_user_attr(key, value)
            # A trial is never resumed, and its state holds the replay memory (76 MB at 1,000,000 transitions).
            for state in folder.glob(f"runs/*/{STATE_FILE}"):
                state.unlink(missing_ok=True)
        if result.stopped_by is not None or hook.stop == "interrupted":
            raise Interrupted(f"interrupted at episode {hook.last['episode'] if hook.last else 0}")
        if hook.stop == "pruned":
            raise optuna.TrialPruned(f"pruned at episode {hook.last['episode']}")  # the run stopped after it
    except Exception as exc:  # a bug's reason names its type; the trial fails, the study goes on
        expected = isinstance(exc, optuna.TrialPruned | Interrupted | UserError)
        trial.set_user_attr("reason", first_line(exc) if expected else f"{type(exc).__name__}: {first_line(exc)}")
        raise
    if plan.objective == "quality":
        return record["score"]
    return record["time_cost"] if plan.objective == "time" else (record["score"], record["time_cost"])
