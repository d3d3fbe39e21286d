"""``tune.py --confirm K``: settings that won on the seeds a study trained on can lose on others, so
each of the K best is trained again on every ``--confirm-seeds`` with the study's budget and rule, and the
agent it saves (as ``benchmarks/compare.py`` takes it) plays greedy episodes on seeds no run trains, films
or selects on. Only these figures are results. Each run keeps ``result.json``, which a rerun reuses."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import statistics
import sys
from collections import namedtuple
from collections.abc import Callable
from typing import Any

from dqnkit.errors import UserError, first_line
from dqnkit.report.evaluation import UNSEEN_SEED_BASE, evaluate
from dqnkit.run import processes
from dqnkit.run.files import write_text
from dqnkit.run.folder import BEST_WEIGHTS
from dqnkit.tune.report import TRIAL_RUN_OPTIONS, best_config, best_trials
from dqnkit.tune.study import StudySpec
from dqnkit.tune.trial import TrialReport

# One retraining: the settings (cfg) of trial number ``trial`` on seed ``seed``, in ``folder``.
ConfirmRun = namedtuple("ConfirmRun", "trial seed cfg folder")


def confirm(study: Any, spec: StudySpec, args: Any) -> int | None:
    """Retrain and evaluate the trials --confirm chooses; print and keep the figures, or return the stopping signal."""
    best = chosen_trials(study, spec, args.confirm, args.confirm_trials)
    runs, folder = [], spec.plan.folder / "confirm"
    for t in best:
        for seed in args.confirm_seeds:  # each trained as a trial is: quiet, no videos, in a folder of its own
            cfg = dataclasses.replace(best_config(t, spec), seed=seed, **TRIAL_RUN_OPTIONS)
            runs.append(ConfirmRun(t.number, seed, cfg, folder / f"trial-{t.number:04d}-seed-{seed}"))
    what = "the trials named" if args.confirm_trials else f"the {len(best)} best"
    named, seeds = ", ".join(str(t.number) for t in best), ", ".join(map(str, args.confirm_seeds))
    print(f"confirming {what} ({named}) on seeds {seeds}: {len(runs)} runs on {args.jobs} worker processes", flush=True)
    started = multiprocessing.get_context("spawn").Value("i", 0)
    size = len(args.confirm_seeds) if args.confirm_together else 1  # runs are in trial order, seeds within
    groups = [runs[i : i + size] for i in range(0, len(runs), size)]
    workers = processes.start(confirm_worker, (groups, started, spec.plan.train, args.confirm_episodes), args.jobs)
    stopped_by = processes.watch(workers, lambda process: None, lambda text: print(text, file=sys.stderr, flush=True))
    if stopped_by is not None:
        return stopped_by
    results = [kept_result(run, args.confirm_episodes) for run in runs]
    rows = [summarize([r for r in results if r and r["trial"] == t.number], t.number) for t in best]
    if spec.plan.seeds_per_trial > 1:  # beside them, what each gave in the study: its median and spread over seeds
        for row, t in zip(rows, best, strict=True):
            row.update({f"study_{k}": t.user_attrs.get(k) for k in ("score", "score_min", "score_max")})
    print("\n".join(confirm_table(rows, args.confirm_seeds, args.confirm_episodes)))
    path = spec.plan.folder / "confirm.json"
    write_text(path, json.dumps({"seeds": args.confirm_seeds, "trials": rows, "runs": results}, indent=2) + "\n")
    print(f"written: {path}")
    return None


def chosen_trials(study: Any, spec: StudySpec, k: int, numbers: list[int]) -> list[Any]:
    """The trials to confirm: those ``numbers`` name, or else the ``k`` best; one line if there are none."""
    if not numbers:
        best = best_trials(study, spec)[:k]
        if not best:
            raise UserError("--confirm: no trial of the study has finished yet")
        return best
    done = {t.number: t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"}
    if missing := [n for n in numbers if n not in done]:
        raise UserError(f"--confirm-trials: trial {missing[0]} of study {spec.name} has not finished (or is not there)")
    return [done[n] for n in numbers]


def kept_result(run: ConfirmRun, episodes: int) -> dict[str, Any] | None:
    """The result a run kept, if it was made with these settings and this many evaluation episodes."""
    try:
        saved = json.loads((run.folder / "result.json").read_text())
    except (OSError, ValueError):
        return None
    same = saved.get("config") == dataclasses.asdict(run.cfg) and saved.get("episodes") == episodes
    return saved if same else None


def confirm_worker(
    index: int, stop: processes.StopFlag, groups: list[list[ConfirmRun]], started: Any, train: Callable, episodes: int
) -> None:
    """One worker: train and evaluate the next group of runs (one run, or with --confirm-together a trial's seeds
    together) that has no result yet, keep each one's result.json; until none is left."""
    while not stop():
        with started.get_lock():
            i, started.value = started.value, started.value + 1
        if i >= len(groups):
            return
        group = [run for run in groups[i] if kept_result(run, episodes) is None]  # an earlier command kept the rest
        if not group:
            continue
        hooks = [TrialReport(None, report=False, stopping=stop) for _ in group]
        trained, together = train_group(train, group, hooks)
        for run, hook, outcome in zip(group, hooks, trained, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, UserError):
                raise outcome
            if not isinstance(outcome, UserError) and (outcome.stopped_by is not None or hook.stop is not None):
                return  # stopped
            keep_result(run, hook, outcome, episodes, together)


def train_group(train: Callable, group: list[ConfirmRun], hooks: list[TrialReport]) -> tuple[list[Any], bool]:
    """Train the runs of ``group`` (with their ``hooks``): together when there are several and the stack can train
    their settings, else one after the other; each run's result (or the UserError that ended it), and whether
    they were trained together."""
    from dqnkit.learn.batched import BatchedAgents
    from dqnkit.run.batch import seeds_problem, train_together

    cfgs = [r.cfg for r in group]
    if len(group) > 1 and seeds_problem(cfgs[0], [c.seed for c in cfgs]) is None:
        roots, each = [r.folder for r in group], lambda j: [hooks[j]]
        return train_together(train, cfgs, [None] * len(group), BatchedAgents, roots, lambda _: None, each, True), True
    trained: list[Any] = []
    for run, hook in zip(group, hooks, strict=True):
        try:
            trained.append(train(run.cfg, out=lambda _: None, hooks=[hook], root=run.folder))
        except UserError as exc:
            trained.append(exc)
    return trained, False


def keep_result(run: ConfirmRun, hook: TrialReport, trained: Any, episodes: int, together: bool) -> None:
    """Evaluate the agent a finished run saved (``trained``, or the UserError that ended it) and keep result.json.
    Runs trained ``together`` share one process's CPU time: theirs is not recorded."""
    cfg = run.cfg
    result = {"trial": run.trial, "seed": run.seed, "episodes": episodes, "config": dataclasses.asdict(cfg)}
    try:
        if isinstance(trained, UserError):
            raise trained
        saved = trained.checkpoint if trained.solved_episode is not None else trained.run_dir / BEST_WEIGHTS
        agent = evaluate(saved, episodes, UNSEEN_SEED_BASE, env_id=cfg.env, max_steps=cfg.max_steps, out=lambda _: None)
    except UserError as exc:  # a diverging loss, say: this seed's run has no agent
        result["error"] = first_line(exc)
    else:
        measured = hook.outcome(cfg.episodes * cfg.max_steps)
        result.update({k: measured[k] for k in ("passed", "saved_episode", "steps", "cpu_seconds")})
        if together:
            result.update(cpu_seconds=None, together=True)
        result.update(score=agent.mean_score, landed=agent.landed_share, mean_length=agent.mean_length)
        result["on_pad"] = agent.on_pad / len(agent.outcomes)
    write_text(run.folder / "result.json", json.dumps(result, indent=2) + "\n")
    shown = f"score {result['score']:.1f}, landed {result['landed']:.0%}" if "score" in result else result["error"]
    print(f"confirm trial {run.trial} seed {run.seed}: {shown}", flush=True)


def summarize(results: list[dict[str, Any]], trial: int) -> dict[str, Any]:
    """Median and worst over the seeds of one trial (a seed whose run failed counts as the worst)."""
    agents = [r for r in results if "score" in r]
    passed = [r["cpu_seconds"] for r in agents if r["passed"]]
    row = {"trial": trial, "runs": len(results), "passed": len(passed)}
    timed = [seconds for seconds in passed if seconds is not None]  # none for seeds trained together
    row["median_cpu_seconds_to_pass"] = statistics.median(timed) if timed else None
    for key in ("score", "landed", "mean_length"):
        values = [r[key] for r in agents]
        row[f"median_{key}"] = statistics.median(values) if values else None
        if key != "mean_length":
            row[f"worst_{key}"] = min(values) if values and len(agents) == len(results) else None
    return row


def confirm_table(rows: list[dict[str, Any]], seeds: list[int], episodes: int) -> list[str]:
    """The confirmation as a Markdown table, one row per trial."""
    columns = ("median_cpu_seconds_to_pass", ".1f"), ("median_score", ".1f"), ("worst_score", ".1f")
    columns += ("median_landed", ".0%"), ("worst_landed", ".0%"), ("median_mean_length", ".0f")
    lines = [
        f"saved agents, {episodes} greedy episodes each from seed {UNSEEN_SEED_BASE:,} (no run trains, films or "
        f"selects on them); seeds {', '.join(map(str, seeds))}:",
        "| trial | passed | CPU s to pass (median) | score: median | worst | landed: median | worst | mean length |",
        "|---|---|---|---|---|---|---|---|",
    ]
    study = bool(rows) and "study_score" in rows[0]  # a study of several seeds a trial: its figures in one more column
    if study:
        lines[1] += " in the study: median score (min to max) |"
        lines[2] += "---|"
    for r in rows:
        cells = ["-" if r[key] is None else format(r[key], spec) for key, spec in columns]
        if study:
            known = None not in (r["study_score"], r["study_score_min"], r["study_score_max"])
            figures = f"{r['study_score']:.1f} ({r['study_score_min']:.1f} to {r['study_score_max']:.1f})"
            cells.append(figures if known else "-")
        lines.append(f"| {r['trial']} | {r['passed']} of {r['runs']} | {' | '.join(cells)} |")
    return lines
