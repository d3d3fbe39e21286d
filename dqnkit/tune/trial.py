"""One trial of ``tune.py``: ``main.train`` with one more hook (:class:`TrialReport`) and the trial's folder,
``runs/tune/<study>/trial-NNNN/``, as its ``root``: its ``runs/<run>/`` and ``checkpoint.pth`` stay there."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqnkit.errors import UserError, first_line
from dqnkit.report.evaluation import UNSEEN_SEED_BASE, EvalResult, PeriodicEvaluation
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
    seed: int  # trial N trains with seed + N (seeds seed + N * K + j, j < K, with K seeds per trial)
    folder: Path  # the study's, absolute
    train: Callable[..., Any]  # main.train
    seeds_per_trial: int = 1  # K, --seeds-per-trial: seeds each trial trains, one after the other


class TrialReport(Hook):
    """The hook that makes a run a trial: it reports, prunes, and measures the cost to a passing agent. With
    ``report`` (single-objective quality), each evaluation's mean is Optuna's intermediate value at its episode,
    and the run stops when ``trial.should_prune()``, or ``stopping()`` after any episode. ``final_check``: how to
    judge a run that ended without a check (its training average never reached ``eval_from_average``)."""

    def __init__(
        self, trial: Any, report: bool, stopping: Callable[[], bool], final_check: Callable[[Any], Any] | None = None
    ) -> None:
        self.trial, self.report, self.stopping, self.final_check = trial, report, stopping, final_check
        self.best: tuple[int, Any] | None = None  # (episode, EvalResult) of the best evaluation so far
        self.passed: dict[str, Any] | None = None  # the moment the stopping rule passed
        self.last: dict[str, Any] | None = None  # the moment of the last finished episode
        self.diverged: str | None = None  # the FloatingPointError of a diverging loss

    def on_start(self, agent: Any) -> None:
        self.agent = agent
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

    def on_end(self) -> None:
        # After the run's clock: a run that never passed is charged its whole budget anyway (time_cost).
        if self.best is None and self.last is not None and self.final_check is not None and self.stop is None:
            self.best = (self.last["episode"], self.final_check(self.agent.local_qnetwork))

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


def trial_seeds(plan: TrialPlan, number: int) -> list[int]:
    """The seeds of trial ``number``: ``seed + number * K + j`` for j below K (``--seeds-per-trial``), blocks of K
    in a row that no other trial's overlap (K = 1: seed + number, one seed a trial). None may reach the judging seeds
    (2,000,000 and up: ``--confirm``'s evaluations); a trial that would is a one-line error."""
    k = plan.seeds_per_trial
    seeds = [plan.seed + number * k + j for j in range(k)]
    if seeds[-1] >= UNSEEN_SEED_BASE:
        raise UserError(
            f"trial {number} would train on seed {seeds[-1]}, one of the judging seeds from "
            f"{UNSEEN_SEED_BASE:,}: give a lower --seed"
        )
    return seeds


def run_trial(trial: Any, plan: TrialPlan, stopping: Callable[[], bool]) -> float | tuple[float, float]:
    """The objective: train the settings ``trial`` draws on each of its seeds, one after the other, in the trial's
    folder (``seed-S/`` in it for each seed when there are several); record and return the median over the seeds
    of what one seed gives. Only the first seed's evaluations are reported to the pruner (docs/tuner.md). A pruned
    or diverging (NaN loss) run raises ``optuna.TrialPruned``, one stopped by Ctrl-C :class:`Interrupted`, any
    other error fails the trial; the trial keeps the reason as ``reason``."""
    import optuna

    try:
        folder = plan.folder / f"trial-{trial.number:04d}"
        seeds = trial_seeds(plan, trial.number)
        trial.set_user_attr("seed", seeds[0])
        trial.set_user_attr("folder", folder.name)
        if len(seeds) > 1:
            trial.set_user_attr("seeds", seeds)
        settings, records = draw(trial, plan.space), []
        for j, seed in enumerate(seeds):
            cfg = dataclasses.replace(plan.base, **settings, seed=seed)
            where = f" of seed {seed} ({j + 1} of {len(seeds)})" if len(seeds) > 1 else ""
            root = folder / f"seed-{seed}" if len(seeds) > 1 else folder
            check = greedy_check(cfg) if cfg.eval_from_average is not None else None
            report = plan.objective == "quality" and j == 0
            hook = TrialReport(trial, report=report, stopping=stopping, final_check=check)
            try:
                train_seed(plan, cfg, hook, root, where)
            finally:
                records.append({"seed": seed, **hook.outcome(cfg.episodes * cfg.max_steps)})
                for key, value in seeds_record(records, len(seeds)).items():
                    trial.set_user_attr(key, value)
    except Exception as exc:  # a bug's reason names its type; the trial fails, the study goes on
        expected = isinstance(exc, optuna.TrialPruned | Interrupted | UserError)
        trial.set_user_attr("reason", first_line(exc) if expected else f"{type(exc).__name__}: {first_line(exc)}")
        raise
    cost = statistics.median(r["time_cost"] for r in records)
    if plan.objective == "time":
        return cost
    score = statistics.median(r["score"] for r in records)  # KeyError, a failed trial, if a seed has no agent
    return score if plan.objective == "quality" else (score, cost)


def greedy_check(cfg: Any) -> Callable[[Any], EvalResult]:
    """One check of the stopping rule's greedy episodes (the same unseen seeds), for a run whose training average
    never reached ``eval_from_average``: it gives the trial a score where no check did."""

    def check(network: Any) -> EvalResult:
        # best_score infinite: nothing to save, the run's own best.pth stays as the run left it.
        evaluation = PeriodicEvaluation(cfg.env, cfg.max_steps, 1, cfg.eval_episodes, Path(), best_score=float("inf"))
        try:
            evaluation.run(network)
        finally:
            evaluation.close()
        return evaluation.last

    return check


def train_seed(plan: TrialPlan, cfg: Any, hook: TrialReport, root: Path, where: str) -> None:
    """One seed's run of a trial, ``main.train`` in ``root``; raise what stopped it early (``where``: which seed)."""
    import optuna

    try:
        result = plan.train(cfg, out=lambda _: None, hooks=[hook], root=root)
    except UserError:
        if hook.diverged is None:
            raise
        episode = hook.last["episode"] + 1 if hook.last else 1
        raise optuna.TrialPruned(f"diverged in episode {episode}{where}: {hook.diverged}") from None
    finally:
        # A trial is never resumed, and its state holds the replay memory (76 MB at 1,000,000 transitions).
        for state in root.glob(f"runs/*/{STATE_FILE}"):
            state.unlink(missing_ok=True)
    if result.stopped_by is not None or hook.stop == "interrupted":
        raise Interrupted(f"interrupted at episode {hook.last['episode'] if hook.last else 0}{where}")
    if hook.stop == "pruned":
        raise optuna.TrialPruned(f"pruned at episode {hook.last['episode']}{where}")  # the run stopped after it


def seeds_record(records: list[dict[str, Any]], per_trial: int) -> dict[str, Any]:
    """What a trial records of its seeds' runs (``records``, each :meth:`TrialReport.outcome` and its ``seed``).
    One seed a trial: its record as it is. Several: the median of each figure over the seeds run so far, ``passed``
    when more than half of them passed (the median seed did), how many did, the spread (min, max) of the two
    objectives, the CPU seconds of all of them, and every seed's own record (``seed_results``)."""
    if per_trial == 1:
        return {key: value for key, value in records[0].items() if key != "seed"}
    passed = sum(r["passed"] for r in records)
    record: dict[str, Any] = {key: median_of(records, key) for key in ("steps", "cpu_seconds", "wall_seconds")}
    record.update(passed=2 * passed > len(records), seeds_passed=passed)
    record.update({key: median_of(records, key) for key in ("episodes", "saved_episode", "time_cost")})
    for key in ("score", "landed", "mean_length"):
        if (value := median_of(records, key)) is not None:
            record[key] = value
    for key in ("score", "time_cost"):
        if values := [r[key] for r in records if r.get(key) is not None]:
            record.update({f"{key}_min": min(values), f"{key}_max": max(values)})
    record["cpu_seconds_total"] = sum(r["cpu_seconds"] for r in records)
    record["seed_results"] = records
    return record


def median_of(records: list[dict[str, Any]], key: str) -> Any:
    """The median of ``key`` over the records that have it (an evaluated agent, a saved episode), or None."""
    values = [r[key] for r in records if r.get(key) is not None]
    return statistics.median(values) if values else None
