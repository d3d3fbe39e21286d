"""Every greedy evaluation of a study's trials, beside the training average at the time: what a gate would skip.

    python benchmarks/evaluations.py benchmarks/results/preset-fast-cheap-study.log \
        runs/tune/preset-fast-cheap --gate 200

Reads the journal (which trials passed, and at which episode) and each trial's ``metrics.csv`` in
the study's folder (the evaluation scores and the training average after each episode); prints, per
finished trial, the evaluations made, those a ``--eval-from-average`` gate would have skipped and the
best score among them, and the training average at which a passing trial passed; then the least such
average over the study. Evaluation draws nothing from training's generators, so a gate changes
which evaluations are made, not what the run learns: these figures say what it would have saved.
"""

from __future__ import annotations

import sys
from pathlib import Path

import common  # the repository on sys.path, one BLAS thread  # isort: skip
import numpy as np

from docs.tuning_page import open_journal
from dqnkit.cli import finite_float
from dqnkit.errors import UserError
from dqnkit.report.logs import read_metrics


def evaluations(metrics: Path) -> list[tuple[int, float, float]]:
    """(episode, training average, evaluation mean) for every evaluation in ``metrics``."""
    m = read_metrics(metrics)
    made = ~np.isnan(m["eval_score"])  # NaN where no evaluation was made
    episodes = m["episode"][made].astype(int).tolist()
    return list(zip(episodes, m["average_100"][made].tolist(), m["eval_score"][made].tolist(), strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = common.parser("evaluations.py", __doc__.splitlines()[0])
    parser.add_argument("journal", type=Path, help="the study's journal file")
    parser.add_argument("folder", type=Path, help="the study's folder of trials (runs/tune/<study>)")
    parser.add_argument("--gate", type=finite_float, default=200.0, help="a training average to evaluate from")
    args = parser.parse_args(argv)
    if not args.journal.is_file():  # before optuna, which would create an empty journal there
        parser.error(f"{args.journal}: no such journal file")
    if not args.folder.is_dir():
        parser.error(f"{args.folder}: no such folder of trials")
    try:
        study = open_journal(args.journal)
    except (UserError, ValueError) as exc:  # not a journal; none or several studies in it
        parser.error(str(exc) if isinstance(exc, UserError) else f"{args.journal}: {exc}")
    print("| trial | passed at | average then | evaluations | below the gate | best score below it |")
    print("|---|---|---|---|---|---|")
    averages, made, skipped = [], 0, 0
    for trial in study.get_trials(deepcopy=False):
        found = sorted(args.folder.glob(f"trial-{trial.number:04d}/runs/*/metrics.csv"))
        if trial.state.name != "COMPLETE" or not found:
            continue
        evals = evaluations(found[-1])
        below = [e for e in evals if e[1] < args.gate]
        passed = trial.user_attrs["saved_episode"] if trial.user_attrs.get("passed") else None
        then = next((avg for episode, avg, _ in evals if episode == passed), None)
        if then is not None:
            averages.append(then)
        made, skipped = made + len(evals), skipped + len(below)
        best = f"{max(e[2] for e in below):.1f}" if below else "-"
        print(
            f"| {trial.number} | {passed or '-'} | {'-' if then is None else f'{then:.1f}'} "
            f"| {len(evals)} | {len(below)} | {best} |"
        )
    print(f"\n{made} evaluations, {skipped} of them below a training average of {args.gate:g}")
    if averages:
        print(f"{len(averages)} trials passed; the least training average at a passing evaluation: {min(averages):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
