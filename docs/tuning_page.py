"""A study's section of ``docs/tuning.md``, written from its journal file alone (``python docs/generate.py``).

The section sits between two markers that name the journal::

    <!-- study benchmarks/results/NAME.log: written by docs/generate.py -->
    ...
    <!-- end of study -->

Everything between them comes from the journal: the command that continues the study (from what the
study keeps of its first command), the trials by state and their CPU time, the Pareto front, every
trial that passed the stopping rule, and the Pareto plot beside the page. Nothing is typed by hand,
so the page cannot disagree with the study it shows.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from dqnkit.tune.report import best_trials, differing, save_plot, short, state_counts
from dqnkit.tune.study import StudySpec, journal_storage
from dqnkit.tune.trial import TrialPlan

SECTION = re.compile(
    r"(<!-- study (?P<journal>\S+\.log): written by docs/generate.py -->\n)(.*?)(<!-- end of study -->)", re.S
)


def open_journal(path: Path) -> Any:
    """The one study of the journal file ``path``, read-only in spirit: nothing is written to it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = journal_storage(path)
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def spec_of(study: Any, journal: str, config: Callable[..., Any]) -> StudySpec:
    """The study's spec, rebuilt from what it keeps of its first command (``config`` is ``main.Config``)."""
    kept = study.user_attrs["tune"]
    seeds = kept.get("seeds_per_trial", 1)  # kept only when not 1 (studies before --seeds-per-trial)
    plan = TrialPlan(config(**kept["budget"]), kept["space"], kept["objective"], kept["seed"], Path("."), print, seeds)
    return StudySpec(name=study.study_name, storage=journal, plan=plan)


def command(spec: StudySpec, budget_defaults: dict[str, Any], seed_default: int) -> str:
    """The ``tune.py`` command that continues the study: every setting it keeps that is not tune.py's default."""
    plan, words = spec.plan, ["python tune.py", f"--study {spec.name}"]
    if plan.space != "all":
        words.append(f"--space {plan.space}")
    if plan.objective != "quality":
        words.append(f"--objective {plan.objective}")
    if plan.seed != seed_default:
        words.append(f"--seed {plan.seed}")
    if plan.seeds_per_trial != 1:
        words.append(f"--seeds-per-trial {plan.seeds_per_trial}")
    for name, default in budget_defaults.items():
        if getattr(plan.base, name) != default:
            words.append(f"--{name.replace('_', '-')} {short(getattr(plan.base, name))}")
    return " ".join([*words, f"--storage {spec.storage}"])


def _settings(trial: Any, spec: StudySpec) -> str:
    """The settings a trial changed from the original defaults, after its label if it was queued."""
    changed, label = differing(trial.params, spec), trial.user_attrs.get("start")
    if not label or changed == "the original defaults":
        return label or changed
    return f"{label}: {changed}"


def _row(trial: Any, spec: StudySpec) -> str:
    a = trial.user_attrs
    passed = f"episode {a['saved_episode']}" if a["passed"] else f"no, in {a['episodes']}"
    charged = "" if a["passed"] else f" ({a['time_cost']:,.0f})"
    cells = [
        str(trial.number),
        str(a["seed"]),
        passed,
        f"{a['score']:.1f}, {a['landed']:.0%}",
        f"{a['mean_length']:.0f}",
        f"{a['steps']:,}",
        f"{a['cpu_seconds']:,.0f}{charged}",
        _settings(trial, spec),
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| trial | seed | passed at | greedy mean, landed | mean length | steps | CPU s (charged) | settings |\n"
    "|---|---|---|---|---|---|---|---|"
)


def section(study: Any, spec: StudySpec, continue_with: str, plot: str | None) -> str:
    """The markdown of the study: counts, CPU time, the front, every passing trial, the plot."""
    trials = study.get_trials(deepcopy=False)
    states = state_counts(trials)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    passing = sorted((t for t in done if t.user_attrs.get("passed")), key=lambda t: t.user_attrs["cpu_seconds"])
    # A trial of several seeds keeps the median of their CPU seconds and, as cpu_seconds_total, their sum.
    cpu = sum(t.user_attrs.get("cpu_seconds_total", t.user_attrs.get("cpu_seconds", 0.0)) for t in trials)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    lines = [
        "```bash",
        continue_with,
        "```",
        "",
        f"{len(trials)} trials: {states['COMPLETE']} complete ({len(passing)} passed the stopping rule), "
        f"{states['PRUNED']} pruned, {states['FAIL']} failed, {states['RUNNING']} running, "
        f"{states['WAITING']} queued (the next command runs them); "
        f"{cpu / 3600:.1f} CPU hours of training"
        + (f", from {min(starts):%Y-%m-%d %H:%M} to {max(ends):%H:%M} UTC." if starts and ends else "."),
        "",
        "**The Pareto front** (greedy mean of the saved agent up, CPU seconds to a passing agent down; a run that "
        "never passed is charged as if it had played its whole budget):",
        "",
        HEADER,
        *(_row(t, spec) for t in sorted(best_trials(study, spec), key=lambda t: t.values[1])),
        "",
    ]
    if passing:
        lines += [f"**Every trial that passed**, fastest first ({len(passing)} of {states['COMPLETE']}):", ""]
        lines += [HEADER, *(_row(t, spec) for t in passing)]
    else:
        several = spec.plan.seeds_per_trial > 1
        lines.append(f"**No trial passed** ({'on most of its seeds, ' if several else ''}of {states['COMPLETE']}).")
    if plot:
        lines += ["", f"![the study's Pareto front: greedy mean against CPU seconds]({plot})"]
    return "\n".join(lines) + "\n"


def rewrite(page: str, root: Path, config: Callable[..., Any], plots: Path | None = None) -> str:
    """``page`` with every study section rewritten from its journal (``config`` is ``main.Config``).

    With ``plots`` (a folder), each study's Pareto plot is drawn there as ``tuning-<study>-pareto.png``
    and the section shows it; without, the section links the plot that is there.
    """
    from dqnkit.tune.command import BUDGET, SEED

    def one(match: re.Match[str]) -> str:
        journal = match["journal"]
        study = open_journal(root / journal)
        spec = spec_of(study, journal, config)
        plot = f"tuning-{study.study_name}-pareto.png"
        if plots is not None:
            pareto_plot(study, plots / plot)
        return match[1] + section(study, spec, command(spec, BUDGET, SEED), plot) + match[4]

    return SECTION.sub(one, page)


def pareto_plot(study: Any, path: Path) -> None:
    """The study's Pareto front as a PNG at ``path`` (written atomically)."""
    from optuna.visualization import matplotlib as plots

    front = partial(plots.plot_pareto_front, study, target_names=["greedy mean", "CPU seconds"])
    if not save_plot(front, path):
        raise ValueError(f"study {study.study_name}: too few finished trials for a Pareto plot")
