"""``tune.py``: an Optuna study over the settings of ``main.Config``, run by worker processes. ``tune.py`` hands
in ``main.Config`` and ``main.train`` (each trial is a run of it): the package never imports main.py."""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqnkit import cli
from dqnkit.cli import nonnegative_int, positive_int, seed_number
from dqnkit.errors import UserError
from dqnkit.run import processes
from dqnkit.tune import study as studies
from dqnkit.tune.confirm import confirm
from dqnkit.tune.report import TRIAL_RUN_OPTIONS, summary_lines, trial_line, write_report
from dqnkit.tune.space import SPACES
from dqnkit.tune.trial import OBJECTIVES, Interrupted, TrialPlan, run_trial

PROG = "tune.py"
DESCRIPTION = "Tune the DQN's settings with an Optuna study; every trial is a run of main.py (docs/tuner.md)."
# Each trial's budget and stopping rule: main.py's flags, with these defaults (--preset fast's rule).
BUDGET = {"env": "LunarLander-v3", "episodes": 1000, "max_steps": 1000, "eval_every": 20, "eval_episodes": 100}
BUDGET |= {"eval_target": 260.0, "eval_landed": 0.98, "backprop": "autograd"}
SEED = 1000  # trial N trains with seed SEED + N (seeds SEED + N * K + j, j < K, with --seeds-per-trial K)
CONFIRM_SEEDS = (100, 101, 102, 103, 104)  # no trial's (the study seed's default is 1000) and no benchmark's
LEAST_CONFIRM_SEEDS = 5
FAILURES_IN_A_ROW = 3  # a worker whose trials keep failing stops: the same error would fail every trial

OBJECTIVE_HELP = (
    "what the sampler optimizes: quality (the greedy mean of the agent a run saves; pruned), time (CPU "
    "seconds to an agent that passes the stopping rule) or both (a Pareto front); both are recorded always"
)
SEEDS_HELP = (
    "seeds each trial trains with its settings, one after the other; it gives the median over them of each "
    "objective, and the first seed's evaluations to the pruner"
)
CONFIRM_HELP = (
    "retrain the K best settings on each of --confirm-seeds and play each saved agent greedily for "
    "--confirm-episodes episodes on seeds no run used (2,000,000 and up): the figures to quote"
)


def parse_arguments(argv: list[str], config_cls: type, train: Callable, root: Path) -> tuple[studies.StudySpec, Any]:
    """The command line: the study (in ``root``'s ``runs/tune/``) and the other options; bad input exits in one line."""
    parser = cli.OneLineParser(PROG, description=DESCRIPTION, formatter_class=cli.HelpFormatter, allow_abbrev=False)
    add = parser.add_argument_group("the study").add_argument
    add("--study", required=True, metavar="NAME", help="the study's name: letters, digits, . _ -")
    add("--trials", type=nonnegative_int, default=20, metavar="N", help="trials this command runs, over its workers")
    add("--jobs", type=positive_int, default=1, metavar="N", help="worker processes on this machine")
    add("--max-total-trials", type=positive_int, metavar="N", help="stop once the study holds N trials, every worker's")
    add("--objective", choices=tuple(OBJECTIVES), default="quality", help=OBJECTIVE_HELP)
    spaces = "all settings, the original's only, the cheap ones, or those and when checks begin (docs/tuner.md)"
    add("--space", choices=tuple(SPACES), default="all", help=spaces)
    add("--sampler", choices=("tpe", "random"), default="tpe", help="seeded; TPE is multivariate")
    add("--pruner", choices=("median", "halving", "none"), help="default: median for --objective quality")
    add("--seed", type=seed_number, default=SEED, help="trial N trains with seed SEED + N (SEED + N*K + j: K seeds)")
    add("--seeds-per-trial", type=positive_int, default=1, metavar="K", help=SEEDS_HELP)
    add("--storage", metavar="URL", help=f"default: {studies.TUNE_DIR}/<study>.log; or postgresql://...")
    add("--heartbeat-interval", type=positive_int, default=60, metavar="S", help="database: seconds between beats")
    silent = "database: a trial silent this long has failed"
    add("--grace-period", type=positive_int, default=120, metavar="S", help=silent)
    budget = parser.add_argument_group("each trial's budget and stopping rule (as in main.py)")
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    for name, default in BUDGET.items():
        cli.add_field_flag(budget, fields[name], default)
    add = parser.add_argument_group("confirmation").add_argument
    add("--confirm", type=nonnegative_int, default=0, metavar="K", help=CONFIRM_HELP)
    add("--confirm-seeds", type=seed_number, nargs="+", default=list(CONFIRM_SEEDS), metavar="SEED", help="5 or more")
    add("--confirm-episodes", type=positive_int, default=100, metavar="N", help="greedy episodes per saved agent")
    together = "train each trial's --confirm-seeds together in one process (as main.py --seeds): faster; no CPU time"
    add("--confirm-together", action="store_true", help=together + " to pass is then measured")
    named = "retrain these finished trials instead of the K best (the one a preset was chosen from)"
    add("--confirm-trials", type=nonnegative_int, nargs="+", default=[], metavar="N", help=named)
    args = parser.parse_args(argv)
    if problem := arguments_problem(args):
        parser.error(problem)
    base = config_cls(**{name: getattr(args, name) for name in BUDGET}, **TRIAL_RUN_OPTIONS)
    if problem := cli.config_problem(base):
        parser.error(problem)
    try:
        storage = studies.storage_location(args.storage, args.study, root)
    except UserError as exc:
        parser.error(str(exc))
    folder = (root / studies.TUNE_DIR / args.study).resolve()
    plan = TrialPlan(base, args.space, args.objective, args.seed, folder, train, args.seeds_per_trial)
    pruner = args.pruner or ("median" if args.objective == "quality" else "none")
    beats = args.heartbeat_interval, args.grace_period
    return studies.StudySpec(args.study, storage, plan, args.sampler, pruner, *beats), args


def arguments_problem(args: argparse.Namespace) -> str | None:
    """Combinations the flags alone cannot refuse; a message or None."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.study):
        return f"--study {args.study!r}: use letters, digits, '.', '_' and '-' (it names a file and a folder)"
    if args.pruner not in (None, "none") and args.objective != "quality":
        return f"--pruner {args.pruner} goes with --objective quality: only its evaluations are reported to prune on"
    if args.eval_every < 1 or args.episodes < args.eval_every:
        return f"each trial must evaluate: --eval-every ({args.eval_every}) from 1 to --episodes ({args.episodes})"
    if args.grace_period <= args.heartbeat_interval:
        return f"--grace-period ({args.grace_period}) must be longer than --heartbeat-interval"
    if len(set(args.confirm_seeds)) != len(args.confirm_seeds):
        return f"--confirm-seeds must be distinct, got {args.confirm_seeds}"
    if args.confirm_trials and args.confirm:
        return "--confirm K and --confirm-trials N ...: give one of them"
    confirming = args.confirm or args.confirm_trials
    if confirming and max(args.confirm_seeds) >= args.seed:
        return f"--confirm-seeds must be below --seed ({args.seed}): trials train on seeds from it, not these"
    if confirming and len(args.confirm_seeds) < LEAST_CONFIRM_SEEDS:
        return f"--confirm needs at least {LEAST_CONFIRM_SEEDS} --confirm-seeds: fewer let one lucky seed decide"
    return None


@dataclass
class Budget:
    """The trials this command may still start, shared by its workers: ``claim`` one before each trial. Counting
    the study's trials and creating the next one happen under one lock, so two workers of one command never pass
    ``--max-total-trials``; other machines count the storage alone and may pass it by one."""

    trials: int
    max_total: int | None
    started: Any  # a multiprocessing Value: trials this command has started
    gate: Any  # a multiprocessing Lock
    held: bool = False

    def claim(self, study: Any) -> bool:
        """Hold the gate and take one trial, or let go and return False when none is left."""
        self.held = self.gate.acquire(timeout=30)  # a worker killed holding it must not stop the others
        with self.started.get_lock():
            left = self.started.value < self.trials
            if left and self.max_total is not None:  # trials started, in any state; not those only queued
                left = sum(t.state.name != "WAITING" for t in study.get_trials(deepcopy=False)) < self.max_total
            if left:
                self.started.value += 1
        if not left:
            self.release()
        return left

    def release(self) -> None:
        """Let the next worker count: the trial exists (or will not)."""
        if self.held:
            self.held = False
            self.gate.release()


def study_worker(index: int, stop: processes.StopFlag, spec: studies.StudySpec, budget: Budget) -> None:
    """One worker: run trials until the budget is spent, the study is full or the command says stop."""
    try:
        study = studies.open_study(spec)
        failures = 0

        def objective(trial: Any) -> Any:
            # host:pid: the command fails the trials of a worker that was killed (studies.fail_orphaned_trials)
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            budget.release()
            try:
                return run_trial(trial, spec.plan, stop)
            except Interrupted:
                stop.set = True
                raise

        def finished(study: Any, trial: Any) -> None:
            nonlocal failures
            print(trial_line(trial, spec), flush=True)
            failures = failures + 1 if trial.state.name == "FAIL" and not stop() else 0
            if failures >= FAILURES_IN_A_ROW:
                print(f"worker {index}: {failures} trials in a row failed; it stops (the reasons are above)")
                stop.set = True

        while not stop() and budget.claim(study):
            try:
                study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[finished])
            finally:
                budget.release()
    except UserError as exc:
        print(f"{PROG}: worker {index}: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def run_study(spec: studies.StudySpec, study: Any, args: argparse.Namespace) -> int | None:
    """Run up to ``--trials`` trials on ``--jobs`` worker processes; return the signal that stopped them, if any."""
    context = multiprocessing.get_context("spawn")
    budget = Budget(args.trials, args.max_total_trials, context.Value("i", 0), context.Lock())
    workers = processes.start(study_worker, (spec, budget), args.jobs)

    def ended(process: Any) -> None:
        if process.exitcode != 0:  # killed, or failed: its trial must not stay RUNNING
            for number in studies.fail_orphaned_trials(study):
                print(f"trial {number} FAIL | its worker (process {process.pid}) ended mid-trial", flush=True)

    return processes.watch(workers, ended, lambda text: print(text, file=sys.stderr, flush=True))


def main(argv: list[str], config_cls: type, train: Callable[..., Any], root: Path = Path()) -> int:
    """The command: open (or make) the study, run the trials, report, confirm; returns the exit status."""
    spec, args = parse_arguments(argv, config_cls, train, root)
    try:
        study = studies.open_study(spec)
        # The first line: which study, where, how many trials it holds, and what this command will do.
        held = sum(t.state.name != "WAITING" for t in study.get_trials(deepcopy=False))
        where = studies.hide_password(spec.storage) if "://" in spec.storage else relative(spec.storage)
        pruner = f", pruner {spec.pruner}" if spec.plan.objective == "quality" else ""
        k = spec.plan.seeds_per_trial
        seeds = f", {k} seeds per trial (the median of each objective)" if k > 1 else ""
        print(
            f"study {spec.name} in {where}: {held or 'new, no'} trials so far; objective {spec.plan.objective}, "
            f"sampler {spec.sampler}{pruner}{seeds}; this command: up to {args.trials} trials on {args.jobs} worker "
            f"process{'es' if args.jobs > 1 else ''}; trials in {relative(spec.plan.folder)}/"
        )
        for number in studies.fail_orphaned_trials(study):
            print(f"trial {number} FAIL | its worker was killed before this command started")
        if again := studies.requeue_unfinished(study):
            print(f"queued again, as they were stopped before they finished: trials {', '.join(map(str, again))}")
        stopped_by = run_study(spec, study, args) if args.trials else None
        studies.fail_orphaned_trials(study)
        written = write_report(study, spec)
        print("\n".join(summary_lines(study, spec)))
        print("written: " + ", ".join(relative(path) for path in written))
        if (args.confirm or args.confirm_trials) and stopped_by is None:
            stopped_by = confirm(study, spec, args)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0 if stopped_by is None else 128 + stopped_by


def relative(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it lies below it, as the user would type it."""
    path, here = Path(path), Path.cwd()
    return str(path.relative_to(here) if path.is_relative_to(here) else path)
