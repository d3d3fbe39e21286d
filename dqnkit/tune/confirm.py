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
    workers = processes.start(confirm_worker, (runs, started, spec.plan.train, args.confirm_episodes), args.jobs)
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
    index: int, stop: processes.StopFlag, runs: list[ConfirmRun], started: Any, train: Callable[..., Any], episodes: int
) -> None:
    """One worker: train and evaluate the next run that has no result yet, keep result.json; until none is left."""
    while not stop():
        with started.get_lock():
            i, started.value = started.value, started.value + 1
        if i >= len(runs):
            return
        run, cfg, hook = runs[i], runs[i].cfg, TrialReport(None, report=False, stopping=stop)
        if kept_result(run, episodes) is not None:
            continue  # an earlier command finished it
        result = {"trial": run.trial, "seed": run.seed, "episodes": episodes, "config": dataclasses.asdict(cfg)}
        try:
            trained = train(cfg, out=lambda _: None, hooks=[hook], root=run.folder)
            if trained.stopped_by is not None or hook.stop is not None:
                return  # stopped
            saved = trained.checkpoint if trained.solved_episode is not None else trained.run_dir / BEST_WEIGHTS
            agent = evaluate(
                saved, episodes, UNSEEN_SEED_BASE, env_id=cfg.env, max_steps=cfg.max_steps, out=lambda _: None
            )
        except UserError as exc:  # a diverging loss, say: this seed's run has no agent
            result["error"] = first_line(exc)
        else:
            measured = hook.outcome(cfg.episodes * cfg.max_steps)
            result.update({k: measured[k] for k in ("passed", "saved_episode", "steps", "cpu_seconds")})
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
    row["median_cpu_seconds_to_pass"] = statistics.median(passed) if passed else None
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
