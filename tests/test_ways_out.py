"""A run survives whatever ends it: signals, errors, unwritable paths, and inputs that cannot work."""

from __future__ import annotations

import csv
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import main
from dqnkit.errors import UserError
from dqnkit.report.evaluation import PeriodicEvaluation
from dqnkit.run.files import load_file, load_training_state
from dqnkit.run.hooks import Episode, Hook

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--max-steps", "80", "--minibatch-size", "16", "--replay-buffer-size", "3000", "--seed", "4"]


def _cfg(tmp_path: Path, **changes) -> main.Config:
    base = dict(max_steps=80, minibatch_size=16, replay_buffer_size=3000, seed=4, video=False, quiet=True)
    return main.Config(**{**base, "checkpoint": str(tmp_path / "checkpoint.pth"), **changes})


def _runs_in(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """``main.main`` trains with its files under ``root`` (``main.train``'s), not in the working folder."""
    monkeypatch.setattr(main, "train", functools.partial(main.train, root=root))


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _agree(run_dir: Path) -> int:
    """metrics.csv, the training state and last.pth tell of the same last complete episode; return it."""
    state = load_training_state(run_dir / "training_state.pth", main.Config)
    episode = state["progress"]["episode"]
    assert [int(r["episode"]) for r in _rows(run_dir)] == list(range(1, episode + 1))
    assert len(state["progress"]["rows"]) == episode and state["progress"]["total_steps"] == sum(
        int(r["length"]) for r in _rows(run_dir)
    )
    assert (run_dir / "last.pth").is_file() and load_file(run_dir / "last.pth")
    return episode


def _start(tmp_path: Path, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), *args],
        cwd=tmp_path,
        text=True,
        **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen},
    )


def _resume_goes_on(tmp_path: Path, run_dir: Path, episode: int) -> None:
    more = str(episode + 2)
    done = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--resume", str(run_dir / "training_state.pth"), "--episodes", more],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"resuming at episode {episode + 1} ")
    assert _agree(run_dir) == episode + 2


# ---------------------------------------------------------------- every way out saves


def test_a_hang_up_saves_like_ctrl_c(tmp_path: Path) -> None:
    """Closing the terminal (SIGHUP) finishes the episode, saves, and ends with 128 + SIGHUP."""
    proc = _start(tmp_path, "--episodes", "100000", "--save-every", "1000", "--no-video", *TINY)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("runs/*/metrics.csv")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # some episodes, none of them saved by --save-every
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGHUP, err
    assert err == "" and "stopped at episode" in out
    (run_dir,) = tmp_path.glob("runs/*")
    episode = _agree(run_dir)
    assert episode >= 1
    _resume_goes_on(tmp_path, run_dir, episode)


def test_sigterm_while_the_last_videos_finish_keeps_them_and_the_state(tmp_path: Path) -> None:
    args = ["--episodes", "4", "--video-every", "1", *TINY]
    proc = _start(tmp_path, *args)
    for line in proc.stdout:
        if line.startswith("finishing the video"):
            break
    else:
        pytest.fail("the run had no video left to finish at its end")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert err == "" and "Traceback" not in out, err  # no traceback, no leaked semaphore
    assert proc.returncode == 128 + signal.SIGTERM
    (run_dir,) = tmp_path.glob("runs/*")
    assert _agree(run_dir) == 4
    assert sorted(p.name for p in (tmp_path / "videos" / run_dir.name).glob("*.mp4"))[-1] == "episode_0004.mp4"
    assert (run_dir / "progress.md").is_file()  # the table of the finished videos
    _resume_goes_on(tmp_path, run_dir, 4)


class Breaks(Hook):
    """A hook that raises ``error`` after episode ``at`` (between episodes), or at step ``step`` (inside one)."""

    def __init__(self, error: BaseException, at: int | None = None, step: int | None = None) -> None:
        self.error, self.at, self.step = error, at, step

    def on_step(self, total_steps: int) -> None:
        if total_steps == self.step:
            raise self.error

    def on_episode(self, episode: Episode) -> None:
        if episode.episode == self.at:
            raise self.error


def test_an_error_between_episodes_saves_that_episode_and_resumes_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = main.train(_cfg(tmp_path, episodes=7), out=lambda _: None, root=tmp_path)
    lines: list[str] = []
    with pytest.raises(RuntimeError, match="a bug"):  # ours: the traceback is kept
        main.train(
            _cfg(tmp_path, episodes=7, save_every=100),
            out=lines.append,
            hooks=[Breaks(RuntimeError("a bug"), at=4)],
            root=tmp_path,
        )
    (run_dir,) = [p for p in tmp_path.glob("runs/*") if p.name != whole.run_dir.name]
    assert _agree(run_dir) == 4  # not the last periodic save (none): the episode the error came after
    assert lines[-1].startswith("training stopped by an unexpected error (RuntimeError: a bug); the training state")
    resumed = main.train(
        _cfg(tmp_path, episodes=7), out=lambda _: None, resume=run_dir / "training_state.pth", root=tmp_path
    )
    assert resumed.scores == whole.scores  # the saved episode is a true boundary: the same run as without the error


def test_an_error_inside_an_episode_keeps_the_last_weights_and_the_last_state(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^training stopped: I/O error; the training state on disk is episode \d+'s"):
        main.train(
            _cfg(tmp_path, episodes=9, save_every=2),
            out=lambda _: None,
            hooks=[Breaks(OSError(5, "I/O error"), step=500)],
            root=tmp_path,
        )
    (run_dir,) = tmp_path.glob("runs/*")
    state = load_training_state(run_dir / "training_state.pth", main.Config)
    assert state["progress"]["episode"] % 2 == 0 and state["progress"]["episode"] >= 2  # the last periodic save
    assert (run_dir / "last.pth").is_file()


def test_an_os_error_is_one_line_that_says_what_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_train = main.train
    monkeypatch.setattr(
        main,
        "train",
        lambda cfg, resume=None: real_train(
            cfg, resume=resume, hooks=[Breaks(OSError(28, "No space left on device"), at=3)], root=tmp_path
        ),
    )
    status = main.main(["--episodes", "6", "--no-video", "--quiet", *TINY])
    err = capsys.readouterr().err
    (run_dir,) = tmp_path.glob("runs/*")
    assert status == 1 and err.splitlines() == [
        f"main.py: error: training stopped: No space left on device; the training state of episode 3 is saved: "
        f"python main.py --resume {run_dir / 'training_state.pth'}"
    ]
    assert _agree(run_dir) == 3


def test_a_full_disk_under_stdout_does_not_stop_training(tmp_path: Path) -> None:
    """``python main.py > /full/log``: every line fails to be written; the run trains to its end all the same."""
    with open("/dev/full", "w") as full:
        proc = _start(
            tmp_path, "--episodes", "5", "--save-every", "2", "--log-every", "1", "--no-video", *TINY, stdout=full
        )
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and err == ""
    (run_dir,) = tmp_path.glob("runs/*")
    assert _agree(run_dir) == 5
    assert (run_dir / "learning_curve.png").is_file()


# ---------------------------------------------------------------- the checkpoint, checked at the start


def test_a_checkpoint_that_cannot_be_written_fails_at_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _runs_in(monkeypatch, tmp_path)  # a relative --checkpoint is under the run's root
    (tmp_path / "d").mkdir()
    assert main.main(["--checkpoint", "d", *TINY]) == 1
    folder = tmp_path / "d"
    refused = f"the checkpoint path {folder} is a folder; give a file path, such as {folder}/checkpoint.pth"
    assert capsys.readouterr().err == f"main.py: error: {refused}\n"
    assert main.main(["--checkpoint", "w" * 240 + ".pth", *TINY]) == 1
    assert "the checkpoint's file name (244 bytes) is too long for this file system" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_a_solving_run_keeps_its_weights_when_the_checkpoint_write_fails(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()

    class BreakTheFolder(Hook):  # the checkpoint's folder is removed mid-run, and a file takes its name
        def on_episode(self, episode: Episode) -> None:
            if episode.episode == 50:
                (tmp_path / "out").rmdir()
                (tmp_path / "out").write_text("in the way")

    cfg = _cfg(tmp_path, episodes=120, max_steps=15, target_score=-1e9, checkpoint=str(tmp_path / "out" / "c.pth"))
    with pytest.raises(
        Exception, match=r"the run solved at episode 100, but cannot save .*; its weights are in .*solved\.pth"
    ):
        main.train(cfg, out=lambda _: None, hooks=[BreakTheFolder()], root=tmp_path)
    (run_dir,) = tmp_path.glob("runs/*")
    solved, last = load_file(run_dir / "solved.pth"), load_file(run_dir / "last.pth")
    assert all(torch.equal(solved[k], last[k]) for k in solved)  # the network of episode 100
    assert _agree(run_dir) == 100


# ---------------------------------------------------------------- settings and inputs, checked before any work


@pytest.fixture(scope="module")
def saved_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("state")
    return main.train(_cfg(folder, episodes=2), out=lambda _: None, root=folder).state_path


def _tampered(saved_state: Path, tmp_path: Path, change) -> str:
    state = torch.load(saved_state, weights_only=True)
    change(state)
    (tmp_path / "run").mkdir()
    torch.save(state, tmp_path / "run" / "training_state.pth")
    return str(tmp_path / "run" / "training_state.pth")


TAMPERED = {
    "another width": lambda s: s["config"].update(hidden_size=32),
    "another head": lambda s: s["config"].update(dueling=True),
    "no Python random state": lambda s: s["rng"].pop("python"),
    "no rows": lambda s: s["progress"].pop("rows"),
}


@pytest.mark.parametrize("change", TAMPERED.values(), ids=TAMPERED.keys())
def test_a_training_state_that_does_not_fit_its_run_is_one_line(
    saved_state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change
) -> None:
    path = _tampered(saved_state, tmp_path, change)  # absolute paths: the refused resume writes nothing here
    assert main.main(["--resume", path, "--episodes", "4"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"main.py: error: {path} does not fit the run it describes (")


REFUSED = [
    (
        ["--replay-buffer-size", "100", "--minibatch-size", "100"],
        2,
        "learning starts once the memory holds more than one",
    ),
    (["--replay-buffer-size", "1000000000"], 1, "need about 70.8 GiB for the replay memory and the networks"),
    (["--hidden-size", "100000"], 1, "need about 186.3 GiB"),
    (["--seed", "4294967296"], 2, "--seed: must be less than 2**32"),
    (["--resume", "x.pth", "--preset", "fast"], 2, "--preset goes with a new run"),
]


@pytest.mark.parametrize(("args", "status", "message"), REFUSED, ids=[" ".join(a) for a, _, _ in REFUSED])
def test_settings_that_cannot_work_are_one_line_before_any_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args, status, message
) -> None:
    _runs_in(monkeypatch, tmp_path)
    try:
        got = main.main([*args, "--no-video"])
    except SystemExit as exit:  # argparse's errors
        got = exit.code
    (line,) = capsys.readouterr().err.splitlines()
    assert got == status and line.startswith("main.py: error: ") and message in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("link", ["runs", "videos"])
@pytest.mark.parametrize("target", ["nowhere", "loop"])
def test_a_link_that_leads_nowhere_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], link: str, target: str
) -> None:
    _runs_in(monkeypatch, tmp_path)
    os.symlink(link if target == "loop" else "gone", tmp_path / link)  # a link to itself loops
    assert main.main(["--episodes", "1", *TINY]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert (
        line.startswith("main.py: error: cannot write ") and f"{link} is a link to " in line and "leads nowhere" in line
    )


def test_an_evaluation_holds_a_fixed_number_of_environments(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Linear(8, 4))
    evaluation = PeriodicEvaluation("LunarLander-v3", 5, every=1, episodes=230, best_path=tmp_path / "b.pth")
    try:
        assert len(evaluation.envs) == PeriodicEvaluation.MAX_ENVS == 100
        evaluation.run(net)
        assert len(evaluation.last.scores) == 230 and len(evaluation.last.outcomes) == 230
    finally:
        evaluation.close()


def test_compare_checks_its_arguments_before_training() -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--eval-episodes", "0"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.splitlines()[-1].endswith("--eval-episodes: must be at least 1, got 0")
    assert time.monotonic() - started < 30


# ---------------------------------------------------------------- another environment


def test_another_environment_runs_to_its_end_with_its_own_outcomes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _runs_in(monkeypatch, tmp_path)
    args = [
        "--env",
        "CartPole-v1",
        "--eval-every",
        "5",
        "--eval-episodes",
        "3",
        "--episodes",
        "10",
        "--save-every",
        "3",
    ]
    assert main.main([*args, "--video-every", "5", "--quiet"]) == 0
    (run_dir,) = tmp_path.glob("runs/*")
    assert {r["outcome"] for r in _rows(run_dir)} <= {"terminated", "timed out"}
    assert [r["eval_score"] != "" for r in _rows(run_dir)] == [e % 5 == 0 for e in range(1, 11)]
    table = (run_dir / "progress.md").read_text()
    assert "end before the time limit" in table and "lands" not in table
    assert main.main(["--evaluate", str(run_dir / "training_state.pth"), "--episodes", "2"]) == 0
    assert "outcomes: terminated " in capsys.readouterr().out


def test_damaged_videos_and_summaries_do_not_stop_the_progress_table(tmp_path: Path) -> None:
    result = main.train(_cfg(tmp_path, episodes=4, video=True, video_every=1), out=lambda _: None, root=tmp_path)
    videos = tmp_path / "videos" / result.run_dir.name
    (videos / "episode_0001.mp4").write_bytes(b"")  # zero bytes
    (videos / "episode_0002.mp4").write_bytes(b"garbage" * 100)
    (videos / "episode_0003.json").write_text("{not json")
    for name in ("episode_0001.webp", "episode_0002.webp"):
        (videos / name).unlink()
    done = subprocess.run(  # --progress finds the videos under the working folder
        [sys.executable, str(ROOT / "main.py"), "--progress", str(result.run_dir)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    table = (result.run_dir / "progress.md").read_text()
    assert "[episode 1](" in table and "[episode 2](" in table  # linked, without a picture
    assert "episode_0004.webp" in table


@pytest.mark.parametrize("when", ["evaluate", "start-up"])
def test_ctrl_c_before_any_state_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], when: str
) -> None:
    """Only a run that saved a training state says it is complete."""
    _runs_in(monkeypatch, tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    if when == "evaluate":
        monkeypatch.setattr(main, "evaluate", interrupted)
        args = ["--evaluate", "x.pth"]
    else:
        monkeypatch.setattr(main, "make_env", interrupted)
        args = ["--episodes", "1", *TINY]
    assert main.main(args) == 130
    assert capsys.readouterr().err == "main.py: interrupted\n"
