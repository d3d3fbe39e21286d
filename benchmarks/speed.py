"""Speed benchmark: this project's DQN against a straightforward tutorial-style reference.

Three measurements, all on the CPU, after a calibration (the time of one bare environment
step, which says how fast the machine is at the moment):

1. throughput: environment steps per second over a fixed workload of ``--steps`` steps
   (acting, storing and learning), the two implementations alternated ``--repeats`` times;
2. peak memory of a replay memory filled to its capacity of 100,000 transitions (``tracemalloc``);
3. time to solve: ``python main.py --no-video`` run once per ``--seeds`` seed (skip with ``--no-solve``),
   also as a multiple of what the run's environment steps alone cost (a calibration just before each run).

4. optionally (``--breakdown EPISODES``), where one training step's time goes: the environment,
   acting, learning, storing, and the rest of the loop, timed inside a default run.

Run from the repository root: ``python benchmarks/speed.py [--steps N] [--repeats R] [--no-solve]``.
The last line printed is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# isort: off
import main  # noqa: E402  (first: it sets OPENBLAS_NUM_THREADS=1 before NumPy starts OpenBLAS)
import agent  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from nnetwork import Network  # noqa: E402
# isort: on

ENV_ID = "LunarLander-v3"
STATE_SIZE = 8
ACTION_SIZE = 4
CAPACITY = 100_000
CFG = main.Config()  # the original hyperparameters, shared by both implementations


# ---------------------------------------------------------------- reference implementation


class ReferenceReplayMemory:
    """Replay memory the way tutorials write it: a list of tuples, stacked on every sample."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.memory: list[tuple] = []

    def __len__(self) -> int:
        return len(self.memory)

    def push(self, event: tuple) -> None:
        """Append ``(state, action, reward, next_state, done)``; drop the oldest when over capacity."""
        self.memory.append(event)
        if len(self.memory) > self.capacity:
            del self.memory[0]

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """Return ``(states, next_states, actions, rewards, dones)`` tensors of a random minibatch."""
        experiences = random.sample(self.memory, k=batch_size)
        states = torch.from_numpy(np.vstack([e[0] for e in experiences])).float()
        actions = torch.from_numpy(np.vstack([e[1] for e in experiences])).long()
        rewards = torch.from_numpy(np.vstack([e[2] for e in experiences])).float()
        next_states = torch.from_numpy(np.vstack([e[3] for e in experiences])).float()
        dones = torch.from_numpy(np.vstack([e[4] for e in experiences]).astype(np.uint8)).float()
        return states, next_states, actions, rewards, dones


class ReferenceAgent:
    """Tutorial-style DQN agent with the same hyperparameters as ``main.Config``'s defaults."""

    def __init__(self, state_size: int, action_size: int) -> None:
        self.state_size = state_size
        self.action_size = action_size
        self.local_qnetwork = Network(state_size, action_size)
        self.target_qnetwork = Network(state_size, action_size)
        self.optimizer = torch.optim.Adam(self.local_qnetwork.parameters(), lr=CFG.learning_rate)
        self.memory = ReferenceReplayMemory(CFG.replay_buffer_size)
        self.t_step = 0

    def step(self, state: np.ndarray, action: int, reward: float, next_state: np.ndarray, done: bool) -> None:
        """Store one transition; every ``learn_every`` calls, learn from a random minibatch."""
        self.memory.push((state, action, reward, next_state, done))
        self.t_step = (self.t_step + 1) % CFG.learn_every
        if self.t_step == 0 and len(self.memory) > CFG.minibatch_size:
            experiences = self.memory.sample(CFG.minibatch_size)
            self.learn(experiences, CFG.discount_factor)

    def act(self, state: np.ndarray, epsilon: float = 0.0) -> int:
        """Epsilon-greedy action from a torch forward pass of one state."""
        state_t = torch.from_numpy(state).float().unsqueeze(0)
        self.local_qnetwork.eval()
        with torch.no_grad():
            action_values = self.local_qnetwork(state_t)
        self.local_qnetwork.train()
        if random.random() > epsilon:
            return np.argmax(action_values.cpu().data.numpy())
        return random.choice(np.arange(self.action_size))

    def learn(self, experiences: tuple[torch.Tensor, ...], discount_factor: float) -> None:
        """One Adam step on the MSE between ``Q_local(s, a)`` and ``r + gamma * max Q_target(s') * (1 - done)``."""
        states, next_states, actions, rewards, dones = experiences
        next_q_targets = self.target_qnetwork(next_states).detach().max(1)[0].unsqueeze(1)
        q_targets = rewards + discount_factor * next_q_targets * (1 - dones)
        q_expected = self.local_qnetwork(states).gather(1, actions)
        loss = F.mse_loss(q_expected, q_targets)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.soft_update(self.local_qnetwork, self.target_qnetwork, CFG.interpolation_parameter)

    @staticmethod
    def soft_update(local_model: torch.nn.Module, target_model: torch.nn.Module, tau: float) -> None:
        """``theta_target <- tau * theta_local + (1 - tau) * theta_target``, one parameter at a time."""
        for target_param, local_param in zip(target_model.parameters(), local_model.parameters(), strict=True):
            target_param.data.copy_(tau * local_param.data + (1.0 - tau) * target_param.data)


# ---------------------------------------------------------------- throughput


def build_project_agent(seed: int) -> agent.Agent:
    """The project's agent, seeded and built by the same calls as ``main.train`` (on the CPU)."""
    rng = main.seed_everything(seed)
    env = main.make_env(ENV_ID, CFG.max_steps)
    try:
        return main.build_agent(CFG, env, torch.device("cpu"), rng)
    finally:
        env.close()


def build_reference_agent(seed: int) -> ReferenceAgent:
    """The reference agent, after the same ``main.seed_everything``."""
    main.seed_everything(seed)
    return ReferenceAgent(STATE_SIZE, ACTION_SIZE)


def run_workload(build_agent: Callable[[int], Any], steps: int, seed: int) -> float:
    """Run a fresh agent for exactly ``steps`` environment steps; return steps per second.

    Same loop as ``main.train``: epsilon starts at 1.0 and decays per episode, the
    environment is seeded on its first reset, and *terminated* is stored as done.
    Building the environment and the agent is not timed.
    """
    torch.set_num_threads(1)
    env = main.make_env(ENV_ID, CFG.max_steps)
    dqn = build_agent(seed)
    env.action_space.seed(seed)
    epsilon = CFG.epsilon_start
    done_steps = 0
    gc.collect()
    start = time.perf_counter()
    try:
        state, _ = env.reset(seed=seed)
        while done_steps < steps:
            action = dqn.act(state, epsilon)
            next_state, reward, terminated, truncated, _ = env.step(action)
            dqn.step(state, action, reward, next_state, terminated)
            state = next_state
            done_steps += 1
            if terminated or truncated:
                epsilon = main.next_epsilon(epsilon, CFG.epsilon_end, CFG.epsilon_decay)
                state, _ = env.reset()
        seconds = time.perf_counter() - start
    finally:
        env.close()
    return steps / seconds


def throughput(steps: int, repeats: int, seed: int) -> dict[str, Any]:
    """Alternate project and reference runs ``repeats`` times; return every round and the medians."""
    rounds: list[dict[str, float]] = []
    for i in range(1, repeats + 1):
        project = run_workload(build_project_agent, steps, seed)
        reference = run_workload(build_reference_agent, steps, seed)
        rounds.append({"project": project, "reference": reference})
        print(
            f"  round {i}/{repeats}: project {project:,.0f} steps/s, reference {reference:,.0f} steps/s",
            file=sys.stderr,
        )
    project_median = statistics.median(r["project"] for r in rounds)
    reference_median = statistics.median(r["reference"] for r in rounds)
    return {
        "steps": steps,
        "repeats": repeats,
        "seed": seed,
        "rounds": rounds,
        "project_median": project_median,
        "reference_median": reference_median,
        "ratio": project_median / reference_median,
    }


# ---------------------------------------------------------------- the machine's own speed


def env_step_us(steps: int = 20_000, seed: int = 0, chunks: int = 5) -> dict[str, Any]:
    """Microseconds per bare ``LunarLander-v3`` step: random actions, no agent; the median of ``chunks``.

    Why: the environment is the same code everywhere, so its step time says how fast this
    machine is right now, and lets figures taken on different machines or hours be compared.
    Every chunk replays the same work (the same seeded reset and the same ``steps // chunks``
    actions), and only ``env.step`` is timed, not the resets, whose cost varies with the terrain.
    """
    env = main.make_env(ENV_ID, CFG.max_steps)
    per_chunk = max(1, steps // chunks)
    actions = [int(a) for a in np.random.default_rng(seed).integers(ACTION_SIZE, size=per_chunk)]
    clock = time.perf_counter
    values: list[float] = []
    try:
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
    finally:
        env.close()
    return {
        "steps": per_chunk * chunks,
        "chunk_steps": per_chunk,
        "median_us": statistics.median(values),
        "chunks_us": values,
    }


# ---------------------------------------------------------------- memory


def replay_peak_mb(make_memory: Callable[[], Any], transitions: int = CAPACITY, seed: int = 0) -> float:
    """Peak traced memory (MB) while creating a replay memory and pushing ``transitions`` into it.

    The transitions look like LunarLander's: float32 observations of 8 values, each
    one the next transition's state (as in the training loop), an int64 action, a
    float64 reward and a bool.
    """
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


def memory_peaks() -> dict[str, float]:
    """Peak MB of the project's and the reference replay memory, both filled to 100,000."""
    return {
        "capacity": CAPACITY,
        "project_mb": replay_peak_mb(lambda: agent.ReplayMemory(CAPACITY, STATE_SIZE)),
        "reference_mb": replay_peak_mb(lambda: ReferenceReplayMemory(CAPACITY)),
    }


# ---------------------------------------------------------------- time to solve


def metrics_path_from_output(stdout: str, cwd: Path) -> Path:
    """The metrics CSV named in ``main.py``'s first line (``... metrics: <path>``), resolved against ``cwd``."""
    first = stdout.splitlines()[0] if stdout else ""
    if "metrics: " not in first:
        raise ValueError(f"no 'metrics: <path>' in main.py's first line: {first!r}")
    return cwd / first.split("metrics: ", 1)[1].split(";", 1)[0].strip()


def read_solve_metrics(csv_path: str | os.PathLike, solved: bool) -> dict[str, Any]:
    """Episodes, environment steps and loop seconds of a run from its metrics CSV.

    When ``solved``, the last row is the solving episode; otherwise the figures say
    how far the run got and ``solved_episode`` / ``solved_steps`` are None.
    """
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{csv_path} holds no episodes")
    last = rows[-1]
    episode, total_steps = int(last["episode"]), int(last["total_steps"])
    return {
        "solved": solved,
        "episodes_run": episode,
        "steps_run": total_steps,
        "loop_seconds": float(last["wall_seconds"]),
        "solved_episode": episode if solved else None,
        "solved_steps": total_steps if solved else None,
        "final_average_100": float(last["average_100"]),
    }


def times_env_alone(wall_seconds: float, steps: int, env_step_us: float) -> float:
    """How many times longer a run took than its ``steps`` bare environment steps alone would.

    A figure that moves much less with the machine than seconds do: the environment is the
    same code everywhere, so a ratio near 1 would mean the agent costs nothing.
    """
    return wall_seconds / (steps * env_step_us * 1e-6)


def solve_once(seed: int) -> dict[str, Any]:
    """Run ``python main.py --no-video --seed S`` in a temporary folder; return wall time and the CSV figures.

    A bare-environment calibration (:func:`env_step_us`) runs just before, so the run's time
    can also be given as a multiple of what its environment steps alone cost at that moment.
    """
    calibration = env_step_us(seed=seed)["median_us"]
    with tempfile.TemporaryDirectory(prefix="dqn-solve-") as tmp:
        cwd = Path(tmp)
        cmd = [
            sys.executable,
            str(REPO / "main.py"),
            "--no-video",
            "--seed",
            str(seed),
            "--checkpoint",
            str(cwd / "ckpt.pth"),
        ]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"main.py --seed {seed} exited with {proc.returncode}: {proc.stderr.strip()[-500:]}")
        solved = any(line.startswith("solved:") for line in proc.stdout.splitlines())
        figures = read_solve_metrics(metrics_path_from_output(proc.stdout, cwd), solved)
    ratio = times_env_alone(wall, figures["steps_run"], calibration)
    return {"seed": seed, "wall_seconds": wall, "env_step_us": calibration, "times_env_alone": ratio, **figures}


def time_to_solve(seeds: list[int]) -> dict[str, Any]:
    """Solve once per seed; medians are over the runs that solved."""
    runs = []
    for seed in seeds:
        print(f"  solving with seed {seed} ...", file=sys.stderr)
        runs.append(solve_once(seed))
    solved = [r for r in runs if r["solved"]]

    def median(key: str) -> float | None:
        return statistics.median(r[key] for r in solved) if solved else None

    return {
        "runs": runs,
        "solved_runs": len(solved),
        "median_wall_seconds": median("wall_seconds"),
        "median_episodes": median("solved_episode"),
        "median_steps": median("solved_steps"),
        "median_times_env_alone": median("times_env_alone"),
    }


# ---------------------------------------------------------------- where one step's time goes


def breakdown(episodes: int, seed: int) -> dict[str, Any]:
    """Train the default run for ``episodes`` episodes in this process, timing each part of a step.

    Wraps ``env.step``, ``env.reset``, ``Agent.act``, ``ReplayMemory.sample_arrays`` (drawing and
    gathering a minibatch), ``Agent.learn`` and ``ReplayMemory.push`` with ``perf_counter`` timers
    (each adds about 1 µs per call) and returns seconds per part, the steps, and the loop's total.
    The rest is the episode loop itself.
    """
    spent: dict[str, float] = {}
    originals: list[tuple[Any, str, Any]] = []

    def timed(owner: Any, name: str, part: str) -> None:
        inner = getattr(owner, name)
        originals.append((owner, name, inner))

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[part] = spent.get(part, 0.0) + time.perf_counter() - start

        setattr(owner, name, wrapper)

    make_env = main.make_env

    def make_timed_env(*args: Any, **kwargs: Any) -> Any:
        env = make_env(*args, **kwargs)
        timed(env, "step", "environment step")
        timed(env, "reset", "environment reset")
        return env

    timed(agent.Agent, "act", "acting (epsilon-greedy)")
    timed(agent.ReplayMemory, "sample_arrays", "sampling a minibatch")
    timed(agent.Agent, "learn", "learning (gradient, Adam, soft update)")
    timed(agent.ReplayMemory, "push", "storing the transition")
    timed(main, "play_episode", "episode loop")
    main.make_env = make_timed_env
    cfg = main.Config(seed=seed, episodes=episodes, video=False, quiet=True, target_score=float("inf"))
    try:
        with tempfile.TemporaryDirectory(prefix="dqn-breakdown-") as tmp:
            cwd = os.getcwd()
            os.chdir(tmp)
            try:
                main.train(cfg, out=lambda _: None)
                steps = int(main.read_metrics(next(Path(tmp).glob("runs/*/metrics.csv")))["total_steps"][-1])
            finally:
                os.chdir(cwd)
    finally:
        main.make_env = make_env
        for owner, name, inner in reversed(originals):
            setattr(owner, name, inner)
    loop = spent.pop("episode loop")
    parts = {**spent, "the rest of the episode loop": loop - sum(spent.values())}
    return {"episodes": episodes, "seed": seed, "steps": steps, "loop_seconds": loop, "seconds": parts}


# ---------------------------------------------------------------- report


def machine_info() -> dict[str, Any]:
    """Date, CPU and library versions, for the table and the JSON."""
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import gymnasium

    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
        "torch_threads": 1,
    }


def fmt(value: float | None, spec: str = ",.0f") -> str:
    """Format a number, or ``-`` for None."""
    return "-" if value is None else format(value, spec)


def print_report(results: dict[str, Any]) -> None:
    """Print the human-readable table of every figure."""
    info = results["machine"]
    print(f"DQN speed benchmark, {info['date']}")
    print(f"  CPU {info['cpu_model'] or 'unknown'}, nproc {info['nproc']}, os.cpu_count {info['cpu_count']}")
    print(
        f"  Python {info['python']}, torch {info['torch']}, numpy {info['numpy']}, gymnasium {info['gymnasium']}, "
        "torch threads 1"
    )
    calibration = results["env_step"]
    chunks = ", ".join(f"{v:.1f}" for v in calibration["chunks_us"])
    print(
        f"  one bare {ENV_ID} step (the same {calibration['chunk_steps']:,} random-action steps, timed "
        f"{len(calibration['chunks_us'])} times): {calibration['median_us']:.1f} µs median ({chunks})"
    )

    tp = results["throughput"]
    if tp is None:
        print("\nThroughput: skipped (--no-throughput)")
    else:
        _print_throughput(tp)
    _print_rest(results)


def _print_throughput(tp: dict[str, Any]) -> None:
    print(f"\nThroughput: {tp['steps']:,} steps of {ENV_ID}, seed {tp['seed']}, {tp['repeats']} rounds (steps/s)")
    print(f"  {'round':<8}{'project':>12}{'reference':>12}{'ratio':>8}")
    for i, r in enumerate(tp["rounds"], 1):
        print(f"  {i:<8}{r['project']:>12,.0f}{r['reference']:>12,.0f}{r['project'] / r['reference']:>8.2f}")
    print(f"  {'median':<8}{tp['project_median']:>12,.0f}{tp['reference_median']:>12,.0f}{tp['ratio']:>8.2f}")


def _print_rest(results: dict[str, Any]) -> None:

    mem = results["memory"]
    print(f"\nReplay memory peak, {mem['capacity']:,} transitions (tracemalloc)")
    print(f"  project   {mem['project_mb']:8.1f} MB")
    print(f"  reference {mem['reference_mb']:8.1f} MB")

    split = results.get("breakdown")
    if split is not None:
        print(
            f"\nWhere a step's time goes: default run, seed {split['seed']}, {split['episodes']} episodes, "
            f"{split['steps']:,} steps, {split['loop_seconds'] / split['steps'] * 1e6:.0f} µs per step"
        )
        for part, seconds in split["seconds"].items():
            print(f"  {part:<48}{seconds / split['steps'] * 1e6:>7.1f} µs per step")

    solve = results.get("solve")
    if solve is None:
        print("\nTime to solve: skipped (--no-solve)")
        return
    print("\nTime to solve: python main.py --no-video (100-episode average >= 200)")
    print("  (bare step: the calibration just before the run; x env: the wall time over the run's steps at it)")
    print(f"  {'seed':<8}{'wall s':>10}{'episodes':>10}{'steps':>10}{'bare step':>12}{'x env':>8}")
    for r in solve["runs"]:
        note = "" if r["solved"] else f"  not solved in {r['episodes_run']} episodes"
        episodes, steps = fmt(r["solved_episode"]), fmt(r["solved_steps"])
        print(
            f"  {r['seed']:<8}{r['wall_seconds']:>10.1f}{episodes:>10}{steps:>10}"
            f"{r['env_step_us']:>9.1f} µs{r['times_env_alone']:>8.2f}{note}"
        )
    print(
        f"  {'median':<8}{fmt(solve['median_wall_seconds'], '.1f'):>10}{fmt(solve['median_episodes']):>10}"
        f"{fmt(solve['median_steps']):>10}{'':>12}{fmt(solve['median_times_env_alone'], '.2f'):>8}"
        f"  ({solve['solved_runs']}/{len(solve['runs'])} solved)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Compare the project's DQN with a tutorial-style reference: throughput, replay memory, solve time.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=40_000, help="environment steps per throughput run")
    parser.add_argument("--repeats", type=int, default=3, help="throughput rounds, each project then reference")
    parser.add_argument("--seed", type=int, default=0, help="seed of the throughput workload")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one solve run of main.py per seed")
    parser.add_argument("--no-solve", action="store_true", help="skip the time-to-solve runs")
    parser.add_argument("--no-throughput", action="store_true", help="skip the throughput comparison")
    parser.add_argument(
        "--breakdown",
        type=int,
        default=0,
        metavar="EPISODES",
        help="also time each part of a step over this many episodes",
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.breakdown < 0:
        parser.error("--steps and --repeats must be at least 1, --breakdown at least 0")
    return args


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every measurement, print the table and the JSON line; return the figures."""
    args = parse_args(argv)
    results: dict[str, Any] = {"machine": machine_info()}
    print("bare environment steps ...", file=sys.stderr)
    results["env_step"] = env_step_us(seed=args.seed)
    if not args.no_throughput:
        print("throughput ...", file=sys.stderr)
    results["throughput"] = None if args.no_throughput else throughput(args.steps, args.repeats, args.seed)
    print("replay memory ...", file=sys.stderr)
    results["memory"] = memory_peaks()
    if args.breakdown:
        print("breakdown ...", file=sys.stderr)
    results["breakdown"] = breakdown(args.breakdown, args.seed) if args.breakdown else None
    results["solve"] = None if args.no_solve else time_to_solve(args.seeds)
    print_report(results)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    run()
