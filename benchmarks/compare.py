"""Side by side on the same seeds: the original DQN, ``--preset fast``, and Stable-Baselines3's DQN.

For each method and seed it measures the episodes, environment steps and wall-clock seconds
until the 100-episode *training* average (exploration included) reaches 200, and the greedy
policy at exactly 100,000 environment steps. Above all it evaluates the **saved agent**, the
weights a user is left with: the original's ``checkpoint.pth`` (written when the training
average reaches 200), the preset's (written when its greedy evaluation during training passes
``--eval-target``; the best evaluated weights if it never does), and SB3's model at the end of
its 100,000 steps. Every greedy evaluation plays 100 episodes from environment seeds
2,000,000 and up, which no run trained, filmed or selected on (training uses ``--seed``,
videos ``--seed`` + episode, the evaluation during training 1,000,000 and up): the mean score,
the share of episodes that came to rest (on the pad or not), the share on the pad, and the
mean episode length. Medians over the seeds (and the worst seed's landed share) are printed
as a table and as one JSON line; below each median row, the interquartile mean (IQM) of the seeds
and its 95% percentile bootstrap confidence interval (``benchmarks/stats.py``, as rliable), in the
JSON line under ``"iqm"``. The interval needs 4 seeds or more; the paper behind it asks for 10.

    python benchmarks/compare.py --jobs 2                 # everything: about half an hour on 2 cores
    python benchmarks/compare.py --which preset --seeds 0 1 2 3 4 --jobs 2

Stable-Baselines3 is optional: ``pip install -r benchmarks/requirements.txt``. Without it the
table compares the other methods, after a one-line warning at the start.
Its hyperparameters are rl-baselines3-zoo's for LunarLander-v2 (``hyperparams/dqn.yml``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import statistics
import tempfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common  # before NumPy: one BLAS thread, for reproducible runs  # isort: skip
import numpy as np
import stats

import main
from dqnkit.cli import positive_int, seed_number
from dqnkit.envs import SOLVED_SCORE
from dqnkit.report.evaluation import UNSEEN_SEED_BASE
from dqnkit.report.logs import solved_at
from dqnkit.run.checkpoints import average_reached
from dqnkit.run.files import save_torch
from dqnkit.run.folder import BEST_WEIGHTS
from dqnkit.run.hooks import Episode, Hook
from dqnkit.settings import apply_preset

ENV_ID = "LunarLander-v3"
EVAL_STEPS = 100_000
# Reset seeds of every greedy evaluation here: disjoint from training (--seed), the videos (--seed +
# episode) and the evaluation during training that picks the preset's agent (1,000,000 and up).
EVAL_SEED = UNSEEN_SEED_BASE  # 2,000,000, as tune.py --confirm
METHODS = ("default", "preset", "sb3")

# rl-baselines3-zoo, hyperparams/dqn.yml, LunarLander-v2 (the v3 task is the same).
SB3_ZOO = {
    "n_timesteps": 100_000,
    "policy": "MlpPolicy",
    "learning_rate": 6.3e-4,
    "batch_size": 128,
    "buffer_size": 50_000,
    "learning_starts": 0,
    "gamma": 0.99,
    "target_update_interval": 250,
    "train_freq": 4,
    "gradient_steps": -1,
    "exploration_fraction": 0.12,
    "exploration_final_eps": 0.1,
    "policy_kwargs": {"net_arch": [256, 256]},
}


def first_solved(scores: list[float], target: float = SOLVED_SCORE) -> int | None:
    """First episode (1-based) whose full 100-episode training average reaches ``target``."""
    return solved_at(np.array(_averages(scores)), target) if len(scores) >= 100 else None


def _averages(scores: list[float]) -> list[float]:
    window: deque[float] = deque(maxlen=100)
    out = []
    for s in scores:
        window.append(s)
        out.append(float(np.mean(window)))
    return out


# ---------------------------------------------------------------- this project


class Measure(Hook):
    """What compare.py measures of a ``main.train`` run, as one more hook of the run.

    When the 100-episode training average first reaches ``target`` (:func:`average_reached`,
    the original's rule, whatever rule saves the agent), when the run saved its agent (the
    episode ``main.train``'s solved checkpoint marks), and the weights at exactly ``eval_steps``
    environment steps. Stops the run once all three are known.
    """

    def __init__(self, target: float, eval_steps: int, out: Callable[[str], None]) -> None:
        self.target, self.eval_steps, self.out = target, eval_steps, out
        self.solved: dict[str, Any] | None = None
        self.saved: dict[str, Any] | None = None
        self.snapshot: dict | None = None

    def on_start(self, agent) -> None:
        self.agent, self.clock = agent, common.Stopwatch()

    def on_step(self, total_steps: int) -> None:
        if total_steps == self.eval_steps:  # the agent's state: with --together, the stack's weights after this step
            self.snapshot = {k: v.clone() for k, v in self.agent.state_dict()["local_qnetwork"].items()}

    def on_episode(self, episode: Episode) -> None:
        e, steps = episode.episode, episode.total_steps
        moment = {"episode": e, "steps": steps, "seconds": self.clock.seconds()}
        if self.solved is None and average_reached(episode, self.target):
            self.solved = moment
            self.out(f"    average {self.target:g} at episode {e}, {steps} steps")
        if episode.solved:
            self.saved = moment
            self.out(f"    agent saved at episode {e}, {steps} steps, {moment['seconds']:.0f} s")
        if e % 100 == 0:
            self.out(f"    episode {e}: average {episode.average_100:.1f}, {steps} steps")
        if self.solved is not None and self.saved is not None and steps >= self.eval_steps:
            self.stop = "measured"


def train_project(cfg: main.Config, eval_steps: int, out: Callable[[str], None]) -> dict[str, Any]:
    """``main.train(cfg)`` with a :class:`Measure` hook, in a temporary folder: the measurements and the saved agent.

    The saved agent is the checkpoint ``main.train`` writes: the weights when the 100-episode
    average reaches the target, or with ``cfg.eval_target`` those whose evaluation during
    training passed it (if none ever does, the best evaluated weights, ``best.pth``). The run
    goes on after it saves (``keep_training``) until the average has reached the target,
    ``eval_steps`` steps are done and the agent is saved, or ``cfg.episodes`` run out.
    """
    measure = Measure(cfg.target_score, eval_steps, out)
    with common.train_aside(cfg, [measure]) as (result, cfg):
        return measured(result, cfg, measure)


def measured(result: Any, cfg: main.Config, measure: Measure) -> dict[str, Any]:
    """What :func:`train_project` returns, read from a finished run (its folder still there) and its ``measure``.
    A run that Ctrl-C or SIGTERM stopped measured nothing: the benchmark stops with status 130 (a half table
    would count the stopped runs as never solved)."""
    from dqnkit.run.files import load_file

    if result.stopped_by is not None:
        raise SystemExit(130)
    saved = measure.saved
    if saved is not None:
        saved = {**saved, "weights": load_file(Path(result.run_dir).parent.parent / cfg.checkpoint)}
    elif (result.run_dir / BEST_WEIGHTS).exists():  # never passed its rule: best.pth
        best = load_file(result.run_dir / BEST_WEIGHTS)
        saved = {"episode": None, "steps": None, "seconds": None, "weights": best}
    final = load_file(result.last_weights)
    return {
        "scores": result.scores,
        "total_steps": result.total_steps,
        "seconds": result.seconds,
        "solved": measure.solved,
        "saved": saved,
        "weights_at_eval_steps": measure.snapshot,
        "final_weights": final,
    }


def evaluate_weights(weights: dict | None, episodes: int) -> dict[str, Any] | None:
    """``main.evaluate`` of a state_dict on the unseen seeds: mean score, shares landed and on the pad, mean length."""
    if weights is None:
        return None
    with tempfile.TemporaryDirectory(prefix="dqn-compare-") as tmp:
        path = Path(tmp) / "weights.pth"
        save_torch(weights, path)
        result = main.evaluate(path, episodes=episodes, seed=EVAL_SEED, out=lambda _: None)
    return common.eval_summary(result)


def moment(name: str, when: dict[str, Any]) -> dict[str, Any]:
    """``{name}_episode``, ``{name}_steps`` and ``{name}_seconds`` of a moment of a run (None where it never came)."""
    return {f"{name}_{key}": when.get(key) for key in ("episode", "steps", "seconds")}


def project_config(method: str, seed: int, args: argparse.Namespace) -> main.Config:
    """The Config of one seed of the original (``default``) or of ``--preset fast``."""
    cfg = main.Config(seed=seed, video=False, episodes=args.max_episodes, quiet=True)
    return apply_preset(cfg, "fast") if method == "preset" else cfg


def run_project(method: str, seed: int, args: argparse.Namespace, out: Callable[[str], None]) -> dict[str, Any]:
    """One seed of the original (``default``) or of ``--preset fast``."""
    run = train_project(project_config(method, seed, args), args.eval_steps, out)
    return project_row(method, seed, run, args)


def run_together(method: str, args: argparse.Namespace, out: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every seed of ``method`` trained together in one process (``main.py --seeds``, ``--together``): the rows of
    :func:`run_project`, except that seconds count the whole batch's clock."""
    from dqnkit.learn.batched import BatchedAgents
    from dqnkit.run.batch import seed_configs, train_together

    with tempfile.TemporaryDirectory(prefix="dqn-benchmark-") as tmp:
        first = dataclasses.replace(project_config(method, args.seeds[0], args), keep_training=True)
        cfgs = seed_configs(first, args.seeds)  # each seed's own checkpoint-seedS.pth, as main.py --seeds
        measures = [
            Measure(c.target_score, args.eval_steps, lambda line, s=c.seed: out(f"  seed {s}:{line}")) for c in cfgs
        ]
        results = train_together(
            main.train, cfgs, [None] * len(cfgs), BatchedAgents, tmp, lambda _: None, lambda i: [measures[i]]
        )
        runs = [measured(r, c, m) for r, c, m in zip(results, cfgs, measures, strict=True)]
    return [project_row(method, c.seed, run, args) for c, run in zip(cfgs, runs, strict=True)]


def project_row(method: str, seed: int, run: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """One row of the table: what a run measured, and its agents' greedy evaluations on the unseen seeds."""
    solved, saved = run["solved"] or {}, run["saved"] or {}
    return {
        "method": method,
        "seed": seed,
        **moment("solved", solved),
        **moment("saved", saved),
        "episodes_run": len(run["scores"]),
        "steps_run": run["total_steps"],
        "seconds_run": run["seconds"],
        "eval_at_steps": evaluate_weights(run["weights_at_eval_steps"], args.eval_episodes),
        "eval_saved": evaluate_weights(saved.get("weights"), args.eval_episodes),
    }


# ---------------------------------------------------------------- Stable-Baselines3


def run_sb3(seed: int, args: argparse.Namespace, out: Callable[[str], None]) -> dict[str, Any]:
    """One seed of SB3's DQN with the zoo hyperparameters, for ``n_timesteps`` (100,000) steps."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor

    torch.set_num_threads(1)
    scores: list[float] = []
    solved: dict[str, Any] = {}
    clock = common.Stopwatch()

    class Record(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    scores.append(float(info["episode"]["r"]))
                    if not solved and first_solved(scores) is not None:
                        solved.update(episode=len(scores), steps=self.num_timesteps, seconds=clock.seconds())
                        out(f"    solved at episode {len(scores)}, {self.num_timesteps} steps")
            return True

    hyper = {k: v for k, v in SB3_ZOO.items() if k not in ("n_timesteps", "policy")}
    env = Monitor(gym.make(ENV_ID))
    model = DQN(SB3_ZOO["policy"], env, seed=seed, device="cpu", verbose=0, **hyper)
    model.learn(total_timesteps=SB3_ZOO["n_timesteps"], callback=Record())
    seconds = clock.seconds()
    env.close()
    evaluation = _evaluate_sb3(model, args.eval_episodes)
    return {
        "method": "sb3",
        "seed": seed,
        **moment("solved", solved),
        "episodes_run": len(scores),
        "steps_run": SB3_ZOO["n_timesteps"],
        "seconds_run": seconds,
        "saved_episode": len(scores),  # the zoo's agent: the model at the end of n_timesteps
        "saved_steps": SB3_ZOO["n_timesteps"],
        "saved_seconds": seconds,
        "eval_at_steps": evaluation,
        "eval_saved": evaluation,
    }


def _evaluate_sb3(model, episodes: int) -> dict[str, Any]:
    """Greedy episodes with the same environment seeds and outcome rules as ``main.evaluate``."""
    from dqnkit.report.evaluation import play_greedy

    env = main.make_env(ENV_ID, 1000)
    try:
        result = play_greedy(
            lambda state: int(model.predict(state, deterministic=True)[0]), env, range(EVAL_SEED, EVAL_SEED + episodes)
        )
    finally:
        env.close()
    return common.eval_summary(result)


# ---------------------------------------------------------------- report


def median(values: list[float | None]) -> float | None:
    """Median of the values, counting a missing one (never solved) as worse than all; None if most are."""
    present = sorted(v for v in values if v is not None)
    missing = len(values) - len(present)
    ordered = present + [None] * missing
    if not ordered:
        return None
    n = len(ordered)
    middle = ordered[(n - 1) // 2 : n // 2 + 1]
    return None if None in middle else float(statistics.mean(middle))


def _eval(name: str, key: str) -> Callable[[dict], Any]:
    return lambda row: row[name] and row[name][key]


# The columns summarize() takes medians of, for the IQM too: how to read a row, and what a missing value (a run
# that never got there, or no agent to evaluate) counts as: the worst, as median() counts a moment that never came
# (later, a lower score or share, a longer episode). The IQM trims it away while no more than a quarter miss.
IQM_COLUMNS: dict[str, tuple[Callable[[dict], Any], float]] = {
    "solved_episode": (lambda r: r["solved_episode"], math.inf),
    "solved_steps": (lambda r: r["solved_steps"], math.inf),
    "solved_seconds": (lambda r: r["solved_seconds"], math.inf),
    "eval_score_at_steps": (_eval("eval_at_steps", "mean_score"), -math.inf),
    "saved_episode": (lambda r: r["saved_episode"], math.inf),
    "saved_seconds": (lambda r: r["saved_seconds"], math.inf),
    "saved_score": (_eval("eval_saved", "mean_score"), -math.inf),
    "saved_landed_share": (_eval("eval_saved", "landed_share"), -math.inf),
    "saved_on_pad_share": (_eval("eval_saved", "on_pad_share"), -math.inf),
    "saved_mean_length": (_eval("eval_saved", "mean_length"), math.inf),
}
IQM_ABOUT = (
    f"interquartile mean over the seeds (scipy.stats.trim_mean(x, 0.25), as rliable) and its 95% percentile "
    f"bootstrap confidence interval (10,000 resamples of the seeds, NumPy seed 0; none below "
    f"{stats.MIN_RUNS_FOR_CI} seeds); a run that never got there counts as the worst, null where infinite"
)


def distribution(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method, the IQM of each :data:`IQM_COLUMNS` column over its seeds and the 95% interval
    (:func:`stats.iqm_ci`), as ``{"iqm": x, "ci": [low, high]}``; None for an infinite number or no interval."""

    def finite(v: float) -> float | None:
        return v if math.isfinite(v) else None

    out: dict[str, Any] = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = [r for r in runs if r["method"] == method]
        out[method] = {"seeds": len(mine)}
        for name, (get, worst) in IQM_COLUMNS.items():
            point, ci = stats.iqm_ci([worst if (v := get(r)) is None else v for r in mine])
            out[method][name] = {"iqm": finite(point), "ci": None if ci is None else [finite(b) for b in ci]}
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per method over its seeds, and the worst seed's landed share."""
    summary = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = [r for r in runs if r["method"] == method]

        def field(get: Callable[[dict], Any], rows: list[dict] = mine) -> float | None:
            return median([get(r) for r in rows])

        def saved(key: str) -> Callable[[dict], Any]:
            return lambda row: row["eval_saved"] and row["eval_saved"][key]

        landed = [r["eval_saved"]["landed_share"] for r in mine if r["eval_saved"]]
        summary[method] = {
            "seeds": len(mine),
            "solved": sum(r["solved_episode"] is not None for r in mine),
            "worst_solved_episode": None
            if any(r["solved_episode"] is None for r in mine)
            else max(r["solved_episode"] for r in mine),
            "median_solved_episode": field(lambda r: r["solved_episode"]),
            "median_solved_steps": field(lambda r: r["solved_steps"]),
            "median_solved_seconds": field(lambda r: r["solved_seconds"]),
            "median_eval_score_at_steps": field(lambda r: r["eval_at_steps"] and r["eval_at_steps"]["mean_score"]),
            "median_saved_episode": field(lambda r: r["saved_episode"]),
            "median_saved_seconds": field(lambda r: r["saved_seconds"]),
            "median_saved_score": field(saved("mean_score")),
            "median_saved_landed_share": field(saved("landed_share")),
            "worst_saved_landed_share": min(landed) if len(landed) == len(mine) else None,
            "median_saved_on_pad_share": field(saved("on_pad_share")),
            "median_saved_mean_length": field(saved("mean_length")),
        }
    return summary


def print_table(results: dict[str, Any]) -> None:
    """Per-seed rows and the medians, as a Markdown table."""
    fmt = common.fmt
    steps = results["eval_steps"]
    print(f"\nLunarLander-v3, seeds {results['seeds']}, {results['machine']}")
    print(f"greedy evaluations: 100 episodes from environment seed {EVAL_SEED:,} (unseen)")
    if results.get("together"):
        print("trained together (main.py --seeds): seconds are the clock of the method's whole batch of seeds")
    print(
        f"\n| method | seed | episodes to avg 200 | seconds to avg 200 | greedy score at {steps:,} steps "
        "| saved at episode | saved agent: score | landed | on pad | mean length |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        at, kept = r["eval_at_steps"] or {}, r["eval_saved"] or {}
        print(
            f"| {r['method']} | {r['seed']} | {fmt(r['solved_episode'], 'd')} | {fmt(r['solved_seconds'], '.0f')} "
            f"| {fmt(at.get('mean_score'), '.1f')} | {fmt(r['saved_episode'], 'd')} "
            f"| {fmt(kept.get('mean_score'), '.1f')} | {fmt(kept.get('landed_share'), '.0%')} "
            f"| {fmt(kept.get('on_pad_share'), '.0%')} | {fmt(kept.get('mean_length'), '.0f')} |"
        )
    for method, s in results["summary"].items():
        print(
            f"| **{method}** | median of {s['seeds']} ({s['solved']} reached 200) "
            f"| {fmt(s['median_solved_episode'], '.0f')} | {fmt(s['median_solved_seconds'], '.0f')} "
            f"| {fmt(s['median_eval_score_at_steps'], '.1f')} | {fmt(s['median_saved_episode'], '.0f')} "
            f"| {fmt(s['median_saved_score'], '.1f')} "
            f"| {fmt(s['median_saved_landed_share'], '.0%')} (worst {fmt(s['worst_saved_landed_share'], '.0%')}) "
            f"| {fmt(s['median_saved_on_pad_share'], '.0%')} | {fmt(s['median_saved_mean_length'], '.0f')} |"
        )
        print(_iqm_row(method, results["iqm"][method]))
    print(
        "\nIQM [95% CI]: the mean of the middle half of the seeds (scipy.stats.trim_mean(x, 0.25), as rliable), "
        "its 95% percentile bootstrap interval over the seeds; a run that never got there counts as worst (-)"
    )


def _iqm_row(method: str, d: dict[str, Any]) -> str:
    """The IQM row of a method: each median's column with its IQM [95% CI]."""

    def cell(name: str, spec: str) -> str:
        return stats.format_ci(d[name]["iqm"], d[name]["ci"], spec)

    if d["seeds"] >= stats.MIN_RUNS_FOR_CI:
        label = f"IQM [95% CI] of {d['seeds']}"
    else:
        label = f"IQM of {d['seeds']} (no CI: needs {stats.MIN_RUNS_FOR_CI}+ seeds)"
    columns = [("solved_episode", ".0f"), ("solved_seconds", ".0f"), ("eval_score_at_steps", ".1f")]
    columns += [("saved_episode", ".0f"), ("saved_score", ".1f"), ("saved_landed_share", ".0%")]
    columns += [("saved_on_pad_share", ".0%"), ("saved_mean_length", ".0f")]
    return f"| **{method}** | {label} | " + " | ".join(cell(name, spec) for name, spec in columns) + " |"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    # Every number checked here, before minutes of training: a bad one is one line, not a late traceback.
    parser = common.parser("compare.py", __doc__.splitlines()[0])
    seeds_help = "one run per method and seed"
    parser.add_argument("--seeds", type=seed_number, nargs="+", default=[0, 1, 2, 3, 4], help=seeds_help)
    parser.add_argument("--which", default="default,preset,sb3", help="comma-separated subset of " + ",".join(METHODS))
    steps_help = "score the greedy policy at these env steps"
    parser.add_argument("--eval-steps", type=positive_int, default=EVAL_STEPS, help=steps_help)
    parser.add_argument("--eval-episodes", type=positive_int, default=100, help="greedy evaluation episodes")
    parser.add_argument("--max-episodes", type=positive_int, default=2000, help="most episodes of this project's runs")
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="runs at once, one process each (2 on 2 cores halves the wait; "
        "seconds then count a shared machine, while episodes and scores stay the same)",
    )
    parser.add_argument(
        "--together",
        action="store_true",
        help="train each method's seeds together in one process, as main.py --seeds (not sb3): the same episodes and "
        "scores, in less time; seconds then count the whole batch",
    )
    parser.add_argument(
        "--join",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="print one table from the JSON lines of earlier runs (one method each, the same seeds); trains nothing",
    )
    args = parser.parse_args(argv)
    common.check_distinct(parser, "--seeds", args.seeds)
    if args.together and args.jobs > 1:
        parser.error("--together trains in one process: leave out --jobs")
    args.which = [w.strip() for w in args.which.split(",") if w.strip()]
    if unknown := set(args.which) - set(METHODS):
        parser.error(f"--which: unknown {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}")
    if not args.which:
        parser.error(f"--which: name at least one of {', '.join(METHODS)}")
    return args


def sb3_problem() -> str | None:
    """Why Stable-Baselines3 cannot run here, or None; checked before anything runs, not after minutes."""
    try:
        import stable_baselines3  # noqa: F401
    except ImportError as exc:  # not installed, or installed against another PyTorch
        return f"{exc}; install it with: pip install -r benchmarks/requirements.txt"
    return None


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every method on every seed; print the table and one JSON line; return the results.

    Without Stable-Baselines3 it compares the other methods and says so in one line first,
    or, when SB3 was the only one asked for, exits with that line.
    """
    args = parse_args(argv)
    if args.join:
        results = join(args.join)
        print_table(results)
        return results
    if "sb3" in args.which and (problem := sb3_problem()) is not None:
        args.which = [w for w in args.which if w != "sb3"]
        if not args.which:
            raise SystemExit(f"compare.py: error: cannot run sb3: {problem}")
        common.note(f"compare.py: warning: skipping sb3: {problem}")
    info = common.machine_line(common.machine_info())
    runs = []
    tasks = [(method, seed) for method in args.which for seed in args.seeds]
    if args.together:
        for method in args.which:
            if method == "sb3":  # its own library: one seed after the other
                runs += [_one_run(method, seed, args) for seed in args.seeds]
                continue
            common.note(f"{method}, seeds {' '.join(map(str, args.seeds))} together ...")
            for row in run_together(method, args, common.note):
                common.note("RUN " + json.dumps(row))
                runs.append(row)
    elif args.jobs == 1:
        for method, seed in tasks:
            runs.append(_one_run(method, seed, args))
    else:
        # Fresh interpreters (spawn): each imports main before NumPy, so BLAS keeps one thread.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            runs = list(pool.map(_one_run, *zip(*tasks, strict=True), [args] * len(tasks)))
    results = {
        "machine": info,
        "seeds": args.seeds,
        "together": args.together,  # seconds are then the clock of each method's whole batch
        "eval_steps": args.eval_steps,
        "preset": main.PRESETS["fast"],
        "sb3_hyperparameters": SB3_ZOO,
        "runs": runs,
        "summary": summarize(runs),
        "iqm": distribution(runs),
        "iqm_about": IQM_ABOUT,
    }
    print_table(results)
    print(json.dumps(results))
    return results


def join(paths: list[Path]) -> dict[str, Any]:
    """One table from the JSON lines of several runs of this script on the same seeds (``--join``), no training.

    Each file's last line is the results object a run printed; their methods must differ.
    """
    parts = []
    for path in paths:
        try:
            part = json.loads(path.read_text().strip().splitlines()[-1])
            if not isinstance(part, dict) or not {"seeds", "eval_steps", "runs", "machine"} <= part.keys():
                raise ValueError("no seeds, eval_steps, runs and machine in it")
        except (OSError, IndexError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            raise SystemExit(f"compare.py: error: --join {path}: not a results line of compare.py ({exc})") from None
        parts.append(part)
    if len({(tuple(p["seeds"]), p["eval_steps"]) for p in parts}) > 1:
        raise SystemExit("compare.py: error: --join: the files are of other seeds or --eval-steps")
    runs = [r for p in parts for r in p["runs"]]
    if len({(r["method"], r["seed"]) for r in runs}) < len(runs):
        raise SystemExit("compare.py: error: --join: two files hold the same method and seed")
    runs.sort(key=lambda r: (METHODS.index(r["method"]), parts[0]["seeds"].index(r["seed"])))
    machine = "; ".join(p["machine"] for p in parts)
    iqm = {"iqm": distribution(runs), "iqm_about": IQM_ABOUT}
    return {**parts[0], "machine": machine, "runs": runs, "summary": summarize(runs), **iqm}


def _one_run(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One method on one seed; its row is printed (to stderr) as soon as it ends, so a stopped benchmark keeps it."""

    common.note(f"{method}, seed {seed} ...")
    row = run_sb3(seed, args, common.note) if method == "sb3" else run_project(method, seed, args, common.note)
    common.note("RUN " + json.dumps(row))
    return row


if __name__ == "__main__":
    run()
