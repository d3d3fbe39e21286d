"""Speed benchmark: the textbook default and the NumPy twin against a tutorial-style reference, in one run.

After a calibration (one bare environment step: how fast the machine is now), on one thread: throughput,
``--steps`` environment steps of each agent in alternating rounds (reference, default, twin, ...), each
against the reference; the peak memory of each replay memory at 100,000 transitions; with ``--breakdown
EPISODES``, where a training step's time goes; time to solve, ``main.py`` and ``main.py --preset fast``
per ``--seeds`` seed, alternated. The last line printed is one JSON object with every figure.
What each figure means, and those recorded: ``docs/speed.md``.

    python benchmarks/speed.py [--steps N] [--rounds R] [--seeds S ...] [--no-throughput] [--no-solve]
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common  # before NumPy: one BLAS thread  # isort: skip
import numpy as np
import torch
from reference import ReferenceAgent, ReferenceReplayMemory

import agent
import main
from dqnkit.cli import nonnegative_int, positive_int, seed_number
from dqnkit.errors import UserError
from dqnkit.learn import make_agent
from dqnkit.run.files import check_file_path
from dqnkit.run.hooks import Hook

ENV_ID, STATE_SIZE, ACTION_SIZE, CAPACITY = "LunarLander-v3", 8, 4, 100_000
CFG = main.Config()  # the original hyperparameters, shared by every agent here
THREADS = 1  # torch.set_num_threads for every agent timed in this process
WARMUP_STEPS = 500  # untimed steps per agent before the throughput rounds (learning starts after 100)
# The throughput sides, in a round's order: the reference, then the configurations main.py builds an agent of.
AGENTS: dict[str, Any] = {"reference": None, "default": CFG, "numpy": main.Config(backprop="numpy")}
SOLVE_RUNS = {"default": [], "preset": ["--preset", "fast"]}  # main.py's extra flags for each solve side
fmt = common.fmt


# ---------------------------------------------------------------- throughput, calibration, memory


def build(name: str, seed: int) -> Any:
    """The agent :data:`AGENTS` names, on the CPU, after the same ``main.seed_everything`` as ``main.train``."""
    rng = main.seed_everything(seed)
    if AGENTS[name] is None:
        return ReferenceAgent(STATE_SIZE, ACTION_SIZE)
    return make_agent(AGENTS[name], STATE_SIZE, ACTION_SIZE, torch.device("cpu"), rng)


def run_workload(name: str, steps: int, seed: int) -> tuple[float, float]:
    """Steps per second (of wall-clock, of CPU time) of a fresh agent ``name`` over ``steps`` steps of
    ``main.train``'s loop (epsilon decayed per episode, *terminated* stored as done); building it is not timed."""
    torch.set_num_threads(THREADS)
    env, dqn = main.make_env(ENV_ID, CFG.max_steps), build(name, seed)
    env.action_space.seed(seed)
    epsilon = CFG.epsilon_start
    gc.collect()
    clock = common.Stopwatch()
    with env:
        state, _ = env.reset(seed=seed)
        for _ in range(steps):
            action = dqn.act(state, epsilon)
            next_state, reward, terminated, truncated, _ = env.step(action)
            dqn.step(state, action, reward, next_state, terminated)
            state = next_state
            if terminated or truncated:
                epsilon = main.next_epsilon(epsilon, CFG.epsilon_end, CFG.epsilon_decay)
                state, _ = env.reset()
        return steps / clock.seconds(), steps / clock.cpu_seconds()


def throughput(steps: int, rounds: int, seed: int, run: Callable[..., tuple[float, float]] = run_workload) -> dict:
    """Every agent of :data:`AGENTS` once per round, in turn, after an untimed warm-up of each (the first optimizer
    step pays a second of set-up). The wall-clock figures are the headline; the same of CPU time is ``cpu``."""
    for name in AGENTS:
        run(name, min(steps, WARMUP_STEPS), seed)
    wall: list[dict[str, float]] = []
    cpu: list[dict[str, float]] = []
    for i in range(1, rounds + 1):
        figures = {name: run(name, steps, seed) for name in AGENTS}
        wall.append({name: rate for name, (rate, _) in figures.items()})
        cpu.append({name: rate for name, (_, rate) in figures.items()})
        common.note(f"  round {i}/{rounds} (steps/s): " + ", ".join(f"{n} {v:,.0f}" for n, v in wall[-1].items()))
    tp = {"steps": steps, "seed": seed, "threads": THREADS, "rounds": wall, **summarize_rounds(wall)}
    return {**tp, "cpu": {"rounds": cpu, **summarize_rounds(cpu)}}


def summarize_rounds(rounds: list[dict[str, float]], base: str = "reference") -> dict[str, Any]:
    """Medians of each side, and each side against ``base``: the ratio of the medians and the median of ratios."""
    medians = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
    ratios = {
        name: {
            "ratio_of_medians": medians[name] / medians[base],
            "median_of_ratios": statistics.median(r[name] / r[base] for r in rounds),
        }
        for name in rounds[0]
        if name != base
    }
    return {"medians": medians, "vs_" + base: ratios}


def env_step_us(steps: int = 20_000, seed: int = 0, chunks: int = 5) -> dict[str, Any]:
    """Microseconds per bare environment step, the median of ``chunks`` that replay the same seeded reset and
    ``steps // chunks`` random actions; only ``env.step`` is timed."""
    per_chunk = max(1, steps // chunks)
    actions = [int(a) for a in np.random.default_rng(seed).integers(ACTION_SIZE, size=per_chunk)]
    clock, values = time.perf_counter, []
    with main.make_env(ENV_ID, CFG.max_steps) as env:
        for _ in range(chunks):
            env.reset(seed=seed)
            spent = 0.0
            for action in actions:
                t0 = clock()
                _, _, terminated, truncated, _ = env.step(action)
                spent += clock() - t0
                if terminated or truncated:
                    env.reset()
            values.append(spent / per_chunk * 1e6)
    median = statistics.median(values)
    return {"steps": per_chunk * chunks, "chunk_steps": per_chunk, "median_us": median, "chunks_us": values}


def replay_peak_mb(make_memory: Callable[[], Any], transitions: int = CAPACITY, seed: int = 0) -> float:
    """Peak traced memory (MB) while creating a replay memory and pushing LunarLander-like ``transitions``."""
    rng = np.random.default_rng(seed)
    gc.collect()
    tracemalloc.start()
    try:
        memory = make_memory()
        state = rng.standard_normal(STATE_SIZE, dtype=np.float32)
        for _ in range(transitions):
            next_state = rng.standard_normal(STATE_SIZE, dtype=np.float32)
            action = np.int64(rng.integers(ACTION_SIZE))
            memory.push((state, action, np.float64(rng.standard_normal()), next_state, bool(rng.random() < 0.01)))
            state = next_state
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(memory) == transitions
    return peak / 1e6


# ---------------------------------------------------------------- time to solve


def times_env_alone(wall_seconds: float, steps: int, env_step_us: float) -> float:
    """How many times longer a run took than its ``steps`` bare environment steps alone would."""
    return wall_seconds / (steps * env_step_us * 1e-6)


def solve_flags(seed: int, flags: list[str], checkpoint: Path, episodes: int | None = None) -> list[str]:
    """``main.py --no-video --quiet --seed S [flags] [--episodes N]``'s flags, its weights saved to ``checkpoint``."""
    most = ["--episodes", str(episodes)] if episodes else []
    return ["--no-video", "--quiet", "--seed", str(seed), *flags, *most, "--checkpoint", str(checkpoint)]


def solve_once(seed: int, flags: list[str], episodes: int | None = None) -> dict[str, Any]:
    """``main.py`` with :func:`solve_flags` in a temporary folder, after a calibration: its wall time and metrics."""
    calibration = env_step_us(seed=seed)["median_us"]
    with tempfile.TemporaryDirectory(prefix="dqn-solve-") as tmp:
        stdout, wall, m = common.main_py(solve_flags(seed, flags, Path(tmp) / "ckpt.pth", episodes), tmp)
    solved = any(line.startswith("solved:") for line in stdout.splitlines())
    episode, steps = int(m["episode"][-1]), int(m["total_steps"][-1])
    return {
        "seed": seed,
        "flags": flags,
        "wall_seconds": wall,
        "env_step_us": calibration,
        "times_env_alone": times_env_alone(wall, steps, calibration),
        "solved": solved,
        "episodes_run": episode,
        "steps_run": steps,
        "loop_seconds": float(m["wall_seconds"][-1]),
        "solved_episode": episode if solved else None,
        "solved_steps": steps if solved else None,
        "final_average_100": float(m["average_100"][-1]),
    }


def solve_order(seeds: list[int]) -> list[tuple[str, int]]:
    """``(side, seed)`` in the order they run: both sides per seed, the first side alternating (ABBA...)."""
    sides = list(SOLVE_RUNS)
    return [(side, seed) for i, seed in enumerate(seeds) for side in (sides if i % 2 == 0 else sides[::-1])]


def time_to_solve(seeds: list[int], solve: Callable[..., dict] = solve_once, episodes: int | None = None) -> dict:
    """Solve once per seed and side (:data:`SOLVE_RUNS`), alternated; medians are over the runs that solved."""
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SOLVE_RUNS}
    for side, seed in solve_order(seeds):
        common.note(f"  solving: {side}, seed {seed} ...")
        runs[side].append(solve(seed, SOLVE_RUNS[side], episodes))
    sides = {}
    for side, side_runs in runs.items():
        side_runs.sort(key=lambda r: seeds.index(r["seed"]))
        solved = [r for r in side_runs if r["solved"]]
        keys = {"wall_seconds": "wall_seconds", "episodes": "solved_episode", "steps": "solved_steps"}
        medians = {f"median_{k}": statistics.median(r[v] for r in solved) if solved else None for k, v in keys.items()}
        env_alone = statistics.median(r["times_env_alone"] for r in solved) if solved else None
        sides[side] = {"runs": side_runs, "solved_runs": len(solved), **medians, "median_times_env_alone": env_alone}
    default, preset = sides["default"]["median_wall_seconds"], sides["preset"]["median_wall_seconds"]
    both = zip(runs["default"], runs["preset"], strict=True)
    per_seed = [p["wall_seconds"] / d["wall_seconds"] for d, p in both if d["solved"] and p["solved"]]
    ratio = preset / default if default and preset else None
    return {"seeds": seeds, **sides, "preset_over_default_wall": ratio, "preset_over_default_wall_per_seed": per_seed}


# ---------------------------------------------------------------- where one step's time goes


def timed(owner: Any, name: str, part: str, spent: dict[str, float], clock: Callable = time.perf_counter) -> None:
    """Replace ``owner.name`` by a wrapper that adds the seconds of every call to ``spent[part]`` (about 1 µs)."""
    inner = getattr(owner, name)
    spent.setdefault(part, 0.0)  # the parts in the order they were wrapped

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[part] = spent.get(part, 0.0) + clock() - start

    setattr(owner, name, wrapper)


class TimeTheAgent(Hook):
    """Before the first episode, times the run's agent and its replay memory (the instances: no class changes)."""

    def __init__(self, spent: dict[str, float]) -> None:
        self.spent, self.agent_class = spent, None

    def on_start(self, agent: Any) -> None:
        self.agent_class = type(agent)
        timed(agent, "act", "acting (epsilon-greedy)", self.spent)
        timed(agent.memory, "push", "storing the transition", self.spent)
        timed(agent.memory, "sample_arrays", "sampling a minibatch", self.spent)
        timed(agent, "learn", "learning (gradient, Adam, target update)", self.spent)


def breakdown(episodes: int, seed: int, backprop: str = "autograd") -> dict[str, Any]:
    """Train ``main.Config(backprop=backprop)`` for ``episodes`` episodes here, timing each part of a step:
    the environment, :class:`TimeTheAgent`'s, and the rest of ``main.play_episode`` (the loop itself)."""
    never = float("inf")  # never solved: every episode runs
    cfg = main.Config(seed=seed, episodes=episodes, video=False, quiet=True, target_score=never, backprop=backprop)
    spent: dict[str, float] = {}
    time_agent, originals = TimeTheAgent(spent), (main.make_env, main.play_episode)

    def make_timed_env(*args: Any, **kwargs: Any) -> Any:
        env = originals[0](*args, **kwargs)
        timed(env, "step", "environment step", spent)
        timed(env, "reset", "environment reset", spent)
        return env

    main.make_env = make_timed_env
    timed(main, "play_episode", "episode loop", spent)
    try:
        with common.train_aside(cfg, [time_agent]) as (result, _):
            steps = result.total_steps
    finally:
        main.make_env, main.play_episode = originals
    loop = spent.pop("episode loop")
    parts = {**spent, "the rest of the episode loop": loop - sum(spent.values())}
    split = {"backprop": backprop, "agent": time_agent.agent_class.__name__, "episodes": episodes, "seed": seed}
    return {**split, "steps": steps, "loop_seconds": loop, "seconds": parts}


# ---------------------------------------------------------------- report


def print_report(results: dict[str, Any]) -> None:
    """The human-readable table of every figure."""
    info, calibration, tp = results["machine"], results["env_step"], results["throughput"]
    print(f"DQN speed benchmark, {common.machine_line(info)}, commit {info['commit']}")
    print(
        f"  nproc {info['nproc']}, numpy {info['numpy']}, gymnasium {info['gymnasium']}, torch threads "
        f"{info['torch_threads']}, OPENBLAS_NUM_THREADS {info['openblas_threads']}, load {info['load_average']}"
    )
    print(
        f"  one bare {ENV_ID} step (the same {calibration['chunk_steps']:,} random-action steps, timed "
        f"{len(calibration['chunks_us'])} times): {calibration['median_us']:.1f} µs median "
        f"({', '.join(f'{v:.1f}' for v in calibration['chunks_us'])})"
    )
    if tp is None:
        print("\nThroughput: skipped (--no-throughput)")
    else:
        print(
            f"\nThroughput: {tp['steps']:,} steps of {ENV_ID} per agent, seed {tp['seed']}, {len(tp['rounds'])} "
            f"alternating rounds, {tp['threads']} thread each (steps/s)\n  {'round':<8}"
            + "".join(f"{name:>12}" for name in tp["medians"])
        )
        for label, r in [*enumerate(tp["rounds"], 1), ("median", tp["medians"])]:
            print(f"  {label:<8}" + "".join(f"{value:>12,.0f}" for value in r.values()))
        for name, r in tp["vs_reference"].items():
            print(f"  {name} against the reference: {r['ratio_of_medians']:.2f}x (ratio of medians), ", end="")
            print(f"{r['median_of_ratios']:.2f}x (median of the rounds' ratios)")
        cpu = tp["cpu"]
        medians = ", ".join(f"{name} {value:,.0f}" for name, value in cpu["medians"].items())
        ratios = ", ".join(
            f"{n} {r['ratio_of_medians']:.2f}x / {r['median_of_ratios']:.2f}x" for n, r in cpu["vs_reference"].items()
        )
        print(f"  per second of CPU time instead (medians): {medians}; against the reference {ratios}")
    mem = results["memory"]
    print(f"\nReplay memory peak, {mem['capacity']:,} transitions (tracemalloc)")
    print(f"  project   {mem['project_mb']:8.1f} MB\n  reference {mem['reference_mb']:8.1f} MB")
    for split in results["breakdown"] or []:
        print(
            f"\nWhere a step's time goes: --backprop {split['backprop']} ({split['agent']}), seed {split['seed']}, "
            f"{split['episodes']} episodes, {split['steps']:,} steps, "
            f"{split['loop_seconds'] / split['steps'] * 1e6:.0f} µs per step"
        )
        for part, seconds in split["seconds"].items():
            print(f"  {part:<48}{seconds / split['steps'] * 1e6:>7.1f} µs per step")
    if results["solve"] is None:
        print("\nTime to solve: skipped (--no-solve)")
    else:
        print_solve(results["solve"])


def print_solve(solve: dict[str, Any]) -> None:
    """Per seed and side: wall seconds, episodes, steps; the medians and the preset against the default."""
    print("\nTime to solve: python main.py --no-video --quiet [--preset fast]")
    print("  (the default: until the 100-episode average reaches 200; the preset: until its greedy evaluation passes)")
    print("  (bare step: the calibration just before the run; x env: the wall time over the run's steps at it)")
    print(f"  {'side':<8}{'seed':<6}{'wall s':>10}{'episodes':>10}{'steps':>10}{'bare step':>12}{'x env':>8}")
    for side in SOLVE_RUNS:
        s = solve[side]
        for r in s["runs"]:
            unsolved = "" if r["solved"] else f"  not solved in {r['episodes_run']} episodes"
            print(
                f"  {side:<8}{r['seed']:<6}{r['wall_seconds']:>10.1f}{fmt(r['solved_episode']):>10}"
                f"{fmt(r['solved_steps']):>10}{r['env_step_us']:>9.1f} µs{r['times_env_alone']:>8.2f}{unsolved}"
            )
        print(
            f"  {side:<8}{'median':<6}{fmt(s['median_wall_seconds'], '.1f'):>10}{fmt(s['median_episodes']):>10}"
            f"{fmt(s['median_steps']):>10}{'':>12}{fmt(s['median_times_env_alone'], '.2f'):>8}"
            f"  ({s['solved_runs']}/{len(s['runs'])} solved)"
        )
    per_seed = ", ".join(f"{x:.2f}" for x in solve["preset_over_default_wall_per_seed"])
    print(
        f"  preset wall-clock over the default's: {fmt(solve['preset_over_default_wall'], '.2f')} "
        f"(ratio of medians); per seed {per_seed or '-'}"
    )


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> Any:
    parser = common.parser("speed.py", __doc__.splitlines()[0])
    add = parser.add_argument
    add("--steps", type=positive_int, default=20_000, help="environment steps per agent and round")
    add("--rounds", "--repeats", type=positive_int, default=5, help="throughput rounds: reference, default, numpy")
    add("--seed", type=seed_number, default=0, help="seed of the throughput workload and the calibration")
    solve_help = "solve runs: main.py and main.py --preset fast per seed"
    add("--seeds", type=seed_number, nargs="+", default=[0, 1, 2], help=solve_help)
    add("--episodes", type=positive_int, help="most episodes of each solve run (default: main.py's)")
    add("--no-solve", action="store_true", help="skip the time-to-solve runs")
    add("--no-throughput", action="store_true", help="skip the throughput comparison")
    split_help = "also time each part of a step, on the default and on the NumPy twin, over this many episodes"
    add("--breakdown", type=nonnegative_int, default=0, metavar="EPISODES", help=split_help)
    add("--append", metavar="FILE", help="also append the JSON line to FILE")
    args = parser.parse_args(argv)
    common.check_distinct(parser, "--seeds", args.seeds)
    if args.append is not None:  # before minutes of measuring, not after
        try:
            check_file_path(Path(args.append), "--append")
        except UserError as exc:
            parser.error(str(exc))
    return args


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every measurement asked for, print the table and the JSON line; return the figures."""
    args = parse_args(argv)
    torch.set_num_threads(THREADS)
    command = " ".join(["benchmarks/speed.py", *(sys.argv[1:] if argv is None else argv)])
    results: dict[str, Any] = {"machine": common.machine_info(), "command": command}
    common.note("bare environment steps ...")
    results["env_step"] = env_step_us(seed=args.seed)
    if not args.no_throughput:
        common.note("throughput ...")
    results["throughput"] = None if args.no_throughput else throughput(args.steps, args.rounds, args.seed)
    common.note("replay memory ...")
    results["memory"] = {
        "capacity": CAPACITY,
        "project_mb": replay_peak_mb(lambda: agent.ReplayMemory(CAPACITY, STATE_SIZE)),
        "reference_mb": replay_peak_mb(lambda: ReferenceReplayMemory(CAPACITY)),
    }
    paths = ("autograd", "numpy") if args.breakdown else ()
    results["breakdown"] = [breakdown(args.breakdown, args.seed, path) for path in paths] or None
    results["solve"] = None if args.no_solve else time_to_solve(args.seeds, episodes=args.episodes)
    results["finished"] = common.utc_now()
    print_report(results)
    line = json.dumps(results)
    print(line)
    if args.append:
        with open(args.append, "a") as fh:
            fh.write(line + "\n")
    return results


if __name__ == "__main__":
    run()
