"""What ``tune.py`` shows and keeps: one line per finished trial, the study's summary, ``trials.csv``,
``best_config.json`` and the plots (``optuna.visualization.matplotlib``: PNG files, no plotly)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dqnkit.run.files import atomic_write, write_text
from dqnkit.tune.space import config_overrides, params_of
from dqnkit.tune.study import StudySpec

# The run options every trial sets (trials train quietly, film nothing, stop when their agent passes
# and save it in their own folder); best_config.json puts them back to the defaults of main.py.
TRIAL_RUN_OPTIONS = {"video": False, "quiet": True, "keep_training": False, "checkpoint": "checkpoint.pth"}
# The user attributes of a trial, in the columns of trials.csv.
RECORDED = ("start", "seed", "passed", "score", "landed", "mean_length", "saved_episode", "episodes", "steps")
RECORDED += ("cpu_seconds", "wall_seconds", "time_cost", "reason", "worker", "folder")
# With several seeds a trial (--seeds-per-trial), more columns: each seed's figures and the spread of the objectives.
SEED_COLUMNS = ("seeds", "seeds_passed", "score_min", "score_max", "time_cost_min", "time_cost_max")
SEED_COLUMNS += ("cpu_seconds_total", "seed_scores", "seed_time_costs", "seed_passed")
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def short(value: Any) -> str:
    """A parameter value, short: 4 significant digits for floats."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def differing(params: dict[str, Any], spec: StudySpec) -> str:
    """The parameters that differ from the original defaults, as ``name=value, ...``."""
    default = params_of(spec.plan.base, spec.plan.space)
    changed = [f"{k}={short(v)}" for k, v in params.items() if default.get(k) != v]
    return ", ".join(changed) or "the original defaults"


def outcome_text(attrs: dict[str, Any], objective: str) -> str:
    """The saved agent and the cost of a trial, from its user attributes (under a time objective, the charge too)."""
    if "seed_results" in attrs:
        return seeds_text(attrs, objective)
    parts = []
    if attrs.get("score") is not None:
        which = "" if attrs.get("passed") else f" (best evaluation, episode {attrs.get('saved_episode')})"
        parts.append(f"score {attrs['score']:.1f}, landed {attrs['landed']:.0%}{which}")
    if "steps" in attrs:
        if attrs["passed"]:
            cost = f"passed at episode {attrs['saved_episode']}: "
        else:
            cost = f"not passed in {attrs['episodes']} episodes: "
        cost += f"{attrs['steps']:,} steps, {attrs['cpu_seconds']:.1f} CPU s"
        if objective != "quality" and not attrs["passed"]:
            cost += f", charged {attrs['time_cost']:.1f} CPU s as if it had played its whole budget"
        parts.append(cost)
    return "; ".join(parts)


def seeds_text(attrs: dict[str, Any], objective: str) -> str:
    """The figures of a trial of several seeds: the median of each and the spread of the objectives (min to max)."""
    runs, k = attrs["seed_results"], len(attrs.get("seeds") or attrs["seed_results"])
    of = f"{k} seeds" if len(runs) == k else f"the {len(runs)} of {k} seeds run"
    parts = []
    if attrs.get("score") is not None:
        spread = f"{attrs['score_min']:.1f} to {attrs['score_max']:.1f}"
        parts.append(f"score {attrs['score']:.1f} (median of {of}: {spread}), landed {attrs['landed']:.0%}")
    cost = f"{attrs['seeds_passed']} of {len(runs)} passed; median {attrs['steps']:,.0f} steps, "
    cost += f"{attrs['cpu_seconds']:.1f} CPU s ({attrs['cpu_seconds_total']:.1f} in all)"
    if objective != "quality":  # the time objective, a seed that did not pass charged its whole budget (time_cost)
        spread = f"{attrs['time_cost_min']:.1f} to {attrs['time_cost_max']:.1f}"
        charged = (
            ", the seeds that did not pass charged their whole budget" if attrs["seeds_passed"] < len(runs) else ""
        )
        cost += f"; time {attrs['time_cost']:.1f} CPU s ({spread}{charged})"
    return "; ".join([*parts, cost])


def trial_line(trial: Any, spec: StudySpec) -> str:
    """One line for a finished trial: number, state, what it gave, why it stopped, the settings it changed."""
    attrs = trial.user_attrs
    reason = attrs.get("reason") if trial.state.name != "COMPLETE" else None
    text = [f"trial {trial.number} {trial.state.name}", outcome_text(attrs, spec.plan.objective), reason]
    seeds = f"seeds {', '.join(map(str, attrs['seeds']))}" if "seeds" in attrs else f"seed {attrs.get('seed', '-')}"
    text += [seeds, attrs.get("start") or differing(trial.params, spec)]
    return " | ".join(part for part in text if part)


def best_trials(study: Any, spec: StudySpec) -> list[Any]:
    """The best finished trials, best first: by the objective, or the Pareto front by score."""
    if len(spec.directions) == 2:
        return sorted(study.best_trials, key=lambda t: -t.values[0])
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    sign = -1 if spec.directions[0] == "maximize" else 1
    return sorted(done, key=lambda t: (sign * t.value, t.number))


def state_counts(trials: list[Any]) -> dict[str, int]:
    """How many of ``trials`` are in each state: COMPLETE, PRUNED, FAIL, RUNNING, WAITING."""
    return {s: sum(t.state.name == s for t in trials) for s in STATES}


def summary_lines(study: Any, spec: StudySpec) -> list[str]:
    """The study in a few lines: trials by state, and the best settings so far."""
    trials = study.get_trials(deepcopy=False)
    counts = ", ".join(f"{n} {STATES[state]}" for state, n in state_counts(trials).items())
    lines = [f"study {spec.name}: {len(trials)} trials: {counts}"]
    best = best_trials(study, spec)
    if not best:
        return [*lines, "no trial has finished yet"]
    if len(spec.directions) == 2:
        front = ", ".join(f"{t.number} ({t.values[0]:.1f}, {t.values[1]:.1f} CPU s)" for t in best)
        lines.append(f"Pareto front (score up, CPU seconds to a passing agent or charged down): trials {front}")
    top = best[0]
    lines.append(f"best: trial {top.number}: {outcome_text(top.user_attrs, spec.plan.objective)}")
    lines.append(f"best settings: {top.user_attrs.get('start') or differing(top.params, spec)}")
    return lines


def best_config(trial: Any, spec: StudySpec) -> Any:
    """The configuration of ``trial``, with the run options back at main.py's defaults."""
    default = type(spec.plan.base)()
    options = {k: getattr(default, k) for k in TRIAL_RUN_OPTIONS} | {"seed": trial.user_attrs["seed"]}
    return dataclasses.replace(spec.plan.base, **config_overrides(trial.params), **options)


def write_report(study: Any, spec: StudySpec) -> list[Path]:
    """trials.csv, best_config.json (once a trial has finished) and the plots the trials allow (no empty figure)."""
    from optuna.visualization import matplotlib as plots

    folder, trials = spec.plan.folder, study.get_trials(deepcopy=False)
    params = sorted({name for t in trials for name in t.params})
    values = [f"value_{i}" for i in range(len(study.directions))]
    recorded = RECORDED + (SEED_COLUMNS if spec.plan.seeds_per_trial > 1 else ())
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["number", "state", *values, *recorded, "started", "completed", *params])
    for t in trials:
        row = [t.number, t.state.name, *(t.values or [""] * len(values))]
        row += [cell(t.user_attrs, k) for k in recorded]
        row += [t.datetime_start or "", t.datetime_complete or ""]
        writer.writerow(row + [t.params.get(p, "") for p in params])
    written = [folder / "trials.csv"]
    write_text(written[0], buf.getvalue())
    if best := best_trials(study, spec):
        cfg = dataclasses.asdict(best_config(best[0], spec))
        write_text(folder / "best_config.json", json.dumps(cfg, indent=2) + "\n")
        written.append(folder / "best_config.json")
    complete, two = sum(t.state.name == "COMPLETE" for t in trials), len(spec.directions) == 2
    first = {"target": (lambda t: t.values[0]), "target_name": "score"} if two else {}
    wanted = {}
    if complete >= 1:
        wanted[folder / "history.png"] = lambda: plots.plot_optimization_history(study, **first)
    if complete >= 2:  # importances compare finished trials
        wanted[folder / "importances.png"] = lambda: plots.plot_param_importances(study, **first)
    if any(t.intermediate_values for t in trials):
        wanted[folder / "intermediate.png"] = lambda: plots.plot_intermediate_values(study)
    if two and complete >= 1:
        wanted[folder / "pareto.png"] = lambda: plots.plot_pareto_front(study, target_names=["score", "CPU seconds"])
    return written + [path for path, plot in wanted.items() if save_plot(plot, path)]


def cell(attrs: dict[str, Any], column: str) -> Any:
    """The ``column`` of trials.csv for a trial's user attributes: each seed's figures space-separated."""
    if key := {"seed_scores": "score", "seed_time_costs": "time_cost", "seed_passed": "passed"}.get(column):
        return " ".join(str(r.get(key, "-")) for r in attrs.get("seed_results", []))
    value = attrs.get(column, "")
    return " ".join(map(str, value)) if isinstance(value, list) else value


def save_plot(plot: Callable[[], Any], path: Path) -> bool:
    """Draw ``plot()`` (an ``optuna.visualization.matplotlib`` call) into the PNG ``path``, atomically;
    False, and nothing written, when the study has too few finished trials for it."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, no display needed
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-API notes, legends without labels
        try:
            figure = plot().figure
        except (ValueError, RuntimeError, ZeroDivisionError):  # too few finished trials for this plot
            return False
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", bbox_inches="tight"), ".png")
    plt.close(figure)
    return True
