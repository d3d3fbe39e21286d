"""tune.py: the search space, a trial as a real run, and the command with two worker processes on a journal file.

Every study here trains for real on tiny budgets (50-step episodes, a few episodes per trial), so a
trial takes about a second; the workers are real processes, the storage a real journal file.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage

import main
from docs import tuning_page
from dqnkit.errors import UserError
from dqnkit.report.evaluation import EvalResult
from dqnkit.run.files import load_file, network_from_weights
from dqnkit.run.hooks import Episode
from dqnkit.saved_config import read_config_file
from dqnkit.settings import apply_preset
from dqnkit.tune import command as tuning
from dqnkit.tune import trial as trials
from dqnkit.tune.confirm import confirm_table
from dqnkit.tune.report import summary_lines, trial_line, write_report
from dqnkit.tune.space import SPACES, config_overrides, contains, draw, params_of
from dqnkit.tune.study import StudySpec, make_sampler, open_study, storage_location
from dqnkit.tune.trial import Interrupted, TrialPlan, greedy_check, run_trial, seeds_record, time_cost, trial_seeds

TINY = ["--episodes", "6", "--max-steps", "50", "--eval-every", "2", "--eval-episodes", "2", "--eval-target", "1000"]


def tune(cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python tune.py ARGS`` in ``cwd``, as a user runs it."""
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(
        [sys.executable, str(root / "tune.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def start_tune(cwd: Path, *args: str) -> subprocess.Popen:
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, str(root / "tune.py"), *args]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def journal_study(cwd: Path, name: str) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(cwd / "runs" / "tune" / f"{name}.log")))
    return optuna.load_study(study_name=name, storage=storage)


def wait_for(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def running(cwd: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's RUNNING trials whose worker is recorded (an empty list while the journal does not exist)."""
    if not (cwd / "runs" / "tune" / f"{name}.log").exists():
        return []
    trials = journal_study(cwd, name).get_trials(states=(optuna.trial.TrialState.RUNNING,))
    return [t for t in trials if "worker" in t.user_attrs]


# ---------------------------------------------------------------- the search space


@pytest.mark.parametrize("space", sorted(SPACES))
def test_the_original_defaults_and_the_preset_are_points_of_the_space(space: str) -> None:
    default, preset = main.Config(eval_every=20), apply_preset(main.Config(), "fast")
    for cfg in (default, preset):
        fields = config_overrides(params_of(cfg, space))
        assert fields == {k: getattr(cfg, k) for k in fields}, "the space gives back the settings it was given"
    assert params_of(default, "all")["subsample_steps"] == 4  # learn every 4 steps, 4 // 4 = 1 gradient step
    assert params_of(preset, "fast")["eval_every"] == 20 and "eval_every" not in params_of(preset, "all")


def test_a_trial_draws_the_zoo_rhythm_and_the_decay_end_by_hand() -> None:
    params = {**params_of(main.Config(), "all"), "learn_every": 8, "subsample_steps": 4}
    params.update(learning_rate=2e-3, lr_decay_steps=100_000)
    fields = draw(optuna.trial.FixedTrial(params), "all")
    assert (fields["learn_every"], fields["gradient_steps"]) == (8, 2)  # zoo: max(train_freq // subsample, 1)
    assert fields["learning_rate_end"] == pytest.approx(1e-4)  # 2e-3 x 0.05
    assert "subsample_steps" not in fields
    assert config_overrides({**params, "learn_every": 1000, "subsample_steps": 8})["gradient_steps"] == 125


@pytest.mark.parametrize("kind", ["tpe", "random"])
def test_two_commands_on_one_study_draw_by_trial_number_not_by_command(kind: str) -> None:
    """Two samplers made at once, as by two commands, draw other settings for other trials, the same for one."""
    spec = StudySpec(
        name="s", storage="", plan=TrialPlan(main.Config(), "all", "both", 1000, Path("."), main.train), sampler=kind
    )
    study = optuna.create_study(directions=["maximize", "minimize"])
    first, second = make_sampler(spec), make_sampler(spec)  # one seed per command drew the same twice
    drawn = []
    for sampler in (first, second, first, second):
        study.sampler = sampler
        trial = study.ask()
        drawn.append(draw(trial, "all"))
        study.tell(trial, [0.0, 1.0])
    assert all(a != b for i, a in enumerate(drawn) for b in drawn[i + 1 :])
    again = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(spec))
    assert draw(again.ask(), "all") == drawn[0]  # one command on a fresh study: the same sequence


def test_settings_outside_the_space_are_refused() -> None:
    with pytest.raises(ValueError, match="hidden_size=96 is outside"):
        params_of(main.Config(hidden_size=96), "all")
    with pytest.raises(ValueError, match="no subsample_steps gives gradient_steps=3"):
        params_of(main.Config(gradient_steps=3), "all")
    double = next(p for p in SPACES["all"] if p.name == "double_dqn")
    assert contains(double, True) and not contains(double, 1)  # True == 1 in Python; not here
    decay = next(p for p in SPACES["all"] if p.name == "epsilon_decay_steps")
    assert contains(decay, 5_000) and not contains(decay, 5_500) and not contains(decay, 5_000.0)


def test_the_time_objective_charges_a_run_that_never_passes_its_whole_budget() -> None:
    assert time_cost({"passed": True, "cpu_seconds": 12.5, "steps": 4000}, ceiling_steps=20_000) == 12.5
    # 10 CPU seconds for 5,000 steps, and 20,000 allowed: 40 seconds at that pace.
    assert time_cost({"passed": False, "cpu_seconds": 10.0, "steps": 5000}, ceiling_steps=20_000) == 40.0


# ---------------------------------------------------------------- a trial is a real run


def _plan(tmp_path: Path, objective: str = "quality", **budget) -> TrialPlan:
    base = main.Config(episodes=6, max_steps=50, eval_every=2, eval_episodes=2, eval_target=1000.0, **budget)
    base = dataclasses.replace(base, video=False, quiet=True)
    return TrialPlan(base, "original", objective, 1000, tmp_path / "study", main.train)


def test_a_trial_below_the_median_is_pruned_at_its_first_evaluation(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(1, 0))
    study.add_trial(optuna.trial.create_trial(value=1e9, intermediate_values={2: 1e9, 4: 1e9, 6: 1e9}))
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="pruned at episode 2"):
        run_trial(trial, _plan(tmp_path), stopping=lambda: False)
    attrs = study.trials[1].user_attrs
    assert attrs["reason"] == "pruned at episode 2" and attrs["episodes"] == 2 and attrs["seed"] == 1001
    assert study.trials[1].intermediate_values.keys() == {2}
    (metrics,) = (tmp_path / "study" / "trial-0001").glob("runs/*/metrics.csv")
    assert len(metrics.read_text().splitlines()) == 1 + 2, "the run itself stopped after episode 2"


def test_a_trial_returns_the_saved_agents_evaluation_and_records_both_objectives(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: run_trial(t, _plan(tmp_path), lambda: False), n_trials=1)
    (trial,) = study.trials
    attrs = trial.user_attrs
    assert trial.value == attrs["score"] and attrs["passed"] is False and attrs["episodes"] == 6
    assert attrs["steps"] == 300 and attrs["time_cost"] == pytest.approx(attrs["cpu_seconds"] * 300 / 300)
    assert 0 <= attrs["landed"] <= 1 and attrs["mean_length"] <= 50 and attrs["saved_episode"] in (2, 4, 6)
    (run,) = (tmp_path / "study" / "trial-0000" / "runs").iterdir()
    assert {"metrics.csv", "config.json", "best.pth", "last.pth"} <= {p.name for p in run.iterdir()}
    assert not (run / "training_state.pth").exists(), "a trial keeps no replay memory on disk"
    assert not (tmp_path / "checkpoint.pth").exists() and not (tmp_path / "runs").exists()


def test_a_trial_whose_checks_never_began_is_judged_by_one_check_at_its_end(tmp_path: Path) -> None:
    """--space gated: a training average that never reaches ``eval_from_average`` leaves no check in the run; the
    trial plays the rule's greedy episodes once on the last weights (the same unseen seeds) instead of failing."""
    plan = dataclasses.replace(_plan(tmp_path, objective="both"), space="gated")
    plan.base = dataclasses.replace(plan.base, episodes=12, eval_every=10)  # a check after episode 10, but gated
    params = {**params_of(plan.base, "gated"), "eval_from_average": 200.0}
    trial = optuna.trial.FixedTrial(params, number=0)
    score, cost = run_trial(trial, plan, stopping=lambda: False)
    (run,) = (tmp_path / "study" / "trial-0000" / "runs").iterdir()
    with open(run / "metrics.csv", newline="") as fh:
        assert [row["eval_score"] for row in csv.DictReader(fh)] == [""] * 12, "no check during the run"
    network = network_from_weights(load_file(run / "last.pth"), run / "last.pth")
    check = greedy_check(plan.base)(network)
    assert score == check.mean_score == trial.user_attrs["score"] and trial.user_attrs["saved_episode"] == 12
    assert trial.user_attrs["passed"] is False and cost == trial.user_attrs["time_cost"]


@pytest.mark.filterwarnings("ignore:The value 1000000.0 of the parameter")  # outside the space, on purpose
def test_a_diverging_trial_is_pruned_with_its_reason(tmp_path: Path) -> None:
    params = {**params_of(main.Config(), "original"), "learning_rate": 1e6, "minibatch_size": 16}
    trial = optuna.trial.FixedTrial(params, number=3)
    with pytest.raises(optuna.TrialPruned, match=r"^diverged in episode \d: the loss became (nan|inf)"):
        run_trial(trial, _plan(tmp_path), stopping=lambda: False)
    assert trial.user_attrs["reason"].startswith("diverged in episode")


def test_a_trial_told_to_stop_is_interrupted_after_its_episode(tmp_path: Path) -> None:
    trial = optuna.trial.FixedTrial(params_of(main.Config(), "original"), number=0)
    with pytest.raises(Interrupted, match="interrupted at episode 1"):
        run_trial(trial, _plan(tmp_path), stopping=lambda: True)


def test_the_report_of_a_two_objective_study_by_hand(tmp_path: Path) -> None:
    """Three finished trials with known figures: the front, the best settings and the files are theirs."""
    plan = dataclasses.replace(_plan(tmp_path, objective="both"), space="original")
    spec = StudySpec("hand", "unused.log", plan, pruner="none")
    study = optuna.create_study(directions=["maximize", "minimize"])
    passed = {"passed": True, "landed": 0.95, "saved_episode": 120, "episodes": 120, "steps": 9000}
    figures = [  # score, CPU seconds (the time objective), and what else each trial recorded
        (250.0, 100.0, {**passed, "cpu_seconds": 100.0, "learning_rate": 1e-3}),
        (200.0, 50.0, {**passed, "cpu_seconds": 50.0, "learning_rate": 2e-3}),
        (100.0, 400.0, {**passed, "passed": False, "cpu_seconds": 40.0, "learning_rate": 5e-4}),
    ]
    for number, (score, cost, attrs) in enumerate(figures):
        params = {**params_of(plan.base, "original"), "learning_rate": attrs.pop("learning_rate")}
        study.enqueue_trial(params, user_attrs={**attrs, "score": score, "time_cost": cost, "seed": 1000 + number})

    def recorded(trial: optuna.Trial) -> tuple[float, float]:
        draw(trial, "original")  # the queued parameters, drawn as a trial of the study draws them
        return trial.user_attrs["score"], trial.user_attrs["time_cost"]

    study.optimize(recorded, n_trials=3)
    lines = summary_lines(study, spec)
    assert lines[0] == "study hand: 3 trials: 3 complete, 0 pruned, 0 failed, 0 running, 0 waiting"
    assert lines[1].endswith("trials 0 (250.0, 100.0 CPU s), 1 (200.0, 50.0 CPU s)"), "trial 2 is dominated"
    assert lines[2] == "best: trial 0: score 250.0, landed 95%; passed at episode 120: 9,000 steps, 100.0 CPU s"
    assert lines[3] == "best settings: learning_rate=0.001"
    charged = trial_line(study.trials[2], spec)
    assert "not passed in 120 episodes: 9,000 steps, 40.0 CPU s, charged 400.0 CPU s" in charged
    written = {path.name for path in write_report(study, spec)}
    assert written == {"trials.csv", "best_config.json", "history.png", "importances.png", "pareto.png"}
    best = json.loads((plan.folder / "best_config.json").read_text())
    assert (best["learning_rate"], best["seed"], best["video"], best["quiet"]) == (1e-3, 1000, True, False)
    with open(plan.folder / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["value_0"], r["value_1"], r["passed"]) for r in rows][2] == ("100.0", "400.0", "False")


def test_a_study_section_of_the_tuning_page_by_hand(tmp_path: Path) -> None:
    """A journal of three known trials: the page gives the command that continues it, the front and the passing."""
    plan = dataclasses.replace(_plan(tmp_path, objective="both"), space="original")
    plan = dataclasses.replace(plan, base=dataclasses.replace(plan.base, episodes=600, eval_target=250.0))
    spec = StudySpec("hand", "results/hand.log", plan, pruner="none")
    (tmp_path / "results").mkdir()
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "results" / "hand.log")))
    study = optuna.create_study(storage=storage, study_name="hand", directions=["maximize", "minimize"])
    study.set_user_attr("tune", spec.identity())
    common = {"landed": 0.99, "mean_length": 250.0, "episodes": 600, "steps": 90_000}
    figures = [  # score, time objective, passed, CPU seconds, learning rate
        (262.0, 80.0, True, 80.0, 1e-3),
        (255.0, 60.0, True, 60.0, 2e-3),
        (150.0, 400.0, False, 100.0, 5e-4),
    ]
    for number, (score, cost, passed, cpu, rate) in enumerate(figures):
        params = {**params_of(plan.base, "original"), "learning_rate": rate}
        attrs = {**common, "score": score, "time_cost": cost, "passed": passed, "cpu_seconds": cpu}
        study.enqueue_trial(params, user_attrs={**attrs, "saved_episode": 100 * (number + 1), "seed": 1000 + number})
    study.optimize(lambda t: (draw(t, "original"), (t.user_attrs["score"], t.user_attrs["time_cost"]))[1], n_trials=3)
    page = "intro\n<!-- study results/hand.log: written by docs/generate.py -->\nold\n<!-- end of study -->\nrest\n"
    written = tuning_page.rewrite(page, tmp_path, main.Config, plots=tmp_path)
    lines = written.splitlines()
    assert lines[0] == "intro" and lines[-1] == "rest" and "old" not in lines
    command = "python tune.py --study hand --space original --objective both --episodes 600 --max-steps 50"
    budget = "--eval-every 2 --eval-episodes 2 --eval-target 250 --eval-landed 0.95"  # _plan's, not tune.py's
    assert lines[3] == f"{command} {budget} --storage results/hand.log"
    assert "3 trials: 3 complete (2 passed the stopping rule), 0 pruned, 0 failed, 0 running, 0 queued" in written
    front = [line.split(" | ")[0] for line in lines if line.startswith("| 1 |") or line.startswith("| 0 |")]
    assert front == ["| 1", "| 0", "| 1", "| 0"], "the front, cheapest first, then the passing trials, fastest first"
    assert "| 2 | 1002 | no, in 600 | 150.0, 99% | 250 | 90,000 | 100 (400) | learning_rate=0.0005 |" not in written
    assert "| 1 | 1001 | episode 200 | 255.0, 99% | 250 | 90,000 | 60 | learning_rate=0.002 |" in written
    assert (tmp_path / "tuning-hand-pareto.png").stat().st_size > 0
    assert tuning_page.rewrite(written, tmp_path, main.Config) == written


def test_the_tuning_page_continues_a_study_of_several_seeds_per_trial(tmp_path: Path) -> None:
    """The command the page prints for a study of K seeds a trial gives K (else it would be refused), and the CPU
    hours count every seed's run (cpu_seconds_total), not the median trial's."""
    plan = dataclasses.replace(_plan(tmp_path, objective="both"), space="original", seeds_per_trial=3)
    spec = StudySpec("three", "results/three.log", plan, pruner="none")
    (tmp_path / "results").mkdir()
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "results" / "three.log")))
    study = optuna.create_study(storage=storage, study_name="three", directions=["maximize", "minimize"])
    study.set_user_attr("tune", spec.identity())
    attrs = {"landed": 0.9, "mean_length": 300.0, "episodes": 40, "steps": 9_000, "passed": False, "seed": 1000}
    for number, score in enumerate((100.0, 120.0)):  # each trial: 3 seeds of an hour, a median of an hour
        attrs.update(score=score, time_cost=50.0 + number, cpu_seconds=3_600.0, cpu_seconds_total=10_800.0)
        params = {**params_of(plan.base, "original"), "learning_rate": 1e-3 * (number + 1)}
        study.enqueue_trial(params, user_attrs=attrs)
    study.optimize(lambda t: (draw(t, "original"), (t.user_attrs["score"], t.user_attrs["time_cost"]))[1], n_trials=2)
    page = "<!-- study results/three.log: written by docs/generate.py -->\n<!-- end of study -->\n"
    written = tuning_page.rewrite(page, tmp_path, main.Config, plots=tmp_path)
    assert "--seeds-per-trial 3 " in written
    assert tuning_page.spec_of(study, "results/three.log", main.Config).plan.seeds_per_trial == 3
    assert "6.0 CPU hours" in written, written


# ---------------------------------------------------------------- several seeds a trial (--seeds-per-trial)


def scripted_train(curves: dict[int, list[float]], clock: list[float]):
    """A stand-in for ``main.train`` with known figures: seed S's run plays 50-step episodes, one CPU second each
    on ``clock``, and its evaluation k has the mean ``curves[S][k]`` (half of its episodes landed); the run stops
    once an evaluation reaches ``eval_target``, as main.train does. It keeps the seed and root of every call."""

    def train(cfg, out=None, hooks=(), root=None):
        train.calls.append((cfg.seed, Path(root)))
        (hook,) = hooks
        hook.on_start(None)
        for episode in range(1, cfg.episodes + 1):
            clock[0] += 1.0
            mean = curves[cfg.seed][episode // cfg.eval_every - 1] if episode % cfg.eval_every == 0 else None
            evaluation = None if mean is None else EvalResult([mean, mean], [50, 50], ["landed", "crashed"], 1)
            solved = mean is not None and mean >= cfg.eval_target
            hook.on_episode(Episode(episode, 0.0, 50, True, False, 1.0, 1.0, 50 * episode, 0.0, evaluation, solved))
            if solved or hook.stop:
                break
        return SimpleNamespace(stopped_by=None)

    train.calls = []
    return train


def _scripted_plan(tmp_path: Path, monkeypatch, curves, objective: str, k: int, target: float = 1000.0):
    clock = [0.0]
    monkeypatch.setattr(trials, "time", SimpleNamespace(process_time=lambda: clock[0], perf_counter=lambda: clock[0]))
    plan = dataclasses.replace(_plan(tmp_path, objective), seeds_per_trial=k, train=scripted_train(curves, clock))
    return dataclasses.replace(plan, base=dataclasses.replace(plan.base, eval_target=target))


def test_the_seeds_of_a_trial_are_blocks_no_other_trial_overlaps(tmp_path: Path) -> None:
    one, three = _plan(tmp_path), dataclasses.replace(_plan(tmp_path), seeds_per_trial=3)
    assert [trial_seeds(one, n) for n in (0, 1, 7)] == [[1000], [1001], [1007]], "one seed a trial: --seed + N"
    assert trial_seeds(three, 0) == [1000, 1001, 1002] and trial_seeds(three, 4) == [1012, 1013, 1014]
    seeds = [s for n in range(200) for s in trial_seeds(three, n)]
    assert len(set(seeds)) == len(seeds) == 600 and min(seeds) == 1000
    with pytest.raises(UserError, match="would train on seed 2000001, one of the judging seeds from 2,000,000"):
        trial_seeds(dataclasses.replace(three, seed=1_999_996), 1)


def test_one_seed_a_trial_records_what_it_recorded_before(tmp_path: Path) -> None:
    """K = 1: the trial's seed, folder, user attributes (names and order) and study identity of before the flag."""
    plan = _plan(tmp_path)
    assert plan.seeds_per_trial == 1 and "seeds_per_trial" not in StudySpec("s", "s.log", plan).identity()
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: run_trial(t, plan, lambda: False), n_trials=1)
    (trial,) = study.trials
    recorded = ["seed", "folder", "steps", "cpu_seconds", "wall_seconds", "passed", "episodes", "saved_episode"]
    assert list(trial.user_attrs) == [*recorded, "time_cost", "score", "landed", "mean_length"]
    assert trial.user_attrs["seed"] == 1000 and trial.value == trial.user_attrs["score"]
    assert [p.name for p in (plan.folder / "trial-0000").iterdir()] == ["runs"], "no seed-S folder"
    assert trial.intermediate_values.keys() == {2, 4, 6}


def test_two_seeds_a_trial_by_hand(tmp_path: Path, monkeypatch) -> None:
    """Trial 1 of two seeds a trial trains seeds 1002 and 1003 in seed-1002/ and seed-1003/ of its folder. 1002
    passes the rule at its first evaluation (120); 1003 evaluates 10, 10, 10: the trial gives the median, 65. Only
    the first seed's evaluations reach the pruner: the second's 10s, below the trial before (25), prune nothing."""
    plan = _scripted_plan(tmp_path, monkeypatch, {1002: [120.0, 0, 0], 1003: [10.0] * 3}, "quality", 2, 100.0)
    spec = StudySpec("two", "unused.log", plan, pruner="median")
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(1, 0))
    study.add_trial(optuna.trial.create_trial(value=25.0, intermediate_values={2: 25.0, 4: 25.0, 6: 25.0}))
    study.enqueue_trial(params_of(plan.base, "original"))
    study.optimize(lambda t: run_trial(t, plan, lambda: False), n_trials=1)
    trial = study.trials[1]
    assert trial.state.name == "COMPLETE" and trial.value == 65.0
    folder = plan.folder / "trial-0001"
    assert plan.train.calls == [(1002, folder / "seed-1002"), (1003, folder / "seed-1003")]
    assert trial.intermediate_values == {2: 120.0}, "the first seed's evaluations, not the second's"
    attrs = trial.user_attrs
    assert (attrs["seed"], attrs["seeds"], attrs["folder"]) == (1002, [1002, 1003], "trial-0001")
    assert (attrs["score"], attrs["score_min"], attrs["score_max"], attrs["landed"]) == (65.0, 10.0, 120.0, 0.5)
    assert [r["score"] for r in attrs["seed_results"]] == [120.0, 10.0] and attrs["passed"] is False  # 1 of 2
    assert trial_line(trial, spec) == (
        "trial 1 COMPLETE | score 65.0 (median of 2 seeds: 10.0 to 120.0), landed 50%; 1 of 2 passed; median "
        "200 steps, 4.0 CPU s (8.0 in all) | seeds 1002, 1003 | the original defaults"
    )


def test_three_seeds_under_both_objectives_by_hand(tmp_path: Path, monkeypatch) -> None:
    """Seeds 1000 and 1002 pass the rule (120 at episode 2, 150 at episode 4), 1001 never does: its time is charged
    its whole budget, 300 steps at its 50 a CPU second, 6 s. The trial: score median(120, 30, 150) = 120, time
    median(2, 6, 4) = 4 CPU s, passed (2 of 3); trials.csv shows every seed's figures and the spread."""
    curves = {1000: [120.0, 0.0, 0.0], 1001: [10.0, 20.0, 30.0], 1002: [50.0, 150.0, 0.0]}
    plan = _scripted_plan(tmp_path, monkeypatch, curves, "both", 3, target=100.0)
    spec = StudySpec("three", "unused.log", plan, pruner="none")
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial(params_of(plan.base, "original"))
    study.optimize(lambda t: run_trial(t, plan, lambda: False), n_trials=1)
    (trial,) = study.trials
    assert trial.values == [120.0, 4.0]
    attrs = trial.user_attrs
    assert (attrs["passed"], attrs["seeds_passed"], attrs["steps"], attrs["cpu_seconds_total"]) == (True, 2, 200, 12)
    assert (attrs["time_cost_min"], attrs["time_cost_max"], attrs["episodes"]) == (2.0, 6.0, 4)
    assert trial_line(trial, spec) == (
        "trial 0 COMPLETE | score 120.0 (median of 3 seeds: 30.0 to 150.0), landed 50%; 2 of 3 passed; median "
        "200 steps, 4.0 CPU s (12.0 in all); time 4.0 CPU s (2.0 to 6.0, the seeds that did not pass charged their "
        "whole budget) | seeds 1000, 1001, 1002 | the original defaults"
    )
    write_report(study, spec)
    with open(plan.folder / "trials.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    assert (row["value_0"], row["value_1"], row["seeds"], row["seed_passed"]) == (
        "120.0",
        "4.0",
        "1000 1001 1002",
        "True False True",
    )
    assert (row["seed_scores"], row["seed_time_costs"]) == ("120.0 30.0 150.0", "2.0 6.0 4.0")
    assert (row["score_min"], row["score_max"], row["time_cost_min"], row["time_cost_max"]) == (
        "30.0",
        "150.0",
        "2.0",
        "6.0",
    )


def test_a_trial_of_two_seeds_pruned_on_its_first_trains_no_second(tmp_path: Path, monkeypatch) -> None:
    plan = _scripted_plan(tmp_path, monkeypatch, {1002: [10.0] * 3, 1003: [500.0] * 3}, "quality", 2)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(1, 0))
    study.add_trial(optuna.trial.create_trial(value=1e9, intermediate_values={2: 1e9, 4: 1e9, 6: 1e9}))
    with pytest.raises(optuna.TrialPruned, match=r"^pruned at episode 2 of seed 1002 \(1 of 2\)$"):
        run_trial(study.ask(), plan, lambda: False)
    assert plan.train.calls == [(1002, plan.folder / "trial-0001" / "seed-1002")]
    trial = study.trials[1]
    assert trial.intermediate_values == {2: 10.0} and trial.user_attrs["score"] == 10.0
    assert [r["seed"] for r in trial.user_attrs["seed_results"]] == [1002]


def test_seeds_record_takes_the_median_of_each_figure_by_hand() -> None:
    runs = [  # what TrialReport.outcome gives for three seeds, one of them stopped before its first evaluation
        {"seed": 5, "steps": 100, "cpu_seconds": 1.0, "wall_seconds": 1.5, "passed": True, "episodes": 2},
        {"seed": 6, "steps": 400, "cpu_seconds": 8.0, "wall_seconds": 9.0, "passed": False, "episodes": 8},
        {"seed": 7, "steps": 50, "cpu_seconds": 0.5, "wall_seconds": 0.5, "passed": False, "episodes": 1},
    ]
    for run, saved, cost, score in zip(runs, (2, 6, None), (1.0, 20.0, 10.0), (240.0, 100.0, None), strict=True):
        run.update(saved_episode=saved, time_cost=cost, **({"score": score} if score else {}))
    record = seeds_record(runs, 3)
    assert (record["steps"], record["cpu_seconds"], record["passed"], record["seeds_passed"]) == (100, 1.0, False, 1)
    assert (record["saved_episode"], record["time_cost"], record["score"]) == (4.0, 10.0, 170.0)  # of 2 with one
    assert (record["score_min"], record["score_max"], record["time_cost_min"], record["time_cost_max"]) == (
        100.0,
        240.0,
        1.0,
        20.0,
    )
    assert record["cpu_seconds_total"] == 9.5 and record["seed_results"] == runs and "landed" not in record
    assert seeds_record(runs[:1], 1) == {k: v for k, v in runs[0].items() if k != "seed"}, "one seed: as it was"


def test_a_real_study_of_two_seeds_a_trial_and_one_of_one(tmp_path: Path, capsys) -> None:
    """Real runs: trial 0 of a two-seed study trains seeds 1000 and 1001 (main.train, each its own folder) and
    gives the median of their scores; its seed 1000 gives what trial 0 of a one-seed study gives. Continuing either
    study with the other count is refused in one line."""
    two = tune(tmp_path, "--study", "two", "--trials", "2", "--seeds-per-trial", "2", *TINY)
    one = tune(tmp_path, "--study", "one", "--trials", "1", *TINY)
    assert two.returncode == 0 and one.returncode == 0, two.stderr + one.stderr
    assert "pruner median, 2 seeds per trial (the median of each objective);" in two.stdout.splitlines()[0]
    assert " | seeds 1000, 1001 | the original defaults" in two.stdout
    trials_two, trial_one = journal_study(tmp_path, "two").trials, journal_study(tmp_path, "one").trials[0]
    assert [t.user_attrs["seeds"] for t in trials_two] == [[1000, 1001], [1002, 1003]]
    for t in trials_two:
        scores = [r["score"] for r in t.user_attrs["seed_results"]]
        assert t.value == (scores[0] + scores[1]) / 2 and t.user_attrs["score_min"] == min(scores)
        for seed in t.user_attrs["seeds"]:
            folder = tmp_path / "runs" / "tune" / "two" / t.user_attrs["folder"] / f"seed-{seed}"
            (config,) = folder.glob("runs/*/config.json")
            assert json.loads(config.read_text())["seed"] == seed
    assert trials_two[0].user_attrs["seed_results"][0]["score"] == trial_one.value, "seed 1000, the same settings"
    assert trials_two[0].intermediate_values == trial_one.intermediate_values, "the first seed's, reported"
    with open(tmp_path / "runs" / "tune" / "two" / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["seeds"] == "1000 1001" and len(rows[0]["seed_scores"].split()) == 2
    refused = (("two", [], "--seeds-per-trial 2, not 1"), ("one", ["--seeds-per-trial", "3"], "1, not 3"))
    for study, args, message in refused:
        code = tuning.main(["--study", study, "--trials", "0", *TINY, *args], main.Config, main.train, root=tmp_path)
        err = capsys.readouterr().err
        assert code == 1 and err.splitlines() == [err.strip()] and message in err, err


def test_the_confirm_table_of_a_study_of_several_seeds_shows_the_studys_spread() -> None:
    row = {"trial": 3, "runs": 5, "passed": 2, "median_cpu_seconds_to_pass": 10.0, "median_score": 200.0}
    row |= {"worst_score": 150.0, "median_landed": 0.9, "worst_landed": 0.8, "median_mean_length": 300.0}
    plain = confirm_table([row], [100, 101, 102, 103, 104], 20)
    assert plain[-1] == "| 3 | 2 of 5 | 10.0 | 200.0 | 150.0 | 90% | 80% | 300 |", "one seed a trial: as before"
    table = confirm_table(
        [{**row, "study_score": 240.0, "study_score_min": 230.0, "study_score_max": 250.0}], [100], 20
    )
    assert table[1].endswith("| mean length | in the study: median score (min to max) |")
    assert table[-1] == "| 3 | 2 of 5 | 10.0 | 200.0 | 150.0 | 90% | 80% | 300 | 240.0 (230.0 to 250.0) |"


# ---------------------------------------------------------------- the command, on a journal file


def test_two_workers_share_one_journal_study_and_the_same_command_continues_it(tmp_path: Path) -> None:
    first = tune(tmp_path, "--study", "t", "--trials", "5", "--jobs", "2", *TINY)
    assert first.returncode == 0, first.stderr
    study = journal_study(tmp_path, "t")
    trials = study.trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4] and all(t.state.is_finished() for t in trials)
    assert [t.user_attrs.get("start") for t in trials[:2]] == ["the original defaults", "--preset fast"]
    assert [t.user_attrs["seed"] for t in trials] == [1000, 1001, 1002, 1003, 1004]
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "two worker processes ran the trials"
    lines = first.stdout.splitlines()
    assert lines[0].startswith("study t in runs/tune/t.log: new, no trials so far;")
    assert sorted(line.split(" ")[1] for line in lines if line.startswith("trial ")) == ["0", "1", "2", "3", "4"]
    assert any(line.startswith("study t: 5 trials: ") for line in lines) and "best settings: " in first.stdout
    with open(tmp_path / "runs" / "tune" / "t" / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["number"] for r in rows] == ["0", "1", "2", "3", "4"] and rows[0]["start"] == "the original defaults"
    best = read_config_file(tmp_path / "runs" / "tune" / "t" / "best_config.json", main.Config)
    assert best["episodes"] == 6 and best["video"] is True and best["seed"] in range(1000, 1005)

    again = tune(tmp_path, "--study", "t", "--trials", "10", "--jobs", "2", "--max-total-trials", "7", *TINY)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("study t in runs/tune/t.log: 5 trials so far;")
    trials = journal_study(tmp_path, "t").trials
    assert [t.number for t in trials] == list(range(7)), "continued at trial 5 and stopped at 7 in all"
    assert sum(t.user_attrs.get("start") == "the original defaults" for t in trials) == 1


def test_a_killed_worker_fails_its_trial_and_the_other_goes_on(tmp_path: Path) -> None:
    budget = ["--episodes", "40", "--max-steps", "100", "--eval-every", "5", "--eval-episodes", "2"]
    proc = start_tune(tmp_path, "--study", "k", "--trials", "3", "--jobs", "2", *budget, "--eval-target", "1000")
    try:
        # Once it has reported an evaluation, the worker is well inside its run.
        wait_for(lambda: [t for t in running(tmp_path, "k") if t.intermediate_values], 60, "an evaluated trial")
        victim = next(t for t in running(tmp_path, "k") if t.intermediate_values)
        pid = int(victim.user_attrs["worker"].rpartition(":")[2])
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    trials = journal_study(tmp_path, "k").trials
    killed = trials[victim.number]
    assert killed.state.name == "FAIL" and killed.user_attrs["reason"] == f"its worker (process {pid}) was killed"
    assert f"trial {victim.number} FAIL | its worker (process {pid}) ended mid-trial" in out
    assert not [t for t in trials if t.state.name == "RUNNING"]
    others = [t for t in trials if t.number > victim.number and t.state.name == "COMPLETE"]
    assert others and all(t.user_attrs["worker"] != victim.user_attrs["worker"] for t in others)


def test_ctrl_c_stops_both_workers_leaves_no_trial_running_and_the_next_run_continues(tmp_path: Path) -> None:
    budget = ["--episodes", "60", "--max-steps", "100", "--eval-every", "5", "--eval-episodes", "2"]
    command = ["--study", "c", "--jobs", "2", *budget, "--eval-target", "1000"]
    proc = start_tune(tmp_path, *command, "--trials", "6")
    try:
        wait_for(lambda: len(running(tmp_path, "c")) == 2, 60, "two running trials")
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 130 and took < 10, (took, err)
    assert err.startswith("stopping: each worker ends its run after the current episode")
    trials = journal_study(tmp_path, "c").trials
    assert [(t.number, t.state.name) for t in trials] == [(0, "FAIL"), (1, "FAIL")]
    assert all(t.user_attrs["reason"].startswith("interrupted at episode") for t in trials)
    assert "0 running" in out

    again = start_tune(tmp_path, *command, "--trials", "2", "--max-total-trials", "3")
    out, err = again.communicate(timeout=180)
    assert again.returncode == 0, err
    assert "queued again, as they were stopped before they finished: trials 0, 1" in out
    trials = journal_study(tmp_path, "c").trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "COMPLETE", "WAITING"]  # 3 started: the cap
    assert [t.user_attrs["retry_of"] for t in trials[2:]] == [0, 1]
    assert trials[2].user_attrs["start"] == "the original defaults" and trials[2].params == trials[0].params


def test_confirm_retrains_the_three_best_on_five_fresh_seeds(tmp_path: Path) -> None:
    confirm = ["--confirm", "3", "--confirm-episodes", "20"]
    done = tune(tmp_path, "--study", "f", "--trials", "3", "--jobs", "2", *TINY, *confirm, timeout=300)
    assert done.returncode == 0, done.stderr
    table = done.stdout[done.stdout.index("saved agents, 20 greedy episodes each from seed 2,000,000") :].splitlines()
    assert table[1].startswith("| trial | passed | CPU s to pass (median) | score: median | worst | landed: median")
    assert len(table) >= 5 and all(row.startswith("| ") and "| 0 of 5 |" in row for row in table[3:6])
    report = json.loads((tmp_path / "runs" / "tune" / "f" / "confirm.json").read_text())
    assert report["seeds"] == [100, 101, 102, 103, 104] and len(report["runs"]) == 15
    for row in report["trials"]:
        seeds = [r for r in report["runs"] if r["trial"] == row["trial"]]
        assert row["worst_score"] == min(r["score"] for r in seeds) and row["runs"] == 5
    assert {r["config"]["seed"] for r in report["runs"]} == {100, 101, 102, 103, 104}


def test_confirm_together_gives_each_seed_what_it_gets_alone(tmp_path: Path) -> None:
    """--confirm-together: a trial's seeds trained in one process (main.py --seeds) save the same agents, which
    score the same; only their CPU time is not theirs alone, and is not recorded."""
    from dqnkit.tune.confirm import ConfirmRun, keep_result, train_group

    base = dataclasses.replace(_plan(tmp_path).base, eval_target=-1000.0, eval_landed=0.0)  # passes at episode 2
    results = {}
    for way in ("together", "alone"):
        runs = [ConfirmRun(0, s, dataclasses.replace(base, seed=s), tmp_path / way / f"seed-{s}") for s in (100, 101)]
        hooks = [trials.TrialReport(None, report=False, stopping=lambda: False) for _ in runs]
        if way == "together":
            trained, together = train_group(main.train, runs, hooks)
        else:
            trained = [train_group(main.train, [r], [h])[0][0] for r, h in zip(runs, hooks, strict=True)]
            together = False
        assert together is (way == "together")
        for run, hook, outcome in zip(runs, hooks, trained, strict=True):
            keep_result(run, hook, outcome, 5, together)
        results[way] = [json.loads((r.folder / "result.json").read_text()) for r in runs]
    for a, b in zip(results["together"], results["alone"], strict=True):
        assert a["passed"] is b["passed"] is True and a["saved_episode"] == b["saved_episode"] == 2
        assert a["score"] == pytest.approx(b["score"], rel=1e-5) and a["landed"] == b["landed"]
        assert a["cpu_seconds"] is None and a["together"] is True and b["cpu_seconds"] > 0


def test_confirm_trials_names_finished_trials_or_says_which_is_not(tmp_path: Path) -> None:
    from dqnkit.errors import UserError
    from dqnkit.tune.confirm import chosen_trials

    spec = StudySpec("c", "unused.log", _plan(tmp_path, objective="both"), pruner="none")
    study = optuna.create_study(directions=["maximize", "minimize"])
    for score, cost in ((250.0, 100.0), (200.0, 50.0), (100.0, 400.0)):
        trial = study.ask()
        study.tell(trial, [score, cost])
    study.ask()  # trial 3: running
    assert [t.number for t in chosen_trials(study, spec, 0, [2, 0])] == [2, 0]  # a dominated one too, in order
    assert [t.number for t in chosen_trials(study, spec, 1, [])] == [0]  # the best by score on the front
    with pytest.raises(UserError, match="trial 3 of study c has not finished"):
        chosen_trials(study, spec, 0, [1, 3])
    with pytest.raises(UserError, match="trial 9 of study c"):
        chosen_trials(study, spec, 0, [9])


# ---------------------------------------------------------------- bad input: one line, nothing written


def _existing_study(root: Path) -> None:
    """Make study ``x`` (its journal and two queued trials) as ``tune.py --study x`` with TINY would in ``root``."""
    spec, _ = tuning.parse_arguments(["--study", "x", *TINY], main.Config, main.train, root=root)
    open_study(spec)


BAD = [
    ("unknown sampler", ["--sampler", "cmaes"], 2, "argument --sampler: invalid choice: 'cmaes'"),
    ("unknown pruner", ["--pruner", "hyperband"], 2, "argument --pruner: invalid choice: 'hyperband'"),
    ("malformed storage", ["--storage", "postgresql//oops"], 2, "is neither a journal file"),
    ("sqlite storage", ["--storage", "sqlite:///x.db"], 2, "SQLite cannot take parallel workers"),
    ("bad port", ["--storage", "postgresql://u@127.0.0.1:abc/db"], 2, "is neither a journal file"),
    ("unreachable", ["--storage", "postgresql://u@127.0.0.1:1/db"], 1, "port 1 failed: Connection refused"),
    ("study name", ["--study", "../x"], 2, "--study '../x': use letters, digits"),
    ("pruner and time", ["--objective", "time", "--pruner", "median"], 2, "--pruner median goes with"),
    ("no evaluation", ["--eval-every", "7"], 2, "each trial must evaluate"),
    ("few confirm seeds", ["--confirm", "1", "--confirm-seeds", "1", "2"], 2, "at least 5 --confirm-seeds"),
    ("confirm seed of a trial", ["--confirm", "1", "--confirm-seeds", "1000", "1", "2", "3", "4"], 2, "below --seed"),
    ("zero cap", ["--max-total-trials", "0"], 2, "must be at least 1"),
    ("confirm two ways", ["--confirm", "1", "--confirm-trials", "3"], 2, "give one of them"),
    ("no seeds", ["--seeds-per-trial", "0"], 2, "argument --seeds-per-trial: must be at least 1, got 0"),
]


@pytest.mark.parametrize("case, args, status, message", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_one_line_and_writes_nothing(
    case: str, args: list[str], status: int, message: str, tmp_path: Path, capsys
) -> None:
    argv = [*(["--study", "x"] if "--study" not in args else []), *TINY, *args]
    try:
        code = tuning.main(argv, main.Config, main.train, root=tmp_path)
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err
    assert code == status and len(err.splitlines()) == 1 and message in err, err
    assert err.startswith("tune.py: error: ")
    assert list(tmp_path.iterdir()) == [], "nothing written"


EXISTING = [
    ("another objective", ["--objective", "time"], "exists with --objective quality, not time"),
    ("another space", ["--space", "original"], "exists with --space all, not original"),
    ("another seed", ["--seed", "7"], "exists with --seed 1000, not 7"),
    ("another budget", ["--eval-episodes", "3"], "exists with --eval-episodes 2: give the same budget"),
    ("more seeds per trial", ["--seeds-per-trial", "2"], "exists with --seeds-per-trial 1, not 2: give --seeds-per"),
]


@pytest.mark.parametrize("case, args, message", EXISTING, ids=[c[0] for c in EXISTING])
def test_a_study_that_exists_with_other_settings_is_refused(
    case: str, args: list[str], message: str, tmp_path: Path, capsys
) -> None:
    _existing_study(tmp_path)
    journal = tmp_path / "runs" / "tune" / "x.log"
    before = journal.read_bytes()
    code = tuning.main(["--study", "x", *TINY, *args], main.Config, main.train, root=tmp_path)
    err = capsys.readouterr().err
    assert code == 1 and err.splitlines() == [err.strip()] and message in err, err
    assert journal.read_bytes() == before and sorted(p.name for p in journal.parent.iterdir()) == ["x", "x.log"]
    assert list((journal.parent / "x").iterdir()) == []


def test_a_file_that_is_not_a_journal_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.log").write_text("these are my notes\n")
    code = tuning.main(["--study", "x", "--storage", "notes.log", *TINY], main.Config, main.train, root=tmp_path)
    err = capsys.readouterr().err
    assert code == 1 and err.splitlines() == [
        f"tune.py: error: {tmp_path / 'notes.log'} is not an Optuna journal file: its first line is no journal entry"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.log"]


def test_storage_locations() -> None:
    assert storage_location(None, "lander") == str(Path("runs/tune/lander.log").resolve())
    assert storage_location("studies/a.log", "lander") == str(Path("studies/a.log").resolve())
    url = "postgresql://me:secret@db.example.org:5432/optuna"
    assert storage_location(url, "lander") == url


def test_the_tuner_page_lists_every_parameter_of_the_space(root: Path) -> None:
    page = (root / "docs" / "tuner.md").read_text()
    missing = [p.name for space in SPACES.values() for p in space if f"`{p.name}`" not in page]
    assert not missing, f"docs/tuner.md's search-space table lacks {missing}"
