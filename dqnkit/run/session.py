"""The hooks of a training run, each in the module of its concern, put together in the order they run."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from dqnkit.report.evaluation import PeriodicEvaluation
from dqnkit.report.filming import PeriodicVideos
from dqnkit.report.logs import ConsoleLog, MetricsLog
from dqnkit.report.progress import ProgressTable
from dqnkit.run.checkpoints import SolvedCheckpoint, TrainingState
from dqnkit.run.folder import RunFolder
from dqnkit.run.hooks import Hook, StopOnSignal

if TYPE_CHECKING:
    import gymnasium as gym

    from agent import Agent


def run_hooks(cfg: Any, run: RunFolder, agent: Agent, env: gym.Env) -> list[Hook]:
    """The run's own hooks for ``cfg``, in the order they see each episode (and in reverse at the end)."""
    hooks: list[Hook] = [StopOnSignal(run)]  # Ctrl-C: stop after the episode
    if run.done_before:  # a resumed run with nothing left to play: nothing to log, film or save
        return hooks
    network, rows, paths, out, elapsed = agent.local_qnetwork, run.history.rows, run.paths, run.out, run.elapsed
    if cfg.video:
        hooks.append(ProgressTable(paths.dir, paths.videos, out))  # after the videos are done (the end is in reverse)
        hooks.append(PeriodicVideos(network, cfg.env, cfg.max_steps, cfg.video_every, cfg.seed, paths.videos, out))
    if cfg.eval_every:  # before the metrics and the solved rule, which read its result from the record
        # A resumed run keeps the best of its earlier evaluations.
        best = max((float(r["eval_score"]) for r in rows if r.get("eval_score", "") != ""), default=-math.inf)
        setting = (cfg.env, cfg.max_steps, cfg.eval_every, cfg.eval_episodes)
        hooks.append(PeriodicEvaluation(*setting, paths.best_weights, network, best, cfg.eval_from_average))
    tensorboard = paths.dir / "tensorboard" if cfg.tensorboard else None
    return [
        *hooks,
        MetricsLog(paths.metrics, rows, env, agent, elapsed, out, cfg.target_score, tensorboard),
        ConsoleLog(run.display, elapsed),
        SolvedCheckpoint(run, network, cfg),
        TrainingState(run, agent, env, cfg),  # after the solved checkpoint: it saves that the run solved
    ]
