"""Many seeds in one process (``python main.py --seeds 0 1 2 3``): N runs of ``main.train``, one thread each,
whose agents meet at one stacked act and learn (:class:`dqnkit.learn.batched.BatchedAgents`).

Why threads running ``main.train`` itself, and not a second episode loop: each seed keeps everything a plain
run has (its folder, hooks, videos, evaluations, checkpoint, training state, resume) because it *is* a plain
run; only its agent's ``act``, ``learn`` and ``end_episode`` are routed through :class:`Lockstep`. The threads
take turns (the GIL), so the arithmetic is what is shared, not the cores: every active seed's action comes from
one forward pass, every seed due to learn learns in one backward pass.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dqnkit.errors import UserError
from dqnkit.run import processes
from dqnkit.run.hooks import Hook


class Lockstep:
    """Where the N runs' agents meet: a round ends when every active seed asks for an action; the seeds due to
    learn then learn (each queued its minibatch in its own ``Agent.step``), and all of them get their actions."""

    def __init__(self, n: int) -> None:
        self.cond = threading.Condition()
        self.agents: dict[int, Any] = {}  # seed index -> its agent, once its run has built it
        self.ended: set[int] = set()  # runs that ended (or failed) before or after joining
        self.batch: Any = None  # the BatchedAgents, once every run has joined
        self.active: set[int] = set()
        self.waiting: dict[int, tuple[np.ndarray, float]] = {}
        self.actions: dict[int, int] = {}
        self.error: BaseException | None = None
        self.gates = [threading.Lock() for _ in range(n)]  # each closed: run i waits at gates[i] for its action
        for gate in self.gates:
            gate.acquire()

    def join(self, i: int, agent: Any) -> None:
        """Run i's agent is built (and restored): wait until every run's is, and the stack is made of them."""
        with self.cond:
            self.agents[i] = agent
            self.cond.notify_all()
            while self.batch is None and self.error is None:
                self.cond.wait()
            if self.error is not None:
                raise self.error

    def start(self, make_batch: Callable[[list[Any]], Any]) -> None:
        """Stack the agents that joined (in seed order) and let their runs go on."""
        with self.cond:
            try:
                order = sorted(self.agents)
                self.batch = make_batch([self.agents[i] for i in order])
                self.index = {i: j for j, i in enumerate(order)}  # run i is row index[i] of the stack
                self.active = set(order) - self.ended
            except BaseException as exc:
                self.error = exc
                raise
            finally:
                self.cond.notify_all()

    def act(self, i: int, state: np.ndarray, epsilon: float) -> int:
        """Seed i's action for ``state``: the last seed to ask plays the round, the others wait at their gates."""
        with self.cond:
            if self.error is not None:  # a round failed while this run was between episodes
                raise self.error
            self.waiting[i] = (state, epsilon)
            last = len(self.waiting) == len(self.active)
            if last:
                self._round(i)
        if not last:
            # A gate per seed, not the condition: opening it wakes this thread alone, not all N to recheck.
            self.gates[i].acquire()
        if self.error is not None:
            raise self.error
        return self.actions.pop(i)

    def _round(self, runner: int | None) -> None:
        """Learn, then act, for every waiting seed; open the gates of those waiting (``runner`` plays it)."""
        waiting = sorted(self.waiting)
        try:
            self.batch.learn()  # before acting: a plain agent learns inside step(), before its next act()
            states = np.stack([self.waiting[i][0] for i in waiting])
            rows = [self.index[i] for i in waiting]
            actions = self.batch.act(states, [self.waiting[i][1] for i in waiting], rows)
            self.actions.update(zip(waiting, actions.tolist(), strict=True))
        except BaseException as exc:  # every run stops with it: the stack is shared
            self.error = exc
            raise
        finally:
            self.waiting.clear()
            for i in waiting:
                if i != runner:
                    self.gates[i].release()

    def sync(self, i: int) -> None:
        """Give run i's agent what a plain agent would hold now: what it queued is learned (a plain agent learns
        inside ``step``), and the stack's weights and Adam state are written back into it. At each episode's end,
        so the run's hooks (evaluation, videos, checkpoints) see what a plain run's see, and whenever it is saved."""
        with self.cond:  # reentrant: a save inside a round's failure comes here from the same thread
            if self.error is None:  # after a failed round, the last good state: nothing more is learned
                self.batch.learn()
            self.batch.write_back(self.index[i])

    def leave(self, i: int) -> None:
        """Run i ended: the others' rounds no longer wait for it."""
        with self.cond:
            self.ended.add(i)
            self.active.discard(i)
            self.cond.notify_all()
            if self.waiting and len(self.waiting) == len(self.active) and self.error is None:
                self._round(None)


class LockstepMember(Hook):
    """The hook that puts run i into the lockstep: its agent's ``act``, ``end_episode`` and ``state_dict`` go
    through the stack (instance attributes over the class's methods; ``learn`` is routed by BatchedAgents)."""

    def __init__(self, lockstep: Lockstep, i: int) -> None:
        self.lockstep, self.i = lockstep, i

    def on_start(self, agent: Any) -> None:
        lockstep, i, cls = self.lockstep, self.i, type(agent)
        lockstep.join(i, agent)
        agent.act = lambda state, epsilon=0.0: lockstep.act(i, state, epsilon)
        agent.end_episode = lambda: (lockstep.sync(i), cls.end_episode(agent))[-1]
        # Whatever saves the agent (the training state, a failure's rescue, a benchmark's snapshot) saves the
        # stack's row as it stands after this step.
        agent.state_dict = lambda: (lockstep.sync(i), cls.state_dict(agent))[-1]

    def close(self, error: BaseException | None) -> None:
        self.lockstep.leave(self.i)


# The options whose learning step BatchedAgents does not reproduce, by the Config field that turns each on.
REFUSED_FIELDS = {
    "dueling": "--dueling",
    "prioritized_replay": "--prioritized-replay",
    "target_update_every": "--target-update-every (a hard target update)",
    "lr_decay_steps": "--lr-decay-steps",
}


def seeds_problem(cfg: Any, seeds: Sequence[int], given: Sequence[str] = ()) -> str | None:
    """Why ``--seeds`` cannot train ``seeds`` with ``cfg``, in one line, or None."""
    if len(set(seeds)) < len(seeds):
        twice = sorted({s for s in seeds if seeds.count(s) > 1})
        return f"--seeds names seed {', '.join(map(str, twice))} twice: each seed is a run of its own"
    if "seed" in given:
        return "--seed and --seeds cannot be used together: --seeds gives every run its seed"
    if used := [flag for name, flag in REFUSED_FIELDS.items() if getattr(cfg, name)]:
        return f"--seeds cannot train {', '.join(used)}: the stacked networks do not reproduce it; train one --seed"
    if cfg.gradient_steps != 1 or cfg.backprop != "autograd":
        return "--seeds trains with one gradient step a learning step and --backprop autograd"
    return None


def seed_checkpoint(checkpoint: str, seed: int) -> str:
    """Seed ``seed``'s ``--checkpoint`` in a batch: ``checkpoint.pth`` -> ``checkpoint-seed3.pth``."""
    path = Path(checkpoint)
    return str(path.with_name(f"{path.stem}-seed{seed}{path.suffix}"))


def seed_configs(cfg: Any, seeds: Sequence[int]) -> list[Any]:
    """One Config per seed of ``--seeds``: ``cfg`` with that seed and its own checkpoint path."""
    return [dataclasses.replace(cfg, seed=s, checkpoint=seed_checkpoint(cfg.checkpoint, s)) for s in seeds]


def memory_problem(cfgs: Sequence[Any], state_size: int, available: int | None = None) -> str | None:
    """Why the seeds' replay memories (preallocated, float32) and environments would not fit in memory, or None."""
    available = available if available is not None else available_memory()
    if available is None:
        return None
    # Per seed: the memory's arrays (state, next state, action, reward, done), 64 MiB for its environments
    # (100 of them for the evaluations) and torch's per-run allocations, and 400 MiB for its video worker (a
    # process of its own, with torch: 300-480 MB measured).
    need = sum(c.replay_buffer_size * (2 * state_size + 3) * 4 + (64 + 400 * c.video) * 2**20 for c in cfgs)
    if need > available:
        return (
            f"{len(cfgs)} seeds need about {need / 2**30:.1f} GiB (replay memories and environments), more than "
            f"the {available / 2**30:.1f} GiB available: give fewer seeds or a smaller --replay-buffer-size"
        )
    return None


def available_memory() -> int | None:
    """Bytes of memory available now (Linux's MemAvailable), or None where that is unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def train_together(
    train: Callable[..., Any],
    cfgs: Sequence[Any],
    resumes: Sequence[str | os.PathLike | None],
    make_batch: Callable[[list[Any]], Any],
    root: str | os.PathLike | None | list[str | os.PathLike] = None,
    out: Callable[[str], None] = print,
    hooks: Callable[[int], Sequence[Hook]] = lambda i: (),
    errors: bool = False,
) -> list[Any]:
    """Run ``train(cfgs[i], resume=resumes[i], ...)`` for every i at once, in lockstep; return their results.
    ``root``: of every run, or a list, one per run. A run that fails raises its error once all have ended, or
    with ``errors`` leaves it in its place among the results.

    The runs start one after the other, each once the previous one has built its agent: building draws the
    initial weights from torch's global stream, which ``main.seed_everything`` has just seeded for that seed.
    Stop signals reach every run (each stops after its episode and saves its state); a second one stops at once.
    """
    lockstep, n = Lockstep(len(cfgs)), len(cfgs)
    results: list[Any] = [None] * n
    failures: list[BaseException | None] = [None] * n

    def run(i: int) -> None:
        say = (lambda line: out(f"seed {cfgs[i].seed}: {line}")) if n > 1 else out
        try:
            member = [LockstepMember(lockstep, i), *hooks(i)]
            where = root[i] if isinstance(root, list) else root
            results[i] = train(cfgs[i], out=say, resume=resumes[i], hooks=member, root=where)
        except BaseException as exc:
            failures[i] = exc
        finally:
            with lockstep.cond:
                lockstep.ended.add(i)
                lockstep.cond.notify_all()

    before = processes.forward_stop_signals()
    try:
        threads = [threading.Thread(target=run, args=(i,), name=f"seed-{cfgs[i].seed}", daemon=True) for i in range(n)]
        for i, thread in enumerate(threads):
            thread.start()
            with lockstep.cond:  # its agent built (from the seed's torch stream) before the next run seeds
                lockstep.cond.wait_for(lambda i=i: i in lockstep.agents or i in lockstep.ended)
        try:
            if lockstep.agents:  # none when every run failed before building its agent
                lockstep.start(make_batch)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        finally:
            for thread in threads:
                thread.join()
    finally:
        processes.restore(before)
    if errors:
        return [result if error is None else error for result, error in zip(results, failures, strict=True)]
    if (first := next((i for i, e in enumerate(failures) if e is not None), None)) is not None:
        if isinstance(failures[first], UserError) and n > 1:  # which run it was, before what happened
            raise UserError(f"seed {cfgs[first].seed}: {failures[first]}") from failures[first]
        raise failures[first]
    return results


def train_seeds(
    train: Callable[..., Any],
    cfgs: Sequence[Any],
    resumes: Sequence[str | os.PathLike | None],
    root: str | os.PathLike | None = None,
    out: Callable[[str], None] = print,
) -> list[Any]:
    """``main.py --seeds`` (``cfgs`` one per seed, ``resumes`` all None) or ``--resume`` with several states:
    the runs trained together (:func:`train_together`); one line on bad input, before any run starts."""
    from dqnkit.envs import make_env
    from dqnkit.learn.batched import BatchedAgents

    with make_env(cfgs[0].env, cfgs[0].max_steps) as env:
        state_size = env.observation_space.shape[0]
    if problem := memory_problem(cfgs, state_size):
        raise UserError(problem)
    seeds = [c.seed for c in cfgs]
    if len(set(seeds)) < len(seeds):
        raise UserError(f"these runs share a seed ({', '.join(map(str, seeds))}): resume them one by one")
    for cfg in cfgs:
        if problem := seeds_problem(cfg, seeds):
            raise UserError(problem)
    results = train_together(train, cfgs, resumes, BatchedAgents, root, out)
    if states := [str(r.state_path) for r in results if r is not None and r.stopped_by is not None]:
        out(f"continue them together with: python main.py --resume {' '.join(states)}")
    return results
