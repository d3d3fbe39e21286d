"""The two hooks that save a run: the checkpoint of a run that solves, and the resumable training state."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dqnkit.evaluation import passes
from dqnkit.files import copy_file, save_torch, save_training_state
from dqnkit.hooks import Episode, Hook

if TYPE_CHECKING:
    import gymnasium as gym

    from agent import Agent
    from nnetwork import Network


def average_reached(episode: Episode, target_score: float) -> bool:
    """The original's rule: solved once the average of the last 100 scores reaches the target.

    Never before the 100th episode: a lucky first few cannot count as solved.
    """
    return episode.episode >= 100 and episode.average_100 >= target_score


class SolvedCheckpoint(Hook):
    """When the run solves, save the network to ``--checkpoint`` and, unless ``keep_training``, stop.

    The rule is the original's (:func:`average_reached` at ``target_score``), or with
    ``eval_target`` the greedy evaluation's (:func:`dqnkit.evaluation.passes`: that mean with
    ``eval_landed`` of its episodes at rest). A run solves once; a checkpoint already there is
    another run's, and it is kept in this run's folder (``previous``) first.
    """

    def __init__(
        self,
        network: Network,
        progress: dict[str, Any],
        cfg: Any,
        previous: Path,
        elapsed: Callable[[], float],
        out: Callable[[str], None],
    ) -> None:
        self.network, self.progress, self.cfg, self.previous = network, progress, cfg, previous
        self.checkpoint = Path(cfg.checkpoint)
        self.elapsed, self.out = elapsed, out

    def solved(self, episode: Episode) -> bool:
        """Whether ``episode`` passes the run's rule."""
        if self.cfg.eval_target is None:
            return average_reached(episode, self.cfg.target_score)
        evaluation = episode.evaluation  # beyond the original: the greedy evaluation on unseen seeds
        return evaluation is not None and passes(evaluation, self.cfg.eval_target, self.cfg.eval_landed)

    def on_episode(self, episode: Episode) -> None:
        if self.progress["solved_episode"] is not None or not self.solved(episode):
            return
        self.progress["solved_episode"], episode.solved = episode.episode, True
        if self.checkpoint.is_file():
            copy_file(self.checkpoint, self.previous)  # a copy: the checkpoint stays whole if the save below fails
            self.out(f"the previous {self.checkpoint} (another run's) is kept as {self.previous}")
        save_torch(self.network.state_dict(), self.checkpoint)  # the only write to --checkpoint
        if self.cfg.eval_target is None:
            rule = f"100-episode average {episode.average_100:.2f} >= {self.cfg.target_score:g}"
        else:
            last = episode.evaluation
            rule = (
                f"greedy evaluation mean {last.mean_score:.2f} >= {self.cfg.eval_target:g}, "
                f"{last.outcomes.count('landed')} of {len(last.outcomes)} landed"
            )
        self.out(
            f"solved: {rule} at episode {episode.episode} "
            f"({episode.total_steps} steps, {self.elapsed():.1f} s); weights saved to {self.checkpoint}"
        )
        if not self.cfg.keep_training:
            self.stop = "solved"


class TrainingState(Hook):
    """The resumable training state, every ``every`` episodes and where the run stops; then the last weights.

    ``progress`` is the run's (:meth:`dqnkit.runfolder.RunFolder.open`); this hook keeps its
    counters current after every episode, so whatever stops the run finds them right.
    """

    def __init__(
        self,
        path: Path,
        last_weights: Path,
        every: int,
        agent: Agent,
        env: gym.Env,
        cfg: Any,
        progress: dict[str, Any],
        elapsed: Callable[[], float],
        resumed: bool = False,
    ) -> None:
        self.path, self.last_weights, self.every = path, last_weights, every
        self.agent, self.env, self.cfg, self.progress, self.elapsed = agent, env, cfg, progress, elapsed
        self._saved_episode = progress["episode"] if resumed else None  # the episode of the state on disk

    def on_episode(self, episode: Episode) -> None:
        # epsilon is the next episode's: a resumed run starts with it.
        self.progress.update(episode=episode.episode, total_steps=episode.total_steps, epsilon=episode.next_epsilon)
        if episode.episode % self.every == 0:
            self.save()

    def save(self) -> None:
        """Save the training state as of the last finished episode, unless the one on disk is already that."""
        if self._saved_episode == self.progress["episode"]:
            return
        self.progress["seconds"] = self.elapsed()
        save_training_state(self.path, self.agent, self.env, self.cfg, self.progress)
        self._saved_episode = self.progress["episode"]

    def on_end(self) -> None:
        self.save()  # where this run stops, so that --resume can go on from here
        save_torch(self.agent.local_qnetwork.state_dict(), self.last_weights)
