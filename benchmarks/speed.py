"""Speed benchmark: the textbook default and the NumPy twin against a tutorial-style reference, in one run.

Every figure comes from one process, on the CPU, after a calibration (the time of one bare
environment step, which says how fast the machine is at the moment):

1. throughput: environment steps per second over a fixed workload of ``--steps`` steps (acting,
   storing and learning) for three agents, run in alternating rounds (reference, default, NumPy
   twin, reference, ...) ``--rounds`` times, every one pinned to one thread: the reference
   (:class:`ReferenceAgent`), the textbook default (``main.Config()``, :class:`agent.Agent`) and
   the NumPy twin (``main.Config(backprop="numpy")``, ``dqnkit.learn.twin.NumpyAgent``). Each is
   given against the reference as the ratio of the medians and as the median of the rounds' ratios;
2. peak memory of a replay memory filled to its capacity of 100,000 transitions (``tracemalloc``);
3. time to solve: ``python main.py --no-video --quiet --seed S`` and the same with ``--preset fast``,
   for every ``--seeds`` seed (skip with ``--no-solve``), the two alternated (default first on
   even-numbered seeds, preset first on odd ones), each after a calibration, so its time can
   also be given as a multiple of what the run's environment steps alone cost. Each run ends
   at its own rule: the default's when the training average reaches 200, the preset's when its
   greedy evaluation passes (``--eval-target``), a later and stricter point;
4. optionally (``--breakdown EPISODES``), where one training step's time goes on the default and
   on the NumPy twin: the environment, acting, sampling, learning, storing, and the rest of the loop.

Run from the repository root: ``python benchmarks/speed.py [--steps N] [--rounds R] [--seeds S ...]``;
``--no-throughput`` and ``--no-solve`` skip parts, ``--append FILE`` also appends the JSON line
to FILE (for example ``benchmarks/results/speed-<date>.jsonl``). The last line printed is one JSON
object holding every figure.
"""

from __future__ import annotations

import os

# One thread everywhere, before NumPy and PyTorch load: OpenBLAS reads this once, at import
# (main.py sets it too), and every agent below, the reference included, runs under the same pin.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# isort: off
import main  # noqa: E402
import agent  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from dqnkit.learn import agent_class  # noqa: E402
from dqnkit.cli import seed_number  # noqa: E402
from dqnkit.errors import UserError  # noqa: E402
from dqnkit.run.files import check_file_path  # noqa: E402
from dqnkit.report.logs import read_metrics  # noqa: E402
from nnetwork import Network  # noqa: E402
# isort: on

ENV_ID = "LunarLander-v3"
STATE_SIZE = 8
ACTION_SIZE = 4
CAPACITY = 100_000
CFG = main.Config()  # the original hyperparameters, shared by every agent here
THREADS = 1  # torch.set_num_threads for every agent timed in this process
WARMUP_STEPS = 500  # untimed steps per agent before the throughput rounds (learning starts after 100)
AGENTS = ("reference", "default", "numpy")  # the throughput sides, in the order of a round
SOLVE_RUNS = {"default": [], "preset": ["--preset", "fast"]}  # main.py's extra flags for each solve side


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


# ---------------------------------------------------------------- the agents


def build_config_agent(cfg: main.Config, seed: int) -> agent.Agent:
    """The agent ``cfg`` describes, seeded and built by the same calls as ``main.train`` (on the CPU)."""
    rng = main.seed_everything(seed)
    env = main.make_env(ENV_ID, cfg.max_steps)
    try:
        return main.build_agent(cfg, env, torch.device("cpu"), rng)
    finally:
        env.close()


def build_default_agent(seed: int) -> agent.Agent:
    """The textbook default, ``python main.py``'s agent: :class:`agent.Agent` (``--backprop autograd``)."""
    return build_config_agent(main.Config(), seed)


def build_numpy_agent(seed: int) -> agent.Agent:
    """The NumPy twin, ``python main.py --backprop numpy``'s agent (``dqnkit.learn.twin.NumpyAgent``)."""
    return build_config_agent(main.Config(backprop="numpy"), seed)


def build_reference_agent(seed: int) -> ReferenceAgent:
    """The reference agent, after the same ``main.seed_everything``."""
    main.seed_everything(seed)
    return ReferenceAgent(STATE_SIZE, ACTION_SIZE)


BUILDERS: dict[str, Callable[[int], Any]] = {
    "reference": build_reference_agent,
    "default": build_default_agent,
    "numpy": build_numpy_agent,
}


# ---------------------------------------------------------------- throughput


def run_workload(build_agent: Callable[[int], Any], steps: int, seed: int) -> tuple[float, float]:
    """Run a fresh agent for exactly ``steps`` environment steps on one thread.

    Returns steps per second of wall-clock time and steps per second of this process's CPU
    time: the second hardly moves when other processes share the machine (it leaves out the
    time the process waited for a core), the first is what a user waits. Same loop as
    ``main.train``: epsilon starts at 1.0 and decays per episode, the environment is seeded on
    its first reset, and *terminated* is stored as done. Building the environment and the
    agent is not timed.
    """
    torch.set_num_threads(THREADS)
    env = main.make_env(ENV_ID, CFG.max_steps)
    dqn = build_agent(seed)
    env.action_space.seed(seed)
    epsilon = CFG.epsilon_start
    done_steps = 0
    gc.collect()
    start, start_cpu = time.perf_counter(), time.process_time()
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
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    finally:
        env.close()
    return steps / seconds, steps / cpu_seconds


def throughput(
    steps: int, rounds: int, seed: int, run: Callable[..., tuple[float, float]] = run_workload
) -> dict[str, Any]:
    """Run every agent of :data:`AGENTS` once per round, in turn; return every round, the medians and the ratios.

    The wall-clock figures are the headline (``rounds``, ``medians``, ``vs_reference``); the
    same summary of CPU-time figures is under ``cpu``. First every agent runs a short untimed
    warm-up: the first optimizer step in a process pays one-off imports and set-up (about a
    second), which would otherwise fall on whichever agent runs first.
    """
    for name in AGENTS:
        run(BUILDERS[name], min(steps, WARMUP_STEPS), seed)
    wall: list[dict[str, float]] = []
    cpu: list[dict[str, float]] = []
    for i in range(1, rounds + 1):
        figures = {name: run(BUILDERS[name], steps, seed) for name in AGENTS}
        wall.append({name: rate for name, (rate, _) in figures.items()})
        cpu.append({name: rate for name, (_, rate) in figures.items()})
        line = ", ".join(f"{name} {value:,.0f}" for name, value in wall[-1].items())
        print(f"  round {i}/{rounds} (steps/s): {line}", file=sys.stderr)
    return {
        "steps": steps,
        "seed": seed,
        "threads": THREADS,
        "rounds": wall,
        **summarize_rounds(wall),
        "cpu": {"rounds": cpu, **summarize_rounds(cpu)},
    }


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


def solve_command(seed: int, flags: list[str], checkpoint: Path) -> list[str]:
    """``python main.py --no-video --quiet --seed S [flags]``, its weights saved to ``checkpoint``."""
    run_flags = ["--no-video", "--quiet", "--seed", str(seed), *flags, "--checkpoint", str(checkpoint)]
    return [sys.executable, str(REPO / "main.py"), *run_flags]


def solve_once(seed: int, flags: list[str] | None = None) -> dict[str, Any]:
    """Run :func:`solve_command` in a temporary folder; return its wall time and the CSV figures.

    A bare-environment calibration (:func:`env_step_us`) runs just before, so the run's time
    can also be given as a multiple of what its environment steps alone cost at that moment.
    """
    flags = flags or []
    calibration = env_step_us(seed=seed)["median_us"]
    with tempfile.TemporaryDirectory(prefix="dqn-solve-") as tmp:
        cwd = Path(tmp)
        cmd = solve_command(seed, flags, cwd / "ckpt.pth")
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[1:])} exited with {proc.returncode}: {proc.stderr.strip()[-500:]}")
        solved = any(line.startswith("solved:") for line in proc.stdout.splitlines())
        figures = read_solve_metrics(metrics_path_from_output(proc.stdout, cwd), solved)
    ratio = times_env_alone(wall, figures["steps_run"], calibration)
    timing = {"wall_seconds": wall, "env_step_us": calibration, "times_env_alone": ratio}
    return {"seed": seed, "flags": flags, **timing, **figures}


def solve_order(seeds: list[int]) -> list[tuple[str, int]]:
    """``(side, seed)`` in the order they run: both sides per seed, the first side alternating (ABBA...)."""
    sides = list(SOLVE_RUNS)
    return [(side, seed) for i, seed in enumerate(seeds) for side in (sides if i % 2 == 0 else sides[::-1])]


def time_to_solve(seeds: list[int], solve: Callable[..., dict[str, Any]] = solve_once) -> dict[str, Any]:
    """Solve once per seed and side (:data:`SOLVE_RUNS`), alternated; medians are over the runs that solved."""
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SOLVE_RUNS}
    for side, seed in solve_order(seeds):
        print(f"  solving: {side}, seed {seed} ...", file=sys.stderr)
        runs[side].append(solve(seed, SOLVE_RUNS[side]))
    for side_runs in runs.values():
        side_runs.sort(key=lambda r: seeds.index(r["seed"]))
    sides = {side: {"runs": side_runs, **solve_medians(side_runs)} for side, side_runs in runs.items()}
    default, preset = sides["default"]["median_wall_seconds"], sides["preset"]["median_wall_seconds"]
    per_seed = [
        p["wall_seconds"] / d["wall_seconds"]
        for d, p in zip(runs["default"], runs["preset"], strict=True)
        if d["solved"] and p["solved"]
    ]
    return {
        "seeds": seeds,
        **sides,
        "preset_over_default_wall": preset / default if default and preset else None,
        "preset_over_default_wall_per_seed": per_seed,
    }


def solve_medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs that solved: wall seconds, episodes, steps and times the environment alone."""
    solved = [r for r in runs if r["solved"]]

    def median(key: str) -> float | None:
        return statistics.median(r[key] for r in solved) if solved else None

    return {
        "solved_runs": len(solved),
        "median_wall_seconds": median("wall_seconds"),
        "median_episodes": median("solved_episode"),
        "median_steps": median("solved_steps"),
        "median_times_env_alone": median("times_env_alone"),
    }


# ---------------------------------------------------------------- where one step's time goes


class PartTimers:
    """Wrap methods with ``perf_counter`` timers that add up seconds per part; :meth:`restore` undoes it all.

    A method that ``owner`` inherits is wrapped on ``owner`` itself and deleted again on restore,
    so the class hierarchy is left exactly as it was.
    """

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, part: str) -> None:
        """Time every call of ``owner.name`` as ``part``."""
        inner = getattr(owner, name)
        own = vars(owner).get(name, _INHERITED)
        self._undo.append((owner, name, own))
        spent = self.spent

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[part] = spent.get(part, 0.0) + time.perf_counter() - start

        setattr(owner, name, wrapper)

    def restore(self) -> None:
        """Put every wrapped method back (or remove it where it was inherited), last wrapped first."""
        for owner, name, own in reversed(self._undo):
            if own is _INHERITED:
                delattr(owner, name)
            else:
                setattr(owner, name, own)
        self._undo.clear()


_INHERITED = object()  # marks a method that was not in the owner's own __dict__


def breakdown(episodes: int, seed: int, backprop: str = "autograd") -> dict[str, Any]:
    """Train ``main.Config(backprop=backprop)`` for ``episodes`` episodes in this process, timing each part of a step.

    Wraps ``env.step``, ``env.reset``, the agent class's ``act`` and ``learn``, and
    ``ReplayMemory.sample_arrays`` (drawing and gathering a minibatch) and ``push``, with
    ``perf_counter`` timers (each adds about 1 µs per call); returns seconds per part, the steps,
    and the loop's total. The rest is the episode loop itself.
    """
    cfg = main.Config(
        seed=seed, episodes=episodes, video=False, quiet=True, target_score=float("inf"), backprop=backprop
    )
    cls = agent_class(cfg)
    timers = PartTimers()
    make_env = main.make_env

    def make_timed_env(*args: Any, **kwargs: Any) -> Any:
        env = make_env(*args, **kwargs)
        timers.wrap(env, "step", "environment step")
        timers.wrap(env, "reset", "environment reset")
        return env

    timers.wrap(cls, "act", "acting (epsilon-greedy)")
    timers.wrap(agent.ReplayMemory, "sample_arrays", "sampling a minibatch")
    timers.wrap(cls, "learn", "learning (gradient, Adam, target update)")
    timers.wrap(agent.ReplayMemory, "push", "storing the transition")
    timers.wrap(main, "play_episode", "episode loop")
    main.make_env = make_timed_env
    try:
        steps = _train_in_temporary_folder(cfg)
    finally:
        main.make_env = make_env
        timers.restore()
    spent = dict(timers.spent)
    loop = spent.pop("episode loop")
    parts = {**spent, "the rest of the episode loop": loop - sum(spent.values())}
    return {
        "backprop": backprop,
        "agent": cls.__name__,
        "episodes": episodes,
        "seed": seed,
        "steps": steps,
        "loop_seconds": loop,
        "seconds": parts,
    }


def _train_in_temporary_folder(cfg: main.Config) -> int:
    """``main.train(cfg)`` with a temporary folder as the working directory; return its environment steps."""
    with tempfile.TemporaryDirectory(prefix="dqn-breakdown-") as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            main.train(cfg, out=lambda _: None)
            return int(read_metrics(next(Path(tmp).glob("runs/*/metrics.csv")))["total_steps"][-1])
        finally:
            os.chdir(cwd)


# ---------------------------------------------------------------- report


def machine_info() -> dict[str, Any]:
    """Date (UTC), CPU and library versions, for the table and the JSON."""
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
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
        "torch_threads": THREADS,
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "commit": git_commit(),
    }


def git_commit() -> str | None:
    """The checked-out commit, with ``+changes`` when tracked files differ from it; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=REPO, capture_output=True).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+changes" if dirty else "")


def fmt(value: float | None, spec: str = ",.0f") -> str:
    """Format a number, or ``-`` for None."""
    return "-" if value is None else format(value, spec)


def print_report(results: dict[str, Any]) -> None:
    """Print the human-readable table of every figure."""
    info = results["machine"]
    print(f"DQN speed benchmark, {info['date']} (UTC), commit {info['commit']}")
    print(f"  CPU {info['cpu_model'] or 'unknown'}, nproc {info['nproc']}, os.cpu_count {info['cpu_count']}")
    print(
        f"  Python {info['python']}, torch {info['torch']}, numpy {info['numpy']}, gymnasium {info['gymnasium']}, "
        f"torch threads {info['torch_threads']}, OPENBLAS_NUM_THREADS {info['openblas_threads']}"
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
        print_throughput(tp)
    print_memory(results["memory"])
    for split in results.get("breakdown") or []:
        print_breakdown(split)
    if results.get("solve") is None:
        print("\nTime to solve: skipped (--no-solve)")
    else:
        print_solve(results["solve"])


def print_throughput(tp: dict[str, Any]) -> None:
    """The rounds, the medians, and each agent against the reference."""
    names = list(tp["medians"])
    print(
        f"\nThroughput: {tp['steps']:,} steps of {ENV_ID} per agent, seed {tp['seed']}, {len(tp['rounds'])} "
        f"alternating rounds, {tp['threads']} thread each (steps/s)"
    )
    print("  " + f"{'round':<8}" + "".join(f"{name:>12}" for name in names))
    for i, r in enumerate(tp["rounds"], 1):
        print("  " + f"{i:<8}" + "".join(f"{r[name]:>12,.0f}" for name in names))
    print("  " + f"{'median':<8}" + "".join(f"{tp['medians'][name]:>12,.0f}" for name in names))
    for name, ratio in tp["vs_reference"].items():
        print(
            f"  {name} against the reference: {ratio['ratio_of_medians']:.2f}x (ratio of medians), "
            f"{ratio['median_of_ratios']:.2f}x (median of the rounds' ratios)"
        )
    cpu = tp["cpu"]
    medians = ", ".join(f"{name} {value:,.0f}" for name, value in cpu["medians"].items())
    ratios = ", ".join(
        f"{name} {r['ratio_of_medians']:.2f}x / {r['median_of_ratios']:.2f}x" for name, r in cpu["vs_reference"].items()
    )
    print(f"  per second of CPU time instead (medians): {medians}; against the reference {ratios}")


def print_memory(mem: dict[str, Any]) -> None:
    """Peak MB of the two replay memories."""
    print(f"\nReplay memory peak, {mem['capacity']:,} transitions (tracemalloc)")
    print(f"  project   {mem['project_mb']:8.1f} MB")
    print(f"  reference {mem['reference_mb']:8.1f} MB")


def print_breakdown(split: dict[str, Any]) -> None:
    """Microseconds per step of each part of one path's training step."""
    print(
        f"\nWhere a step's time goes: --backprop {split['backprop']} ({split['agent']}), seed {split['seed']}, "
        f"{split['episodes']} episodes, {split['steps']:,} steps, "
        f"{split['loop_seconds'] / split['steps'] * 1e6:.0f} µs per step"
    )
    for part, seconds in split["seconds"].items():
        print(f"  {part:<48}{seconds / split['steps'] * 1e6:>7.1f} µs per step")


def print_solve(solve: dict[str, Any]) -> None:
    """Per seed and side: wall seconds, episodes, steps; the medians and the preset against the default."""
    print("\nTime to solve: python main.py --no-video --quiet [--preset fast]")
    print("  (the default: until the 100-episode average reaches 200; the preset: until its greedy evaluation passes)")
    print("  (bare step: the calibration just before the run; x env: the wall time over the run's steps at it)")
    print(f"  {'side':<8}{'seed':<6}{'wall s':>10}{'episodes':>10}{'steps':>10}{'bare step':>12}{'x env':>8}")
    for side in SOLVE_RUNS:
        for r in solve[side]["runs"]:
            note = "" if r["solved"] else f"  not solved in {r['episodes_run']} episodes"
            episodes, steps = fmt(r["solved_episode"]), fmt(r["solved_steps"])
            print(
                f"  {side:<8}{r['seed']:<6}{r['wall_seconds']:>10.1f}{episodes:>10}{steps:>10}"
                f"{r['env_step_us']:>9.1f} µs{r['times_env_alone']:>8.2f}{note}"
            )
        s = solve[side]
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Throughput of the reference, the textbook default and the NumPy twin in alternating rounds; "
        "replay memory; time to solve of the default and of --preset fast.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=20_000, help="environment steps per agent and round")
    parser.add_argument(
        "--rounds", "--repeats", type=int, default=5, help="throughput rounds, each: reference, default, numpy"
    )
    seed_help = "seed of the throughput workload and the calibration"
    parser.add_argument("--seed", type=seed_number, default=0, help=seed_help)
    parser.add_argument(
        "--seeds",
        type=seed_number,
        nargs="+",
        default=[0, 1, 2],
        help="solve runs: main.py and main.py --preset fast per seed",
    )
    parser.add_argument("--no-solve", action="store_true", help="skip the time-to-solve runs")
    parser.add_argument("--no-throughput", action="store_true", help="skip the throughput comparison")
    parser.add_argument(
        "--breakdown",
        type=int,
        default=0,
        metavar="EPISODES",
        help="also time each part of a step, on the default and on the NumPy twin, over this many episodes",
    )
    parser.add_argument("--append", metavar="FILE", help="also append the JSON line to FILE")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.breakdown < 0:
        parser.error("--steps and --rounds must be at least 1, --breakdown at least 0")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}")
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
    results: dict[str, Any] = {"machine": machine_info(), "command": " ".join(["benchmarks/speed.py", *sys.argv[1:]])}
    print("bare environment steps ...", file=sys.stderr)
    results["env_step"] = env_step_us(seed=args.seed)
    if not args.no_throughput:
        print("throughput ...", file=sys.stderr)
    results["throughput"] = None if args.no_throughput else throughput(args.steps, args.rounds, args.seed)
    print("replay memory ...", file=sys.stderr)
    results["memory"] = memory_peaks()
    if args.breakdown:
        print("breakdown ...", file=sys.stderr)
    paths = ("autograd", "numpy") if args.breakdown else ()
    results["breakdown"] = [breakdown(args.breakdown, args.seed, path) for path in paths] or None
    results["solve"] = None if args.no_solve else time_to_solve(args.seeds)
    results["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print_report(results)
    line = json.dumps(results)
    print(line)
    if args.append:
        with open(args.append, "a") as fh:
            fh.write(line + "\n")
    return results


if __name__ == "__main__":
    run()
