"""Throughput of many seeds in one process: N seeds as one ``BatchedAgents`` against N plain agents in turn.

Both sides play ``main.train``'s loop for seeds ``0 .. N-1``, each with its own LunarLander environment,
epsilon-greedy on the run's schedule, learning every ``learn_every`` steps once the memory holds more than
a minibatch, all on one core and one thread. The plain side steps its N agents round-robin. Rounds
alternate the sides; the figures are medians of aggregate environment steps per second (of wall-clock
and of CPU time, which hardly moves when another process shares the core), with microseconds per seed-step
spent in each part of the loop: where the time goes. The last line printed is one JSON object.

With ``--runs EPISODES``, whole runs instead: ``python main.py --seeds 0 .. N-1`` (``dqnkit.run.batch``, every
hook of a run: metrics, evaluations, checkpoints) against N runs of ``main.train`` one after the other, each
seed ``EPISODES`` episodes without videos; both sides play the same episodes, so the steps are the same.

    python benchmarks/batched_throughput.py [--steps 3000] [--rounds 2] [--seeds-counts 1 4 8 16] [--preset fast]
    python benchmarks/batched_throughput.py --runs 200 [--rounds 2] [--seeds-counts 1 4 8 16] [--preset fast]
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Any

import common  # before NumPy: one BLAS thread  # isort: skip
import numpy as np
import torch
from speed import env_step_us

import main
from dqnkit.cli import positive_int
from dqnkit.learn import make_agent
from dqnkit.learn.batched import BatchedAgents
from dqnkit.settings import PRESETS, apply_preset

SIZES = (8, 4)  # LunarLander: observation length, actions


def play(cfg: main.Config, n: int, steps: int, batched: bool) -> dict[str, Any]:
    """``steps`` environment steps of each of ``n`` seeds in lockstep; rates and microseconds per seed-step by part."""
    seeds = list(range(n))
    if batched:
        learner: Any = BatchedAgents.from_seeds(cfg, seeds, SIZES, main.seed_everything)
    else:
        learner = [make_agent(cfg, *SIZES, "cpu", main.seed_everything(s)) for s in seeds]
    envs = [main.make_env(cfg.env, cfg.max_steps) for _ in seeds]
    states = [env.reset(seed=s)[0] for env, s in zip(envs, seeds, strict=True)]
    epsilons = [cfg.epsilon_start] * n
    spent = dict.fromkeys(("act", "env", "store", "learn"), 0.0)  # plain: "store" includes its learning
    clock, wall, cpu = time.perf_counter, common.Stopwatch(), time.process_time()
    for t in range(steps):
        if cfg.epsilon_decay_steps:  # linear in environment steps, else per episode as main.train
            epsilons = [main.linear_epsilon(t, cfg.epsilon_start, cfg.epsilon_end, cfg.epsilon_decay_steps)] * n
        t0 = clock()
        if batched:
            actions = learner.act(np.stack(states), epsilons)
        else:
            actions = [a.act(s, e) for a, s, e in zip(learner, states, epsilons, strict=True)]
        spent["act"] += clock() - t0
        for i, env in enumerate(envs):
            t0 = clock()
            next_state, reward, terminated, truncated, _ = env.step(int(actions[i]))
            t1 = clock()
            if batched:
                learner.step(i, states[i], actions[i], reward, next_state, terminated)
            else:
                learner[i].step(states[i], actions[i], reward, next_state, terminated)
            spent["env"], spent["store"] = spent["env"] + t1 - t0, spent["store"] + clock() - t1
            states[i] = next_state
            if terminated or truncated:
                learner.end_episode(i) if batched else learner[i].end_episode()
                states[i] = env.reset()[0]
                if not cfg.epsilon_decay_steps:
                    epsilons[i] = main.next_epsilon(epsilons[i], cfg.epsilon_end, cfg.epsilon_decay)
        if batched:
            t0 = clock()
            learner.learn()
            spent["learn"] += clock() - t0
    total = n * steps
    seconds, cpu_seconds = wall.seconds(), time.process_time() - cpu
    for env in envs:
        env.close()
    parts = {k: v / total * 1e6 for k, v in spent.items()}
    parts["other"] = seconds / total * 1e6 - sum(parts.values())
    return {"rate": total / seconds, "cpu_rate": total / cpu_seconds, "us_per_seed_step": parts}


def whole_runs(cfg: main.Config, n: int, episodes: int, batched: bool) -> dict[str, Any]:
    """Seeds ``0 .. n-1``, ``episodes`` episodes each: together (``--seeds``) or one run after the other."""
    import tempfile

    from dqnkit.run.batch import seed_configs, train_seeds

    cfgs = seed_configs(dataclasses.replace(cfg, episodes=episodes, video=False, quiet=True), list(range(n)))
    with tempfile.TemporaryDirectory(prefix="dqn-benchmark-") as tmp:
        wall, cpu = common.Stopwatch(), time.process_time()
        if batched:
            results = train_seeds(main.train, cfgs, [None] * n, root=tmp, out=lambda _: None)
        else:
            results = [main.train(c, out=lambda _: None, root=tmp) for c in cfgs]
        seconds, cpu_seconds = wall.seconds(), time.process_time() - cpu
    total = sum(r.total_steps for r in results)
    return {"rate": total / seconds, "cpu_rate": total / cpu_seconds, "steps": total, "us_per_seed_step": {}}


def measure(cfg: main.Config, counts: list[int], steps: int, rounds: int, runs_of: int = 0) -> dict[str, Any]:
    """Every count, both sides per round (the order swapped each round); medians and ratios. ``runs_of``: whole
    runs of that many episodes (:func:`whole_runs`) instead of ``steps`` steps of the loop alone."""
    play(cfg, 1, 300, False), play(cfg, 1, 300, True)  # untimed: the first learning step pays set-up

    def one(n: int, batched: bool) -> dict[str, Any]:
        return whole_runs(cfg, n, runs_of, batched) if runs_of else play(cfg, n, steps, batched)

    runs: dict[int, dict[str, list[dict]]] = {n: {"plain": [], "batched": []} for n in counts}
    for r in range(rounds):
        for n in counts:
            for side in ("plain", "batched") if r % 2 == 0 else ("batched", "plain"):
                runs[n][side].append(one(n, side == "batched"))
            plain, batched = runs[n]["plain"][-1]["rate"], runs[n]["batched"][-1]["rate"]
            common.note(f"  round {r + 1}/{rounds}, N={n}: plain {plain:,.0f}, batched {batched:,.0f} steps/s")
    table = {}
    for n, sides in runs.items():
        med = {s: {k: statistics.median(x[k] for x in v) for k in ("rate", "cpu_rate")} for s, v in sides.items()}
        parts = {s: {k: statistics.median(x["us_per_seed_step"][k] for x in v) for k in v[0]["us_per_seed_step"]}
                 for s, v in sides.items()}  # fmt: skip
        ratios = [b["rate"] / p["rate"] for p, b in zip(sides["plain"], sides["batched"], strict=True)]
        table[n] = {**{s: {**med[s], "us_per_seed_step": parts[s]} for s in sides}, "ratio": statistics.median(ratios),
                    "cpu_ratio": med["batched"]["cpu_rate"] / med["plain"]["cpu_rate"], "rounds": sides}  # fmt: skip
    return table


def print_table(results: dict[str, Any]) -> None:
    print(f"Batched seeds, {common.machine_line(results['machine'])}; {results['command']}")
    print(f"config: {results['config']}; bare env step {results['env_step_us']:.1f} us; steps/s are aggregate")
    print("N | plain steps/s | batched steps/s | ratio (wall) | ratio (CPU) | "
          "batched us/seed-step: act env store learn other | plain: act env step+learn other")  # fmt: skip
    for n, row in results["table"].items():
        b, p = row["batched"]["us_per_seed_step"], row["plain"]["us_per_seed_step"]
        if not b:  # whole runs: no parts measured
            print(f"{n} | {row['plain']['rate']:,.0f} | {row['batched']['rate']:,.0f} | {row['ratio']:.2f}x | "
                  f"{row['cpu_ratio']:.2f}x | - | -")  # fmt: skip
            continue
        print(f"{n} | {row['plain']['rate']:,.0f} | {row['batched']['rate']:,.0f} | {row['ratio']:.2f}x | "
              f"{row['cpu_ratio']:.2f}x | {b['act']:.0f} {b['env']:.0f} {b['store']:.0f} {b['learn']:.0f} "
              f"{b['other']:.0f} | {p['act']:.0f} {p['env']:.0f} {p['store']:.0f} {p['other']:.0f}")  # fmt: skip


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.parser("batched_throughput.py", __doc__.splitlines()[0])
    parser.add_argument("--steps", type=positive_int, default=3000, help="environment steps per seed and run")
    parser.add_argument("--rounds", type=positive_int, default=2, help="rounds, each side once per count")
    parser.add_argument("--seeds-counts", type=positive_int, nargs="+", default=[1, 4, 8, 16], help="values of N")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a preset's configuration (default: the original)")
    parser.add_argument("--cpu", type=int, default=0, help="the core to pin to; -1 pins nothing")
    parser.add_argument(
        "--runs", type=positive_int, metavar="EPISODES", help="whole runs, this many episodes a seed (main.py --seeds)"
    )
    args = parser.parse_args(argv)
    common.check_distinct(parser, "--seeds-counts", args.seeds_counts)
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    torch.set_num_threads(1)
    cfg = apply_preset(main.Config(), args.preset) if args.preset else main.Config()
    command = " ".join(["python benchmarks/batched_throughput.py", *(sys.argv[1:] if argv is None else argv)])
    results: dict[str, Any] = {"machine": common.machine_info(), "command": command, "config": args.preset or "default"}
    results["env_step_us"] = env_step_us(steps=10_000)["median_us"]
    results["runs"] = args.runs
    results["table"] = measure(cfg, args.seeds_counts, args.steps, args.rounds, args.runs or 0)
    print_table(results)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    run()
