"""benchmarks/speed.py: the agents it names, its arithmetic, its command line, and the step breakdown."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import agent
import main
from dqnkit.learn import make_agent
from dqnkit.learn.memory import OptionsMemory
from dqnkit.learn.options import OptionsAgent
from dqnkit.learn.twin import NumpyAgent
from dqnkit.settings import apply_preset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import reference  # noqa: E402
import speed  # noqa: E402

# ---------------------------------------------------------------- the three agents


def test_the_agents_are_built_as_named() -> None:
    assert list(speed.AGENTS) == ["reference", "default", "numpy"]  # the order of a round
    assert type(speed.build("default", 0)) is agent.Agent  # main.Config(): the textbook agent.py
    assert type(speed.build("numpy", 0)) is NumpyAgent  # main.Config(backprop="numpy")
    assert type(speed.build("reference", 0)) is reference.ReferenceAgent
    assert type(speed.build("reference", 0).memory) is reference.ReferenceReplayMemory
    # --preset fast, the other solve side, runs the textbook autograd path with its options, not the twin.
    preset = make_agent(apply_preset(main.Config(), "fast"), 8, 4, "cpu", np.random.default_rng(0))
    assert type(preset) is OptionsAgent and preset.double_dqn and preset.memory.n_step == 3


def test_the_default_and_the_twin_start_from_the_same_weights() -> None:
    default, twin = speed.build("default", 3), speed.build("numpy", 3)
    for a, b in zip(default.local_qnetwork.parameters(), twin.local_qnetwork.parameters(), strict=True):
        assert a.detach().equal(b.detach())
    other = speed.build("default", 4)  # and the seed matters
    assert not next(other.local_qnetwork.parameters()).detach().equal(next(default.local_qnetwork.parameters()))


def test_the_reference_learns_with_the_default_hyperparameters() -> None:
    ref = speed.build("reference", 0)
    before = [p.detach().clone() for p in ref.target_qnetwork.parameters()]
    state = np.zeros(8, dtype=np.float32)
    for i in range(main.Config().minibatch_size + 4):  # learning starts once the memory holds more than a minibatch
        ref.step(state, i % 4, 1.0, state, False)
    assert len(ref.memory) == 104 and ref.t_step == 0
    after = list(ref.target_qnetwork.parameters())
    assert any(not a.detach().equal(b) for a, b in zip(after, before, strict=True))  # the soft update moved it
    assert ref.act(state, epsilon=0.0) in range(4)


# ---------------------------------------------------------------- the arithmetic


def test_summarize_rounds_by_hand() -> None:
    rounds = [
        {"reference": 100.0, "default": 250.0, "numpy": 500.0},
        {"reference": 200.0, "default": 300.0, "numpy": 1200.0},
        {"reference": 150.0, "default": 450.0, "numpy": 900.0},
    ]
    summary = speed.summarize_rounds(rounds)
    assert summary["medians"] == {"reference": 150.0, "default": 300.0, "numpy": 900.0}
    default, numpy = summary["vs_reference"]["default"], summary["vs_reference"]["numpy"]
    assert default["ratio_of_medians"] == pytest.approx(2.0) and numpy["ratio_of_medians"] == pytest.approx(6.0)
    assert default["median_of_ratios"] == pytest.approx(2.5)  # ratios 2.5, 1.5, 3.0
    assert numpy["median_of_ratios"] == pytest.approx(6.0)  # ratios 5.0, 6.0, 6.0
    assert "reference" not in summary["vs_reference"]


def test_throughput_alternates_the_agents_in_every_round() -> None:
    calls: list[tuple[str, int]] = []

    def fake_run(name: str, steps: int, seed: int) -> tuple[float, float]:
        calls.append((name, steps))
        assert seed == 4
        wall = {"reference": 100.0, "default": 200.0, "numpy": 600.0}[name] + len(calls)
        return wall, 2 * wall

    tp = speed.throughput(steps=1000, rounds=3, seed=4, run=fake_run)
    names = ["reference", "default", "numpy"]
    assert calls == [(n, speed.WARMUP_STEPS) for n in names] + [(n, 1000) for n in names] * 3  # warm-up, 3 rounds
    assert len(tp["rounds"]) == 3 and tp["steps"] == 1000 and tp["seed"] == 4 and tp["threads"] == 1
    assert tp["medians"]["reference"] == 107.0 and tp["cpu"]["medians"]["reference"] == 214.0  # 104, 107, 110
    assert tp["rounds"][0] == {"reference": 104.0, "default": 205.0, "numpy": 606.0}
    assert tp["vs_reference"]["default"]["ratio_of_medians"] == pytest.approx(208.0 / 107.0)


def test_a_short_workload_counts_wall_and_cpu_time() -> None:
    wall, cpu = speed.run_workload("default", steps=150, seed=0)  # 150 steps: it learns too
    assert wall > 0 and cpu > 0


def test_solve_alternates_the_sides_and_takes_medians_over_solved_runs() -> None:
    assert speed.solve_order([0, 1, 2]) == [
        ("default", 0),
        ("preset", 0),
        ("preset", 1),
        ("default", 1),
        ("default", 2),
        ("preset", 2),
    ]
    walls = {("default", 0): 100.0, ("default", 1): 80.0, ("default", 2): 90.0, ("preset", 0): 40.0}
    walls.update({("preset", 1): 60.0, ("preset", 2): 50.0})
    asked: list[int | None] = []

    def fake_solve(seed: int, flags: list[str], episodes: int | None) -> dict:
        asked.append(episodes)
        side = "preset" if flags == ["--preset", "fast"] else "default"
        assert flags in ([], ["--preset", "fast"])
        solved = (side, seed) != ("preset", 2)
        episode = 700 + seed if side == "default" else 200 + seed
        return {
            "seed": seed,
            "wall_seconds": walls[side, seed],
            "solved": solved,
            "solved_episode": episode if solved else None,
            "solved_steps": 1000 * episode if solved else None,
            "times_env_alone": 3.0 + seed,
        }

    solve = speed.time_to_solve([0, 1, 2], solve=fake_solve, episodes=900)
    assert asked == [900] * 6
    assert [r["seed"] for r in solve["preset"]["runs"]] == [0, 1, 2]  # in seed order, whatever the run order
    assert solve["default"]["median_wall_seconds"] == 90.0 and solve["default"]["median_episodes"] == 701
    assert solve["default"]["median_steps"] == 701_000 and solve["default"]["median_times_env_alone"] == 4.0
    assert solve["preset"]["solved_runs"] == 2 and solve["preset"]["median_wall_seconds"] == 50.0  # of 40 and 60
    assert solve["preset"]["median_episodes"] == 200.5 and solve["preset"]["median_times_env_alone"] == 3.5
    assert solve["preset_over_default_wall"] == pytest.approx(50.0 / 90.0)
    assert solve["preset_over_default_wall_per_seed"] == pytest.approx([0.4, 0.75])  # seed 2 did not solve


def test_no_solved_run_gives_no_medians() -> None:
    def never(seed: int, flags: list[str], episodes: int | None) -> dict:
        return {"seed": seed, "wall_seconds": 5.0, "solved": False, "solved_episode": None, "solved_steps": None}

    solve = speed.time_to_solve([7], solve=never)
    assert solve["default"]["solved_runs"] == 0 and solve["default"]["median_wall_seconds"] is None
    assert solve["preset_over_default_wall"] is None and solve["preset_over_default_wall_per_seed"] == []


def test_solve_runs_main_quietly_without_videos(tmp_path: Path) -> None:
    flags = speed.solve_flags(2, ["--preset", "fast"], tmp_path / "w.pth")
    weights = str(tmp_path / "w.pth")
    assert flags == ["--no-video", "--quiet", "--seed", "2", "--preset", "fast", "--checkpoint", weights]
    preset = apply_preset(main.Config(), "fast")
    expected = dataclasses.replace(preset, video=False, quiet=True, seed=2, checkpoint=weights)
    assert main.parse_config(flags) == expected
    capped = speed.solve_flags(2, [], tmp_path / "w.pth", episodes=30)
    expected = dataclasses.replace(main.Config(), video=False, quiet=True, seed=2, checkpoint=weights, episodes=30)
    assert main.parse_config(capped) == expected


def test_solve_once_reads_the_run_it_made() -> None:
    """Two real main.py runs: one cut off by --episodes, one solved at once by a rule every agent passes."""
    cut = speed.solve_once(0, ["--max-steps", "40"], episodes=2)
    assert (cut["solved"], cut["solved_episode"], cut["solved_steps"], cut["episodes_run"]) == (False, None, None, 2)
    assert 2 <= cut["steps_run"] <= 80 and cut["wall_seconds"] > cut["loop_seconds"] > 0
    alone = speed.times_env_alone(cut["wall_seconds"], cut["steps_run"], cut["env_step_us"])
    assert cut["times_env_alone"] == pytest.approx(alone) and cut["env_step_us"] > 0
    rule = ["--eval-every", "1", "--eval-episodes", "1", "--eval-target=-1e9", "--eval-landed", "0"]
    solved = speed.solve_once(0, ["--max-steps", "40", *rule], episodes=5)
    assert (solved["solved"], solved["solved_episode"], solved["episodes_run"]) == (True, 1, 1)
    assert solved["solved_steps"] == solved["steps_run"] <= 40


def test_times_env_alone_by_hand() -> None:
    # 100 s for 400,000 steps at 50 us each: the environment alone is 20 s, the run 5 times that.
    assert speed.times_env_alone(100.0, 400_000, 50.0) == pytest.approx(5.0)


# ---------------------------------------------------------------- the command line


def test_arguments_defaults_and_the_old_spelling() -> None:
    args = speed.parse_args([])
    assert (args.steps, args.rounds, args.seeds, args.breakdown, args.append) == (20_000, 5, [0, 1, 2], 0, None)
    assert not (args.no_solve or args.no_throughput) and args.seed == 0 and args.episodes is None
    assert speed.parse_args(["--repeats", "2"]).rounds == 2  # the flag's earlier name still works
    args = speed.parse_args(["--no-solve", "--no-throughput", "--seeds", "3", "4", "5", "--steps", "10"])
    assert (args.no_solve, args.no_throughput, args.seeds, args.steps) == (True, True, [3, 4, 5], 10)
    assert speed.parse_args(["--episodes", "40", "--breakdown", "3"]).episodes == 40


@pytest.mark.parametrize(
    "argv",
    [
        ["--steps", "0"],
        ["--steps", "many"],
        ["--rounds", "0"],
        ["--breakdown", "-1"],
        ["--seeds", "1", "1"],
        ["--seeds", "-1"],
        ["--seed", "4294967296"],
        ["--episodes", "0"],
        ["--append", "/"],  # a folder
    ],
    ids=lambda argv: " ".join(argv),
)
def test_bad_arguments_exit_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        speed.parse_args(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("speed.py: error: ") and argv[0] in err and err.count("\n") == 1


def test_a_run_of_no_part_prints_and_appends_its_json_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "speed.jsonl"
    speed.run(["--no-solve", "--no-throughput", "--append", str(out)])
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert out.read_text() == printed + "\n"
    figures = json.loads(printed)
    assert figures["throughput"] is None and figures["solve"] is None and figures["machine"]["torch_threads"] == 1
    assert figures["machine"]["date"].endswith("+00:00") and "commit" in figures["machine"]  # UTC, the code run
    memory = figures["memory"]
    assert memory["capacity"] == 100_000 and 7.6 <= memory["project_mb"] < memory["reference_mb"]
    assert figures["command"] == f"benchmarks/speed.py --no-solve --no-throughput --append {out}"


# ---------------------------------------------------------------- breakdown and calibration


@pytest.mark.parametrize("backprop", ["autograd", "numpy"])
def test_breakdown_parts_add_up_and_leave_the_code_as_it_was(
    backprop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # about the working folder: the run's files must not land in it
    classes = (agent.Agent, OptionsAgent, NumpyAgent, agent.ReplayMemory, OptionsMemory)
    before = [dict(vars(cls)) for cls in classes], (main.play_episode, main.make_env)
    split = speed.breakdown(episodes=3, seed=0, backprop=backprop)
    assert ([dict(vars(cls)) for cls in classes], (main.play_episode, main.make_env)) == before
    assert split["agent"] == ("Agent" if backprop == "autograd" else "NumpyAgent")
    parts = split["seconds"]
    assert list(parts) == [  # in the order of docs/speed.md's table
        "environment step",
        "environment reset",
        "acting (epsilon-greedy)",
        "storing the transition",
        "sampling a minibatch",
        "learning (gradient, Adam, target update)",
        "the rest of the episode loop",
    ]
    assert split["steps"] > 100 and all(seconds > 0 for seconds in parts.values())  # 100+ steps: it learned
    assert sum(parts.values()) == pytest.approx(split["loop_seconds"])
    assert list(tmp_path.iterdir()) == []  # the run's files went to a temporary folder


def test_timed_adds_up_each_call_on_the_instance_only() -> None:
    ticks = iter(range(100))

    class Thing:
        def f(self, x: int) -> int:
            if x < 0:
                raise ValueError(x)
            return 2 * x

    thing, spent = Thing(), {"other": 5.0}
    speed.timed(thing, "f", "f", spent, clock=lambda: float(next(ticks)))  # every reading 1 s after the last
    assert spent == {"other": 5.0, "f": 0.0}  # listed from the start, in the order wrapped
    assert thing.f(3) == 6 and thing.f(4) == 8 and spent == {"other": 5.0, "f": 2.0}
    with pytest.raises(ValueError):
        thing.f(-1)
    assert spent["f"] == 3.0  # a call that raised is counted too
    assert "f" in vars(thing) and "f" in vars(Thing) and Thing().f(1) == 2  # the class is untouched


def test_env_step_calibration_counts_its_steps() -> None:
    calibration = speed.env_step_us(steps=50, seed=0, chunks=5)
    assert calibration["steps"] == 50 and calibration["chunk_steps"] == 10 and len(calibration["chunks_us"]) == 5
    assert calibration["median_us"] == sorted(calibration["chunks_us"])[2]
    assert all(v > 0 for v in calibration["chunks_us"])


def test_replay_memory_peaks_by_hand() -> None:
    """The project's memory is one float32 array: 1,000 rows of 2 * 8 + 3 numbers, 76,000 bytes."""
    project = speed.replay_peak_mb(lambda: agent.ReplayMemory(1000, 8), transitions=1000)
    assert 0.076 <= project < 0.076 + 0.005  # and its own random generator, and one transition at a time
    assert speed.replay_peak_mb(lambda: reference.ReferenceReplayMemory(1000), transitions=1000) > 3 * project
