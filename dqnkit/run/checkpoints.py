"""The two hooks that save a run: the checkpoint of a run that solves, and the resumable training state."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dqnkit.errors import UserError
from dqnkit.report.evaluation import passes
from dqnkit.report.logs import write_metrics
from dqnkit.run.files import copy_file, save_torch, save_training_state
from dqnkit.run.folder import PREVIOUS_CHECKPOINT, SOLVED_WEIGHTS, RunFolder
from dqnkit.run.hooks import Episode, Hook

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
    ``eval_target`` the greedy evaluation's (:func:`dqnkit.report.evaluation.passes`: that mean with
    ``eval_landed`` of its episodes at rest). A run solves once. The weights go first to the
    run's folder (``SOLVED_WEIGHTS``), so a checkpoint that cannot be written loses nothing;
    a checkpoint already there is another run's, and it is kept in the run's folder first.
    """

    def __init__(self, run: RunFolder, network: Network, cfg: Any) -> None:
        self.run, self.network, self.cfg = run, network, cfg
        self.checkpoint = Path(cfg.checkpoint)

    def solved(self, episode: Episode) -> bool:
        """Whether ``episode`` passes the run's rule."""
        if self.cfg.eval_target is None:
            return average_reached(episode, self.cfg.target_score)
        evaluation = episode.evaluation  # beyond the original: the greedy evaluation on unseen seeds
        return evaluation is not None and passes(evaluation, self.cfg.eval_target, self.cfg.eval_landed)

    def on_episode(self, episode: Episode) -> None:
        if self.run.progress["solved_episode"] is not None or not self.solved(episode):
            return
        self.run.progress["solved_episode"], episode.solved = episode.episode, True
        if self.cfg.eval_target is None:
            rule = f"100-episode average {episode.average_100:.2f} >= {self.cfg.target_score:g}"
        else:
            last = episode.evaluation
            rule = (
                f"greedy evaluation mean {last.mean_score:.2f} >= {self.cfg.eval_target:g}, "
                f"{last.outcomes.count('landed')} of {len(last.outcomes)} landed"
            )
        kept = self.run.dir / SOLVED_WEIGHTS
        save_torch(self.network.state_dict(), kept)  # first into the run's folder: nothing can lose these
        if self.checkpoint.is_file():
            previous = self.run.dir / PREVIOUS_CHECKPOINT
            copy_file(self.checkpoint, previous)  # a copy: the checkpoint stays whole if the save below fails
            self.run.out(f"the previous {self.checkpoint} (another run's) is kept as {previous}")
        try:
            copy_file(kept, self.checkpoint)  # the only write to --checkpoint
        except UserError as exc:
            solved_at = f"the run solved at episode {episode.episode}"
            raise UserError(f"{solved_at}, but {exc}; its weights are in {kept}") from None
        self.run.out(
            f"solved: {rule} at episode {episode.episode} "
            f"({episode.total_steps} steps, {self.run.elapsed():.1f} s); weights saved to {self.checkpoint}"
        )
        if not self.cfg.keep_training:
            self.stop = "solved"


class TrainingState(Hook):
    """The resumable training state, every ``every`` episodes and where the run stops; then the last weights.

    It keeps the run's progress (:meth:`dqnkit.run.folder.RunFolder.open`) current after every
    episode, so that whatever stops the run finds it right. When an error ends the loop between
    two episodes (in a hook: a full disk, an unwritable checkpoint), the agent stands at the end
    of the last one, and the state of that episode is saved; in the middle of an episode, only
    the last weights are, and the state on disk stays at its last save.
    """

    def __init__(self, run: RunFolder, agent: Agent, env: gym.Env, cfg: Any) -> None:
        self.run, self.agent, self.env, self.cfg, self.every = run, agent, env, cfg, cfg.save_every

    def on_episode(self, episode: Episode) -> None:
        # epsilon is the next episode's: a resumed run starts with it.
        self.run.progress.update(episode=episode.episode, total_steps=episode.total_steps, epsilon=episode.next_epsilon)
        if episode.episode % self.every == 0:
            self.save()

    def save(self) -> None:
        """Save the training state as of the last finished episode, unless the one on disk is already that."""
        progress = self.run.progress
        if self.run.saved_episode == progress["episode"]:
            return
        progress["seconds"] = self.run.elapsed()
        save_training_state(self.run.state_path, self.agent, self.env, self.cfg, progress)
        self.run.saved_episode = progress["episode"]

    def on_end(self) -> None:
        self.save()  # where this run stops, so that --resume can go on from here
        save_torch(self.agent.local_qnetwork.state_dict(), self.run.last_weights)

    def on_failure(self, error: BaseException, episode: Episode | None) -> None:
        try:
            if episode is not None and not isinstance(error, KeyboardInterrupt):
                if self.run.progress["episode"] != episode.episode:  # the error came before this hook saw it
                    self.on_episode(episode)
                write_metrics(self.run.metrics_path, self.run.progress["rows"])  # the file agrees with the state
                self.save()
                self.run.rescued = True
            # After a second Ctrl-C too: the weights as they are; the state stays at its last save.
            save_torch(self.agent.local_qnetwork.state_dict(), self.run.last_weights)
        except UserError:  # the disk is full, say: the run's error says what happened, and what is kept
            pass
