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
