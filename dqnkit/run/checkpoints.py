"""The two hooks that save a run: the checkpoint of a run that solves, and the resumable training state."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from dqnkit.errors import UserError
from dqnkit.report.evaluation import passes
from dqnkit.report.logs import write_metrics
from dqnkit.run.files import copy_file, save_torch, save_training_state
from dqnkit.run.folder import RunFolder
from dqnkit.run.hooks import Episode, Hook

if TYPE_CHECKING:
    import gymnasium as gym

    from agent import Agent
    from nnetwork import Network


def average_reached(episode: Episode, target_score: float) -> bool:
    """The original's rule: the average of the last 100 scores reaches the target; never before episode 100."""
    return episode.episode >= 100 and episode.average_100 >= target_score


class SolvedCheckpoint(Hook):
    """When the run solves (once), save the network to ``--checkpoint`` and, unless ``keep_training``, stop."""

    def __init__(self, run: RunFolder, network: Network, cfg: Any) -> None:
        self.run, self.network, self.cfg = run, network, cfg

    def on_episode(self, episode: Episode) -> None:
        history, paths, cfg, last = self.run.history, self.run.paths, self.cfg, episode.evaluation
        if history.solved_episode is not None:
            return
        if cfg.eval_target is None:  # the original's rule
            if not average_reached(episode, cfg.target_score):
                return
            rule = f"100-episode average {episode.average_100:.2f} >= {cfg.target_score:g}"
        elif last is not None and passes(last, cfg.eval_target, cfg.eval_landed):  # greedy episodes on unseen seeds
            landed = f"{last.outcomes.count('landed')} of {len(last.outcomes)} landed"
            rule = f"greedy evaluation mean {last.mean_score:.2f} >= {cfg.eval_target:g}, {landed}"
        else:
            return
        history.solved_episode, episode.solved = episode.episode, True
        save_torch(self.network.state_dict(), paths.solved_weights)  # first into the run's folder: nothing loses it
        if paths.checkpoint.is_file():  # another run's, kept by a copy: it stays whole if the save below fails
            copy_file(paths.checkpoint, paths.previous_checkpoint)
            self.run.out(f"the previous {paths.checkpoint} (another run's) is kept as {paths.previous_checkpoint}")
        try:
            copy_file(paths.solved_weights, paths.checkpoint)  # the only write to --checkpoint
        except UserError as exc:
            solved_at = f"the run solved at episode {episode.episode}"
            raise UserError(f"{solved_at}, but {exc}; its weights are in {paths.solved_weights}") from None
        self.run.out(
            f"solved: {rule} at episode {episode.episode} "
            f"({episode.total_steps} steps, {self.run.elapsed():.1f} s); weights saved to {paths.checkpoint}"
        )
        if not cfg.keep_training:
            self.stop = "solved"


class TrainingState(Hook):
    """The resumable training state, every ``--save-every`` episodes and where the run stops; then the last weights."""

    def __init__(self, run: RunFolder, agent: Agent, env: gym.Env, cfg: Any) -> None:
        self.run, self.agent, self.env, self.cfg = run, agent, env, cfg

    def on_episode(self, episode: Episode) -> None:
        history, e = self.run.history, episode
        # epsilon is the next episode's: a resumed run starts with it.
        history.episode, history.total_steps, history.epsilon = e.episode, e.total_steps, e.next_epsilon
        if e.episode % self.cfg.save_every == 0:
            self.save()

    def save(self) -> None:
        """Save the training state as of the last finished episode, unless the one on disk is already that."""
        history = self.run.history
        if self.run.saved_episode == history.episode:
            return
        history.seconds = self.run.elapsed()
        save_training_state(self.run.paths.state, self.agent, self.env, self.cfg, dataclasses.asdict(history))
        self.run.saved_episode = history.episode

    def on_end(self) -> None:
        self.save()  # where this run stops, so that --resume can go on from here
        save_torch(self.agent.local_qnetwork.state_dict(), self.run.paths.last_weights)

    def on_failure(self, error: BaseException, episode: Episode | None) -> None:
        try:
            # Between two episodes (a hook failed: a full disk) the agent stands at the last one's end: save that state.
            if episode is not None and not isinstance(error, KeyboardInterrupt):
                if self.run.history.episode != episode.episode:  # the error came before this hook saw it
                    self.on_episode(episode)
                write_metrics(self.run.paths.metrics, self.run.history.rows)  # the file agrees with the state
                self.save()
                self.run.rescued = True
            # Inside an episode, or after a second Ctrl-C: the weights as they are; the state stays at its last save.
            save_torch(self.agent.local_qnetwork.state_dict(), self.run.paths.last_weights)
        except UserError:  # the disk is full, say: the run's error says what happened, and what is kept
            pass
