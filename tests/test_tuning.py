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

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage

import main
from docs import tuning_page
from dqnkit.saved_config import read_config_file
from dqnkit.settings import apply_preset
from dqnkit.tune import command as tuning
from dqnkit.tune.report import summary_lines, trial_line, write_report
from dqnkit.tune.space import SPACES, config_overrides, contains, draw, params_of
from dqnkit.tune.study import StudySpec, make_sampler, open_study, storage_location
from dqnkit.tune.trial import Interrupted, TrialPlan, run_trial, time_cost

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
