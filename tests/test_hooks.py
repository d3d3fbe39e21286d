"""The episode loop's hooks: what they are handed, the order they run in, stopping, and closing on errors."""

from __future__ import annotations

import csv
import signal
from pathlib import Path

import pytest
from gymnasium.wrappers import TimeLimit
from stubs import Lander

import main
from dqnkit.run.files import load_training_state
from dqnkit.run.hooks import Episode, Hook, Hooks
from dqnkit.run.paths import LOCK_FILE, lock_run


def _stub_env(monkeypatch: pytest.MonkeyPatch, length: int) -> None:
    # As make_env builds it: a TimeLimit of max_steps around the environment.
    monkeypatch.setattr(main, "make_env", lambda env_id, max_steps: TimeLimit(Lander(length), max_steps))


def _cfg(tmp_path: Path, **changes) -> main.Config:
    base = dict(video=False, quiet=True, minibatch_size=4, replay_buffer_size=100, checkpoint=str(tmp_path / "c.pth"))
    return main.Config(**{**base, **changes})


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(
    ("length", "outcome"),
    [(5, "landed"), (3, "landed"), (9, "timed out")],
    ids=["at rest on the last allowed step", "at rest before it", "cut off by the time limit"],
)
def test_an_episode_is_logged_with_what_env_step_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, length: int, outcome: str
) -> None:
    """An episode that terminates on its last allowed step (5) landed; it did not time out."""
    _stub_env(monkeypatch, length)
    seen: list[Episode] = []

    class Keep(Hook):
        def on_episode(self, episode: Episode) -> None:
            seen.append(episode)

    result = main.train(_cfg(tmp_path, episodes=2, max_steps=5), out=lambda _: None, hooks=[Keep()], root=tmp_path)
    rows = _rows(result.run_dir)
    assert [r["outcome"] for r in rows] == [outcome, outcome]
    assert [r["on_pad"] for r in rows] == (["1", "1"] if outcome == "landed" else ["0", "0"])
    assert [(e.length, e.terminated, e.truncated) for e in seen] == [(min(length, 5), length <= 5, length >= 5)] * 2


def test_a_callers_hook_sees_each_episode_and_step_and_can_stop_the_run(tmp_path: Path) -> None:
    calls: list[str] = []

    class StopAtThree(Hook):
        def on_start(self, agent) -> None:
            self.steps, self.network = [], agent.local_qnetwork

        def on_step(self, total_steps: int) -> None:
            self.steps.append(total_steps)

        def on_episode(self, episode: Episode) -> None:
            calls.append(f"episode {episode.episode}")
            if episode.episode == 3:
                self.stop = "enough"

        def on_end(self) -> None:
            calls.append("end")

        def close(self, error: BaseException | None) -> None:
            calls.append(f"close {error}")

    hook, lines = StopAtThree(), []
    result = main.train(_cfg(tmp_path, episodes=10, max_steps=40), out=lines.append, hooks=[hook], root=tmp_path)
    assert lines[-1].startswith("stopped at episode 3 (enough); last weights saved to ")
    assert calls == ["episode 1", "episode 2", "episode 3", "end", "close None"]
    assert len(result.scores) == 3 and hook.steps == list(range(1, result.total_steps + 1))
    rows = _rows(result.run_dir)
    assert [float(r["score"]) for r in rows] == result.scores
    state = load_training_state(result.state_path, main.Config)  # the run's own hooks saved where it stopped
    assert state["progress"]["episode"] == 3 and state["progress"]["total_steps"] == result.total_steps
    assert result.solved_episode is None and result.stopped_by is None


def test_a_failing_hook_ends_the_run_and_every_hook_is_closed(tmp_path: Path) -> None:
    closed: list[str] = []
    before = signal.getsignal(signal.SIGINT)

    class Fails(Hook):
        def on_episode(self, episode: Episode) -> None:
            if episode.episode == 2:
                raise ValueError("a broken hook")

        def on_end(self) -> None:
            closed.append("on_end must not run after an error")

        def close(self, error: BaseException | None) -> None:
            closed.append(repr(error))

    with pytest.raises(ValueError, match="a broken hook"):
        main.train(_cfg(tmp_path, episodes=5, max_steps=30), out=lambda _: None, hooks=[Fails()], root=tmp_path)
    assert closed == ["ValueError('a broken hook')"]
    assert signal.getsignal(signal.SIGINT) is before  # Ctrl-C is the terminal's again
    (run_dir,) = tmp_path.glob("runs/*")
    lock = lock_run(run_dir / LOCK_FILE)  # released: another process may resume this run
    if lock is not None:  # None: no flock on this system
        lock.close()


def test_hooks_see_episodes_in_order_and_end_and_close_in_reverse() -> None:
    calls: list[str] = []

    class Named(Hook):
        def __init__(self, name: str) -> None:
            self.name = name

        def on_start(self, agent) -> None:
            calls.append(f"start {self.name} {agent}")

        def on_episode(self, episode: Episode) -> None:
            calls.append(f"episode {self.name}")

        def on_end(self) -> None:
            calls.append(f"end {self.name}")

        def close(self, error: BaseException | None) -> None:
            calls.append(f"close {self.name}")

    hooks = Hooks([Named("a"), Named("b")], agent="the agent")
    assert hooks.on_step is None  # nobody wants steps: the loop calls nothing per step
    with hooks:
        hooks.on_episode(Episode(1, 0.0, 1, True, False, 1.0, 0.9, 1, 0.0))
        assert hooks.stop is None
        hooks.hooks[1].stop = "b says so"
        assert hooks.stop == "b says so"
    assert calls == [
        "start a the agent",
        "start b the agent",
        "episode a",
        "episode b",
        "end b",
        "end a",
        "close b",
        "close a",
    ]
