"""benchmarks/speed.py: the agents it names, its arithmetic, its command line, and the step breakdown."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

import agent
import main
from dqnkit.learn.options import OPTIONS, DoubleDQN
from dqnkit.learn.twin import NumpyAgent, NumpyGradientClipping
from dqnkit.settings import apply_preset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import speed  # noqa: E402

# ---------------------------------------------------------------- the three agents


def test_the_agents_are_built_as_named() -> None:
    assert type(speed.build_default_agent(0)) is agent.Agent  # main.Config(): the textbook agent.py
    assert type(speed.build_numpy_agent(0)) is NumpyAgent  # main.Config(backprop="numpy")
    assert type(speed.build_reference_agent(0)) is speed.ReferenceAgent
    assert speed.AGENTS == ("reference", "default", "numpy") and set(speed.BUILDERS) == set(speed.AGENTS)
    preset = speed.build_config_agent(apply_preset(main.Config(), "fast"), 0)
    # --preset fast runs the textbook autograd path (agent.Agent with its options), not the twin.
    assert isinstance(preset, agent.Agent) and not isinstance(preset, NumpyAgent)
    assert isinstance(preset, DoubleDQN)


def test_the_default_and_the_twin_start_from_the_same_weights() -> None:
    default, twin = speed.build_default_agent(3), speed.build_numpy_agent(3)
    for a, b in zip(default.local_qnetwork.parameters(), twin.local_qnetwork.parameters(), strict=True):
        assert a.detach().equal(b.detach())


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
    calls: list[str] = []
    names = {builder: name for name, builder in speed.BUILDERS.items()}

    def fake_run(build, steps: int, seed: int) -> tuple[float, float]:
        calls.append(names[build])
        wall = {"reference": 100.0, "default": 200.0, "numpy": 600.0}[names[build]] + len(calls)
        return wall, 2 * wall

    tp = speed.throughput(steps=10, rounds=3, seed=4, run=fake_run)
    assert calls == ["reference", "default", "numpy"] * 4  # a warm-up, then three rounds
    assert len(tp["rounds"]) == 3 and tp["steps"] == 10 and tp["seed"] == 4 and tp["threads"] == 1
    assert tp["medians"]["reference"] == 107.0 and tp["cpu"]["medians"]["reference"] == 214.0  # 104, 107, 110


def test_a_short_workload_counts_wall_and_cpu_time() -> None:
    wall, cpu = speed.run_workload(speed.build_default_agent, steps=150, seed=0)  # 150 steps: it learns too
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

    def fake_solve(seed: int, flags: list[str]) -> dict:
        side = "preset" if flags else "default"
        solved = (side, seed) != ("preset", 2)
        episode = 700 + seed if side == "default" else 200 + seed
        return {
            "seed": seed,
            "wall_seconds": walls[side, seed],
            "solved": solved,
            "solved_episode": episode if solved else None,
            "solved_steps": 1000 * episode if solved else None,
            "times_env_alone": 3.0,
        }

    solve = speed.time_to_solve([0, 1, 2], solve=fake_solve)
    assert [r["seed"] for r in solve["preset"]["runs"]] == [0, 1, 2]  # in seed order, whatever the run order
    assert solve["default"]["median_wall_seconds"] == 90.0 and solve["default"]["median_episodes"] == 701
    assert solve["preset"]["solved_runs"] == 2 and solve["preset"]["median_wall_seconds"] == 50.0  # of 40 and 60
    assert solve["preset_over_default_wall"] == pytest.approx(50.0 / 90.0)
    assert solve["preset_over_default_wall_per_seed"] == pytest.approx([0.4, 0.75])  # seed 2 did not solve


def test_solve_command_runs_main_quietly_without_videos(tmp_path: Path) -> None:
    cmd = speed.solve_command(2, ["--preset", "fast"], tmp_path / "w.pth")
    assert cmd[0] == sys.executable and cmd[1].endswith("main.py")
    weights = str(tmp_path / "w.pth")
    assert cmd[2:] == ["--no-video", "--quiet", "--seed", "2", "--preset", "fast", "--checkpoint", weights]
    preset = apply_preset(main.Config(), "fast")
    expected = dataclasses.replace(preset, video=False, quiet=True, seed=2, checkpoint=weights)
    assert main.parse_config(cmd[2:]) == expected


def test_times_env_alone_by_hand() -> None:
    # 100 s for 400,000 steps at 50 us each: the environment alone is 20 s, the run 5 times that.
    assert speed.times_env_alone(100.0, 400_000, 50.0) == pytest.approx(5.0)


# ---------------------------------------------------------------- the command line


def test_arguments_defaults_and_the_old_spelling() -> None:
    args = speed.parse_args([])
    assert (args.steps, args.rounds, args.seeds, args.breakdown, args.append) == (20_000, 5, [0, 1, 2], 0, None)
    assert not (args.no_solve or args.no_throughput)
    assert speed.parse_args(["--repeats", "2"]).rounds == 2  # the flag's earlier name still works
    args = speed.parse_args(["--no-solve", "--no-throughput", "--seeds", "3", "4", "5", "--steps", "10"])
    assert (args.no_solve, args.no_throughput, args.seeds, args.steps) == (True, True, [3, 4, 5], 10)


@pytest.mark.parametrize(
    "argv",
    [["--steps", "0"], ["--rounds", "0"], ["--breakdown", "-1"], ["--seeds", "1", "1"], ["--seeds", "-1"]],
    ids=lambda argv: " ".join(argv),
)
def test_bad_arguments_exit_with_a_message(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        speed.parse_args(argv)
    assert exc.value.code == 2 and "error" in capsys.readouterr().err


def test_a_run_of_no_part_prints_and_appends_its_json_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "speed.jsonl"
    speed.run(["--no-solve", "--no-throughput", "--append", str(out)])
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert out.read_text() == printed + "\n"
    figures = json.loads(printed)
    assert figures["throughput"] is None and figures["solve"] is None and figures["machine"]["torch_threads"] == 1
    assert figures["machine"]["date"].endswith("+00:00") and "commit" in figures["machine"]  # UTC, the code run


# ---------------------------------------------------------------- breakdown and calibration


@pytest.mark.parametrize("backprop", ["autograd", "numpy"])
def test_breakdown_parts_add_up_and_restore_the_code(
    backprop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    classes = (agent.Agent, *OPTIONS, NumpyAgent, NumpyGradientClipping, agent.ReplayMemory)
    before = [dict(vars(cls)) for cls in classes], (main.play_episode, main.make_env)
    split = speed.breakdown(episodes=3, seed=0, backprop=backprop)
    assert ([dict(vars(cls)) for cls in classes], (main.play_episode, main.make_env)) == before
    assert split["agent"] == ("Agent" if backprop == "autograd" else "NumpyAgent")
    parts = split["seconds"]
    assert set(parts) >= {"environment step", "acting (epsilon-greedy)", "storing the transition"}
    assert split["steps"] > 100 and all(seconds > 0 for seconds in parts.values())  # 100+ steps: it learned
    assert sum(parts.values()) == pytest.approx(split["loop_seconds"])
    assert list(tmp_path.iterdir()) == []  # the run's files went to a temporary folder


def test_part_timers_remove_what_they_added_to_a_subclass() -> None:
    class Base:
        def f(self) -> int:
            return 1

    class Child(Base):
        pass

    timers = speed.PartTimers()
    timers.wrap(Child, "f", "f")
    assert Child().f() == 1 and "f" in vars(Child) and timers.spent["f"] > 0
    timers.restore()
    assert "f" not in vars(Child) and Child.f is Base.f


def test_env_step_calibration_counts_its_steps() -> None:
    calibration = speed.env_step_us(steps=50, seed=0, chunks=5)
    assert calibration["steps"] == 50 and calibration["chunk_steps"] == 10 and len(calibration["chunks_us"]) == 5
    assert calibration["median_us"] == sorted(calibration["chunks_us"])[2]
    assert all(v > 0 for v in calibration["chunks_us"])
