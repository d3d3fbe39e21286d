"""The hooks of a training run: every service around ``main.train``'s episode loop, in the order they run.

Each service is a small hook in the module of its concern (:mod:`dqnkit.run.hooks` says how hooks
work); this module only puts together the ones a configuration asks for.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from dqnkit.report.evaluation import PeriodicEvaluation
from dqnkit.report.logs import MetricsLog, ProgressDisplay
from dqnkit.report.progress import ProgressTable
from dqnkit.report.videos import VIDEO_DIR, PeriodicVideos
from dqnkit.run.checkpoints import SolvedCheckpoint, TrainingState
from dqnkit.run.folder import BEST_WEIGHTS, RunFolder
from dqnkit.run.hooks import Hook, StopOnSignal

if TYPE_CHECKING:
    import gymnasium as gym

    from agent import Agent


def run_hooks(cfg: Any, run: RunFolder, agent: Agent, env: gym.Env) -> list[Hook]:
    """The run's own hooks for ``cfg``, in the order they see each episode.

    The order matters: the evaluation fills in the record before the metrics and the
    stopping rule read it, and the training state is saved after the solved checkpoint, so
    that it knows the run solved. At the end they finish in reverse: the training state and
    the last weights first, the learning curve, then the videos, which may take a while.
    """
    hooks: list[Hook] = [StopOnSignal(run)]  # Ctrl-C: stop after the episode
    if run.done_before:  # a resumed run with nothing left to play: nothing to log, film or save
        return hooks
    network, progress, out, elapsed = agent.local_qnetwork, run.progress, run.out, run.elapsed
    if cfg.video:
        folder = VIDEO_DIR / run.dir.name
        hooks.append(ProgressTable(run.dir, folder, out))  # after the videos are done (the end is in reverse)
        hooks.append(PeriodicVideos(network, cfg.env, cfg.max_steps, cfg.video_every, cfg.seed, folder, out))
    if cfg.eval_every:
        # A resumed run keeps the best of its earlier evaluations.
        evaluated = [float(r["eval_score"]) for r in progress["rows"] if r.get("eval_score", "") != ""]
        best_path = run.dir / BEST_WEIGHTS
        hooks.append(
            PeriodicEvaluation(
                cfg.env,
                cfg.max_steps,
                cfg.eval_every,
                cfg.eval_episodes,
                best_path,
                network,
                max(evaluated, default=-math.inf),
                cfg.eval_from_average,
            )
        )
    tensorboard = run.dir / "tensorboard" if cfg.tensorboard else None
    hooks += [
        MetricsLog(run.metrics_path, progress["rows"], env, agent, elapsed, out, cfg.target_score, tensorboard),
        ProgressDisplay(run.display, elapsed),
        SolvedCheckpoint(run, network, cfg),
        TrainingState(run, agent, env, cfg),
    ]
    return hooks
