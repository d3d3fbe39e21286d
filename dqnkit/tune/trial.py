"""One trial of ``tune.py``: a real training run, ``main.train`` with one more hook.

The hook (:class:`TrialReport`) hands each greedy evaluation of ``--eval-every`` to Optuna as an
intermediate value, stops the run when the pruner says so, and measures what the run cost until its
agent passed the stopping rule. Each trial trains in a folder of its own, ``runs/tune/<study>/trial-NNNN/``,
as ``python main.py`` would in that folder: its ``runs/<run>/`` and its ``checkpoint.pth`` stay there
(all but the training state, which a trial never resumes from).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqnkit.errors import UserError, first_line
from dqnkit.run.files import STATE_FILE
from dqnkit.run.hooks import Episode, Hook
from dqnkit.tune.space import draw

# What --objective asks the sampler for: the directions of the values a trial returns.
OBJECTIVES = {
    "quality": ("maximize",),  # the greedy mean of the agent the run saves
    "time": ("minimize",),  # CPU seconds until the run saves an agent that passes the stopping rule
    "both": ("maximize", "minimize"),  # the two at once: a Pareto front
}


class Interrupted(Exception):
    """The trial's run was stopped by Ctrl-C (or SIGTERM): the trial fails, the worker stops."""


@dataclass
class TrialPlan:
    """What every trial of a study shares: handed to each worker process, so it must pickle.

    ``base`` is the configuration a trial starts from (the budget and the stopping rule; the searched
    settings at their defaults), ``train`` is ``main.train``, ``folder`` the study's folder (absolute).
    """

    base: Any
    space: str
    objective: str
    seed: int
    folder: Path
    train: Callable[..., Any]


def trial_seed(study_seed: int, number: int) -> int:
    """The seed of trial ``number``: the study's seed plus the trial number, recorded with the trial."""
    return study_seed + number


def worker_name() -> str:
    """``host:pid`` of this process, recorded with each trial it runs (to fail the trials of a killed worker)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    """Work in ``folder`` (made if missing): a run there writes ``runs/<run>/`` and its checkpoint there.

    The working directory belongs to the whole process; a worker runs one trial at a time.
    """
    folder.mkdir(parents=True, exist_ok=True)
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


class TrialReport(Hook):
    """The hook that makes a run a trial: reports, prunes, and measures the cost to a passing agent.

    With ``report`` (single-objective quality), each evaluation's mean goes to Optuna as the
    intermediate value at its episode, and the run stops when ``trial.should_prune()`` says so.
    ``stopping`` is asked after each episode: True stops the run (the worker was told to stop).
    """

    def __init__(self, trial: Any, report: bool, stopping: Callable[[], bool]) -> None:
        self.trial, self.report, self.stopping = trial, report, stopping
        self.best: tuple[int, Any] | None = None  # (episode, EvalResult) of the best evaluation so far
        self.passed: dict[str, Any] | None = None  # the moment the stopping rule passed
        self.last: dict[str, Any] | None = None  # the moment of the last finished episode
        self.pruned_at: int | None = None
        self.diverged: str | None = None  # the FloatingPointError of a diverging loss

    def on_start(self, agent: Any) -> None:
        self.cpu_start, self.wall_start = time.process_time(), time.perf_counter()

    def on_episode(self, episode: Episode) -> None:
        self.last = {
            "episode": episode.episode,
            "steps": episode.total_steps,
            "cpu_seconds": time.process_time() - self.cpu_start,
            "wall_seconds": time.perf_counter() - self.wall_start,
        }
        evaluation = episode.evaluation
        if evaluation is not None:
            if self.best is None or evaluation.mean_score > self.best[1].mean_score:  # the first of equals
                self.best = (episode.episode, evaluation)
            if episode.solved:
                self.passed = {**self.last, "evaluation": evaluation}
            if self.report:
                self.trial.report(evaluation.mean_score, episode.episode)
                if not episode.solved and self.trial.should_prune():
                    self.stop, self.pruned_at = "pruned", episode.episode
        if self.stop is None and self.stopping():
            self.stop = "interrupted"

    def on_failure(self, error: BaseException, episode: Episode | None) -> None:
        if isinstance(error, FloatingPointError):
            self.diverged = str(error)

    def outcome(self, ceiling_steps: int) -> dict[str, Any]:
        """What the trial records: the saved agent's evaluation and the run's cost (see :func:`time_cost`)."""
        if self.passed is not None:
            saved_episode, evaluation = self.passed["episode"], self.passed["evaluation"]
        else:  # the best evaluated weights (best.pth), as compare.py takes them
            saved_episode, evaluation = self.best or (None, None)
        end = self.passed or self.last or {"episode": 0, "steps": 0, "cpu_seconds": 0.0, "wall_seconds": 0.0}
        record = {**{k: end[k] for k in ("steps", "cpu_seconds", "wall_seconds")}, "passed": self.passed is not None}
        record.update(episodes=(self.last or end)["episode"], saved_episode=saved_episode)
        record["time_cost"] = time_cost(record, ceiling_steps)
        if evaluation is not None:
            record.update(
                score=evaluation.mean_score, landed=evaluation.landed_share, mean_length=evaluation.mean_length
            )
        return record


def time_cost(record: dict[str, Any], ceiling_steps: int) -> float:
    """The time objective: CPU seconds until the saved agent passed the stopping rule.

    A run that never passes is charged as if it had played every step its budget allows
    (``ceiling_steps``, episodes x max steps) at its own pace, so that it ranks behind any run of
    that pace that passes, however short its failed episodes were.
    """
    if record["passed"]:
        return record["cpu_seconds"]
    return record["cpu_seconds"] * ceiling_steps / max(record["steps"], 1)


def objective_values(objective: str, record: dict[str, Any]) -> float | tuple[float, float]:
    """The value(s) a finished trial returns to Optuna under ``--objective``."""
    if objective == "quality":
        return record["score"]
    if objective == "time":
        return record["time_cost"]
    return record["score"], record["time_cost"]


def run_trial(trial: Any, plan: TrialPlan, stopping: Callable[[], bool]) -> float | tuple[float, float]:
    """The objective: train the settings ``trial`` draws, in the trial's folder; record and return what it gave.

    A pruned run and a diverging one (NaN loss) raise ``optuna.TrialPruned``; a run stopped by
    Ctrl-C raises :class:`Interrupted`; any other error fails the trial. The reason is kept as the
    trial's ``reason``, and what the run measured as its other user attributes.
    """
    import optuna

    try:
        return _train_trial(trial, plan, stopping)
    except (optuna.TrialPruned, Interrupted) as exc:
        trial.set_user_attr("reason", str(exc))
        raise
    except UserError as exc:
        trial.set_user_attr("reason", first_line(exc))
        raise
    except Exception as exc:  # a bug: the trial fails with its reason, the study goes on
        trial.set_user_attr("reason", f"{type(exc).__name__}: {first_line(exc)}")
        raise


def _train_trial(trial: Any, plan: TrialPlan, stopping: Callable[[], bool]) -> float | tuple[float, float]:
    import optuna

    seed = trial_seed(plan.seed, trial.number)
    folder = plan.folder / f"trial-{trial.number:04d}"
    trial.set_user_attr("seed", seed)
    trial.set_user_attr("folder", folder.name)
    cfg = dataclasses.replace(plan.base, **draw(trial, plan.space), seed=seed)
    hook = TrialReport(trial, report=plan.objective == "quality", stopping=stopping)
    try:
        with inside(folder):
            result = plan.train(cfg, out=lambda _: None, hooks=[hook])
    except UserError:
        if hook.diverged is None:
            raise
        episode = hook.last["episode"] + 1 if hook.last else 1
        raise optuna.TrialPruned(f"diverged in episode {episode}: {hook.diverged}") from None
    finally:
        for key, value in hook.outcome(cfg.episodes * cfg.max_steps).items():
            trial.set_user_attr(key, value)
        # A trial is never resumed, and its state holds the replay memory (76 MB at 1,000,000 transitions).
        for state in folder.glob(f"runs/*/{STATE_FILE}"):
            state.unlink(missing_ok=True)
    if result.stopped_by is not None or hook.stop == "interrupted":
        raise Interrupted(f"interrupted at episode {hook.last['episode'] if hook.last else 0}")
    if hook.stop == "pruned":
        raise optuna.TrialPruned(f"pruned at episode {hook.pruned_at}")
    return objective_values(plan.objective, hook.outcome(cfg.episodes * cfg.max_steps))
