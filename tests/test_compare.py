"""benchmarks/compare.py: its training loop is main.train's, and its medians count unsolved runs as worst."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

import main
from dqnkit.settings import apply_preset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import common  # noqa: E402
import compare  # noqa: E402


@pytest.mark.parametrize("preset", [None, "fast"], ids=["default", "preset"])
def test_compare_loop_gives_main_train_scores(tmp_path: Path, preset: str | None) -> None:
    flags = ["--episodes", "4", "--max-steps", "150", "--seed", "3", "--no-video", "--quiet"]
    flags += ["--checkpoint", str(tmp_path / "w.pth"), *(["--preset", preset] if preset else [])]
    _, _, expected = common.main_py(flags, tmp_path)  # python main.py itself, in its own process
    cfg = main.Config(episodes=4, max_steps=150, video=False, quiet=True, seed=3, checkpoint=str(tmp_path / "w.pth"))
    if preset:
        cfg = apply_preset(cfg, preset)
    run = compare.train_project(cfg, eval_steps=200, out=lambda _: None)
    assert len(run["scores"]) == 4 and run["scores"] == expected["score"].tolist()
    assert run["total_steps"] == expected["total_steps"][-1] > 200
    assert run["weights_at_eval_steps"] is not None
    assert len(list(tmp_path.glob("runs/*"))) == 1  # main.py's: compare's run went to a folder of its own


def test_median_counts_unsolved_as_worst() -> None:
    assert compare.median([3, 1, 2]) == 2
    assert compare.median([3, None, 1]) == 3
    assert compare.median([None, None, 1]) is None
    assert compare.median([1, 2, 3, None]) == 2.5


def test_first_solved() -> None:
    assert compare.first_solved([200.0] * 99) is None
    assert compare.first_solved([0.0] * 50 + [400.0] * 60) == 100


def test_without_sb3_it_warns_first_and_compares_the_others(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue item 10: no ModuleNotFoundError traceback after minutes of the other methods."""
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)  # an import of it fails, as when not installed
    argv = ["--which", "default,sb3", "--seeds", "0", "--max-episodes", "1"]
    argv += ["--eval-episodes", "1", "--eval-steps", "50"]
    results = compare.run(argv)
    out, err = capsys.readouterr()
    assert [r["method"] for r in results["runs"]] == ["default"]
    assert err.splitlines()[0].startswith("compare.py: warning: skipping sb3: ")  # before anything ran
    assert "pip install -r benchmarks/requirements.txt" in err.splitlines()[0]
    assert [line for line in err.splitlines() if "sb3" in line] == err.splitlines()[:1]
    assert "| **default** |" in out
    with pytest.raises(SystemExit, match=r"^compare.py: error: cannot run sb3: "):
        compare.run(["--which", "sb3"])


def test_parallel_jobs_give_the_same_rows(capsys: pytest.CaptureFixture[str]) -> None:
    """--jobs 2 runs seeds in separate processes; episodes and scores match a one-process run."""
    argv = ["--which", "preset", "--seeds", "0", "1", "--max-episodes", "1"]
    argv += ["--eval-episodes", "1", "--eval-steps", "50"]
    one = compare.run(argv)
    two = compare.run([*argv, "--jobs", "2"])
    capsys.readouterr()

    def timeless(row: dict) -> dict:
        return {k: v for k, v in row.items() if "seconds" not in k}

    assert [r["seed"] for r in two["runs"]] == [0, 1]
    assert [timeless(r) for r in two["runs"]] == [timeless(r) for r in one["runs"]]
    with pytest.raises(SystemExit):
        compare.parse_args(["--jobs", "0"])


def test_compare_saves_the_agent_main_train_saves(tmp_path: Path) -> None:
    """With --eval-target, the agent compare.py evaluates is the checkpoint main.py writes."""
    flags = ["--episodes", "6", "--max-steps", "60", "--minibatch-size", "16", "--no-video", "--quiet", "--seed", "5"]
    flags += ["--checkpoint", str(tmp_path / "w.pth"), "--eval-every", "2", "--eval-episodes", "2"]
    stdout, _, expected = common.main_py([*flags, "--eval-target=-1e6", "--eval-landed", "0"], tmp_path)
    assert expected["episode"].tolist() == [1, 2] and "at episode 2 " in stdout  # solved at its first evaluation
    cfg = main.Config(
        episodes=6, max_steps=60, minibatch_size=16, video=False, quiet=True, seed=5,
        checkpoint=str(tmp_path / "w.pth"), eval_every=2, eval_episodes=2, eval_target=-1e6, eval_landed=0.0,
    )  # fmt: skip
    run = compare.train_project(cfg, eval_steps=60, out=lambda _: None)
    assert run["saved"]["episode"] == 2 and run["saved"]["steps"] == expected["total_steps"][-1]
    checkpoint = torch.load(tmp_path / "w.pth", weights_only=True)
    assert all(torch.equal(run["saved"]["weights"][k], v) for k, v in checkpoint.items())
    assert run["scores"][:2] == expected["score"].tolist() and len(run["scores"]) == 6  # it went on: keep_training


def test_join_prints_one_table_of_runs_made_apart(tmp_path: Path, root: Path, capsys: pytest.CaptureFixture) -> None:
    """--join: the README's table from two runs of compare.py (default and sb3, then preset), each summary kept."""
    results = root / "benchmarks" / "results"
    files = [
        results / "compare-default-sb3-seeds100-2026-12-01.jsonl",
        results / "compare-preset-seeds100-2026-12-01.jsonl",
    ]
    parts = [json.loads(f.read_text().splitlines()[-1]) for f in files]
    joined = compare.run(["--join", *map(str, files)])
    assert [r["method"] for r in joined["runs"]] == ["default"] * 5 + ["preset"] * 5 + ["sb3"] * 5
    assert joined["summary"] == {**parts[0]["summary"], **parts[1]["summary"]}
    assert "| **preset** | median of 5 (5 reached 200) |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="two files hold the same method and seed"):
        compare.run(["--join", str(files[1]), str(files[1])])
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({**parts[1], "seeds": [0, 1, 2, 3, 4]}) + "\n")
    with pytest.raises(SystemExit, match="other seeds"):
        compare.run(["--join", str(files[0]), str(other)])
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(SystemExit, match="not a results line of compare.py"):
        compare.run(["--join", str(tmp_path / "empty.jsonl")])
    speed = root / "benchmarks" / "results" / "speed-2026-11-26.jsonl"  # JSON, of another script
    with pytest.raises(SystemExit, match=r"^compare.py: error: --join .*: not a results line of compare.py \(no seeds"):
        compare.run(["--join", str(speed)])


@pytest.mark.parametrize(
    "argv",
    [
        ["--eval-episodes", "0"],
        ["--eval-steps", "-5"],
        ["--max-episodes", "1.5"],
        ["--jobs", "0"],
        ["--seeds", "2", "2"],
        ["--seeds", "x"],
        ["--which", "default,dqn"],
        ["--which", ","],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_bad_arguments_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        compare.parse_args(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("compare.py: error: ") and argv[0] in err and err.count("\n") == 1


def test_the_machine_line_names_the_date_and_the_cpu() -> None:
    info = {"date": "2026-12-01T18:02:09+00:00", "cpu_model": None, "cpu_count": 2, "python": "3.11.7"}
    line = common.machine_line({**info, "torch": "2.13.0+cpu"})
    assert line == "2026-12-01 18:02 UTC, unknown CPU, 2 cores, Python 3.11.7, torch 2.13.0+cpu"
    assert re.match(
        r"\d{4}-\d\d-\d\d \d\d:\d\d UTC, .+, \d+ cores, Python ", common.machine_line(common.machine_info())
    )


def _row(method: str, seed: int, episode: int | None, score: float | None) -> dict:
    """A compare.py run row made by hand: reached 200 and saved at ``episode``, its agent scoring ``score``."""
    evaluation = None if score is None else {"mean_score": score, "landed_share": 0.9, "on_pad_share": 0.8}
    evaluation = evaluation and {**evaluation, "mean_length": 300.0}
    when = {f"{moment}_{key}": episode for moment in ("solved", "saved") for key in ("episode", "steps", "seconds")}
    return {"method": method, "seed": seed, **when, "eval_at_steps": evaluation, "eval_saved": evaluation}


def test_join_prints_the_iqm_and_its_interval_below_each_median(root: Path, capsys: pytest.CaptureFixture) -> None:
    """Issue 28: IQM [95% CI] over the seeds beside the README's medians, which stay exactly as they were."""
    results = root / "benchmarks" / "results"
    files = sorted(results.glob("compare-*seeds100-2026*"))
    joined = compare.run(["--join", *map(str, files)])
    out = capsys.readouterr().out.splitlines()
    medians = [
        "| **default** | median of 5 (5 reached 200) | 730 | 174 | -45.5 | 730 | 221.4 | 91% (worst 86%) | 84% | 388 |",
        "| **preset** | median of 5 (5 reached 200) | 373 | 73 | -76.6 | 540 | 273.4 | 100% (worst 99%) | 100% | 252 |",
        "| **sb3** | median of 5 (0 reached 200) | - | - | 190.1 | 233 | 190.1 | 58% (worst 27%) | 58% | 345 |",
    ]
    for line in medians:  # each median row as before, its IQM row right below it
        assert out[out.index(line) + 1].startswith(line.split(" median")[0] + " IQM [95% CI] of 5 | ")
    preset = out[out.index(medians[1]) + 1]
    assert "| 553 [460, 593] | 272.5 [269.0, 274.2] | 100% [99%, 100%] |" in preset
    assert out[out.index(medians[2]) + 1].startswith("| **sb3** | IQM [95% CI] of 5 | - | - | 169.3 [")  # never 200
    scores = sorted(r["eval_saved"]["mean_score"] for r in joined["runs"] if r["method"] == "preset")
    saved = joined["iqm"]["preset"]["saved_score"]
    assert saved["iqm"] == pytest.approx(sum(scores[1:4]) / 3)  # 5 seeds: the best and the worst dropped
    assert saved["ci"][0] < saved["iqm"] < saved["ci"][1]
    assert joined["iqm"]["sb3"]["solved_episode"] == {"iqm": None, "ci": [None, None]}
    assert joined["iqm"]["default"]["seeds"] == 5 and "rliable" in joined["iqm_about"]
    json.dumps(joined, allow_nan=False)  # no Infinity or NaN in the JSON line


def test_fewer_than_four_seeds_get_the_iqm_without_an_interval(capsys: pytest.CaptureFixture) -> None:
    runs = [
        _row("preset", seed, episode, score)
        for seed, episode, score in [(0, 500, 250.0), (1, 400, 270.0), (2, 900, 100.0)]
    ]
    results = {"seeds": [0, 1, 2], "machine": "hand", "eval_steps": 100, "runs": runs}
    results |= {"summary": compare.summarize(runs), "iqm": compare.distribution(runs)}
    compare.print_table(results)
    assert results["iqm"]["preset"]["saved_episode"] == {"iqm": 600.0, "ci": None}  # 3 seeds: nothing trimmed
    row = "| **preset** | IQM of 3 (no CI: needs 4+ seeds) | 600 | 600 | 206.7 | 600 | 206.7 | 90% | 80% | 300 |"
    assert row in capsys.readouterr().out.splitlines()


def test_a_run_that_never_got_there_counts_as_worst_in_the_iqm() -> None:
    """As the median: a seed that never reached 200 is the latest, one without an agent the lowest score."""
    hand = [(0, 500, 250.0), (1, 400, 270.0), (2, 900, 100.0), (3, None, None)]
    iqm = compare.distribution([_row("default", *row) for row in hand])["default"]
    assert iqm["solved_episode"]["iqm"] == 700.0  # 400, [500, 900], never: the middle two
    assert iqm["saved_score"]["iqm"] == 175.0  # never, [100, 250], 270
    assert iqm["solved_episode"]["ci"][1] is None and iqm["saved_score"]["ci"][0] is None  # resamples of 2+ misses
    assert 400 <= iqm["solved_episode"]["ci"][0] <= 700
    two = compare.distribution([_row("default", *row) for row in [*hand, (4, None, None)]])["default"]
    assert two["solved_episode"]["iqm"] is None and two["solved_episode"]["ci"][1] is None  # 2 of 5: not trimmed


def test_together_gives_each_seed_the_rows_it_gets_alone(capsys: pytest.CaptureFixture[str]) -> None:
    """``--together`` trains the preset's seeds in one process (main.py --seeds): the same episodes, steps, greedy
    scores at --eval-steps and saved agents as one seed after the other; only the seconds differ (the batch's)."""
    argv = ["--which", "preset", "--seeds", "0", "1", "--max-episodes", "6", "--eval-episodes", "3"]
    argv += ["--eval-steps", "300"]
    alone, together = compare.run(argv), compare.run([*argv, "--together"])
    assert together["together"] is True and alone["together"] is False
    assert "seconds are the clock of the method's whole batch" in capsys.readouterr().out
    for a, b in zip(alone["runs"], together["runs"], strict=True):
        assert (a["seed"], a["episodes_run"], a["steps_run"]) == (b["seed"], b["episodes_run"], b["steps_run"])
        assert a["eval_at_steps"] == pytest.approx(b["eval_at_steps"], rel=1e-5)
        assert a["eval_saved"] == b["eval_saved"] is None or a["eval_saved"] == pytest.approx(b["eval_saved"])


def test_a_snapshot_mid_episode_of_seeds_trained_together_is_their_weights_after_that_step(tmp_path: Path) -> None:
    """compare.py's snapshot at --eval-steps reads the agent's state: with --together, the stack's row after the
    learning step that step made (step 200 learns: 200 % 4 == 0), equal to the plain run's snapshot."""
    from dqnkit.learn.batched import BatchedAgents
    from dqnkit.run.batch import seed_configs, train_together

    cfgs = seed_configs(main.Config(episodes=4, max_steps=150, video=False, quiet=True), [3, 4])
    alone = [compare.Measure(c.target_score, 200, lambda _: None) for c in cfgs]
    before = [compare.Measure(c.target_score, 199, lambda _: None) for c in cfgs]
    for cfg, at, earlier in zip(cfgs, alone, before, strict=True):
        main.train(cfg, out=lambda _: None, hooks=[at, earlier], root=tmp_path / "alone")
    together = [compare.Measure(c.target_score, 200, lambda _: None) for c in cfgs]
    hooks = lambda i: [together[i]]  # noqa: E731
    train_together(main.train, cfgs, [None, None], BatchedAgents, tmp_path / "together", lambda _: None, hooks)
    for a, b, earlier in zip(alone, together, before, strict=True):
        assert a.snapshot is not None and b.snapshot is not None
        assert not torch.equal(a.snapshot["fc1.weight"], earlier.snapshot["fc1.weight"]), "step 200 learned"
        for key, value in a.snapshot.items():
            torch.testing.assert_close(b.snapshot[key], value, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("together", [False, True], ids=["alone", "together"])
def test_a_stopped_benchmark_exits_130_and_prints_no_table(tmp_path: Path, together: bool) -> None:
    """SIGTERM (a real one) stops the runs after their episodes; a table would count them as never solved."""
    import signal
    import subprocess

    argv = ["--which", "default", "--seeds", "0", "1", "--max-episodes", "500", "--eval-episodes", "2"]
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "compare.py"
    cmd = [sys.executable, str(script), *argv, *(["--together"] if together else [])]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    while not any("episode 100: average" in line for line in seen[-1:]):  # training, its handlers in place
        seen.append(proc.stderr.readline())
        assert seen[-1], "compare.py ended before its 100th episode: " + "".join(seen)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "| method |" not in out and "RUN " not in "".join(seen) + err


def test_the_ten_seed_files_join_into_the_readmes_table(root: Path, capsys: pytest.CaptureFixture) -> None:
    """The README's ten-seed rows are what --join prints of the committed files (seeds trained together)."""
    files = sorted((root / "benchmarks" / "results").glob("compare-*-seeds100-109-together-*"))
    joined = compare.run(["--join", *map(str, files)])
    out = capsys.readouterr().out
    assert "trained together (main.py --seeds)" in out and joined["seeds"] == list(range(100, 110))
    readme = (root / "README.md").read_text()
    for method, label in (("default", "the original"), ("preset", "`--preset fast`")):
        saved = joined["iqm"][method]["saved_score"]
        score = f"{saved['iqm']:.1f} [{saved['ci'][0]:.1f}, {saved['ci'][1]:.1f}]"
        row = next(line for line in readme.splitlines() if line.startswith(f"| {label} | episode "))
        assert score in row, (score, row)
