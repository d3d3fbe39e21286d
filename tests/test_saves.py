"""Saves a user can trust: the checkpoint policy, a full disk, stale temporary files, metrics.csv every episode."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main
from dqnkit.errors import UserError
from dqnkit.run.files import load_training_state, remove_stale_temp_files, save_torch

TINY = ["--max-steps", "50", "--minibatch-size", "16", "--no-video"]


def _cfg(tmp_path: Path, **overrides) -> main.Config:
    base = dict(
        episodes=3,
        max_steps=50,
        minibatch_size=16,
        replay_buffer_size=1000,
        video=False,
        checkpoint=str(tmp_path / "checkpoint.pth"),
        seed=0,
    )
    base.update(overrides)
    return main.Config(**base)


def _quiet(_: str) -> None:
    pass


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- the checkpoint policy


def test_a_solved_checkpoint_survives_interrupted_unsolved_and_exploding_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue item 1: only a run that solves writes --checkpoint; the others keep their weights in their folder."""
    checkpoint = tmp_path / "checkpoint.pth"
    # Solving needs a full 100-episode window: 100 episodes of 5 steps, and a target every run reaches.
    solving = _cfg(tmp_path, episodes=100, max_steps=5, target_score=-10_000)
    solved = main.train(solving, out=_quiet, root=tmp_path)
    assert solved.solved_episode == 100 and checkpoint.is_file()
    good = checkpoint.read_bytes()

    # Interrupted: a real SIGINT during episode 2; the run stops after it.
    play = main.play_episode
    played: list[int] = []

    def interrupted_play(*args, **kwargs):
        played.append(1)
        if len(played) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return play(*args, **kwargs)

    monkeypatch.setattr(main, "play_episode", interrupted_play)
    lines: list[str] = []
    stopped = main.train(_cfg(tmp_path, seed=1, episodes=50), out=lines.append, root=tmp_path)
    monkeypatch.setattr(main, "play_episode", play)
    assert stopped.stopped_by == signal.SIGINT and len(stopped.scores) == 2
    assert checkpoint.read_bytes() == good
    assert any(f"stopped at episode 2; last weights saved to {stopped.last_weights};" in line for line in lines)
    torch.load(stopped.last_weights, weights_only=True)

    lines.clear()
    unsolved = main.train(_cfg(tmp_path, seed=2), out=lines.append, root=tmp_path)
    assert unsolved.solved_episode is None and checkpoint.read_bytes() == good
    assert lines[-1] == (
        f"not solved in 3 episodes; last weights saved to {unsolved.last_weights} "
        f"({checkpoint} is written only by a run that solves)"
    )

    # A non-finite loss saves the last good weights too, and into the run's folder.
    with pytest.raises(UserError, match=rf"The last good weights are in {re.escape(str(tmp_path))}/runs/.*/last\.pth"):
        main.train(_cfg(tmp_path, seed=3, episodes=30, max_steps=100, learning_rate=1e30), out=_quiet, root=tmp_path)
    assert checkpoint.read_bytes() == good


def test_a_solving_run_keeps_the_checkpoint_it_replaces(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint.pth"
    solving = _cfg(tmp_path, episodes=100, max_steps=5, target_score=-10_000)
    main.train(solving, out=_quiet, root=tmp_path)
    first = checkpoint.read_bytes()
    lines: list[str] = []
    second = main.train(dataclasses.replace(solving, seed=4), out=lines.append, root=tmp_path)
    kept = second.run_dir / "previous-checkpoint.pth"
    assert kept.read_bytes() == first and checkpoint.read_bytes() != first
    (line,) = [line for line in lines if "previous" in line]
    assert line == f"the previous {checkpoint} (another run's) is kept as {kept}"


# ---------------------------------------------------------------- a full disk


class _FullDisk(io.FileIO):
    """A file on a disk with ``room`` bytes left: the write that crosses it writes what fits, then fails."""

    room = 0

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        left = self.room - self.tell()
        if len(data) > left:
            if left > 0:
                super().write(data[:left])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def _open_temp_files() -> list[str]:
    """The temporary files (``.<name>...tmp``) this process has a descriptor on, deleted or not."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)")
            if re.match(r"^\..*\.tmp", Path(target).name):
                found.append(target)
    return found


def _fill_disk(monkeypatch: pytest.MonkeyPatch, room: int, buffered: bool, when=lambda name: True) -> list[str]:
    """Make the temporary files of the saves for which ``when(name)`` holds sit on a full disk.

    Returns the list the names of those temporary files are appended to.
    """
    fdopen = os.fdopen
    failed: list[str] = []

    def full_fdopen(fd: int, mode: str = "r", *args, **kwargs):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if "w" not in mode or not when(name):
            return fdopen(fd, mode, *args, **kwargs)
        failed.append(name)
        raw = type("Full", (_FullDisk,), {"room": room})(fd, "wb")
        return io.BufferedWriter(raw) if buffered else raw

    monkeypatch.setattr(os, "fdopen", full_fdopen)
    return failed


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered file", "raw file"])
def test_save_on_a_full_disk_is_one_error_and_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, buffered: bool
) -> None:
    """torch.save raises what its file raised, or (unbuffered) a RuntimeError caused by it: both are one line."""
    target = tmp_path / "state.pth"
    save_torch({"w": torch.zeros(10)}, target)
    before = target.read_bytes()
    failed = _fill_disk(monkeypatch, room=1000, buffered=buffered)
    message = r"^cannot save .*state\.pth: No space left on device; the previous state\.pth is unchanged$"
    with pytest.raises(UserError, match=message):
        save_torch({"w": torch.randn(100_000)}, target)
    assert len(failed) == 1
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.pth"]  # the temporary file is gone
    assert not _open_temp_files()  # and no descriptor keeps its space


def test_a_full_disk_during_training_ends_with_one_line_and_the_state_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # about the working folder: the run's files go there, and the error names them from it
    snapshot: dict[str, bytes] = {}

    def second_state_save(name: str) -> bool:
        states = list(tmp_path.glob("runs/*/training_state.pth"))
        if ".training_state.pth." in Path(name).name and states:  # the first save went through
            snapshot["state"] = states[0].read_bytes()
            return True
        return False

    failed = _fill_disk(monkeypatch, room=5000, buffered=True, when=second_state_save)
    status = main.main(["--episodes", "6", "--save-every", "2", *TINY])
    out, err = capsys.readouterr()
    assert status == 1 and len(failed) == 2  # the periodic save at episode 4, and the save after the error
    (run_dir,) = tmp_path.glob("runs/*")
    state = run_dir / "training_state.pth"
    assert err.splitlines() == [
        f"main.py: error: training stopped: cannot save {state.relative_to(tmp_path)}: No space left on device; "
        f"the previous training_state.pth is unchanged; the training state on disk is episode 2's: "
        f"python main.py --resume {state.relative_to(tmp_path)}"
    ]
    assert state.read_bytes() == snapshot["state"]
    assert load_training_state(state, main.Config)["progress"]["episode"] == 2
    assert [int(r["episode"]) for r in _rows(run_dir / "metrics.csv")] == [1, 2, 3, 4]  # every finished episode
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert not _open_temp_files()


def _in_small_filesystem(root: Path, cwd: Path, size_kb: int, main_args: list[str], check: str) -> str:
    """Run main.py with ``runs/`` on a tmpfs of ``size_kb``, then ``check`` (Python) there; return stdout.

    The tmpfs lives in a private mount namespace (``unshare``), gone when the command ends:
    ``check`` looks at it before that.
    """
    (cwd / "runs").mkdir()
    (cwd / "check.py").write_text(check)
    script = (
        f"mount -t tmpfs -o size={size_kb}k tmpfs runs || exit 99; "
        f"{sys.executable} {root / 'main.py'} {' '.join(main_args)} 2>stderr.txt; echo status $?; "
        f"{sys.executable} check.py"
    )
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode == 99 or "unshare" in proc.stderr:
        pytest.skip(f"cannot mount a small filesystem here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


CHECK_FULL_DISK = """
import json, os, shutil, main
from pathlib import Path
from dqnkit.run.files import load_training_state
(run,) = Path("runs").iterdir()
state = load_training_state(run / "training_state.pth", main.Config)
print(json.dumps({
    "files": sorted(p.name for p in run.iterdir()),
    "saved_episode": state["progress"]["episode"],
    "metrics_rows": len((run / "metrics.csv").read_text().splitlines()) - 1,
    "used": shutil.disk_usage("runs").used,
    "sizes": sum(p.stat().st_size for p in run.iterdir()),
}))
"""


@pytest.mark.skipif(shutil.which("unshare") is None or sys.platform != "linux", reason="needs Linux and unshare")
def test_a_really_full_disk(root: Path, tmp_path: Path) -> None:
    """Issue item 13 on a real 1 MB filesystem: the state grows each episode until a save no longer fits."""
    args = ["--episodes", "1000", "--save-every", "1", "--replay-buffer-size", "100000", *TINY]
    args += ["--checkpoint", str(tmp_path / "checkpoint.pth")]
    report = _in_small_filesystem(root, tmp_path, 1024, args, CHECK_FULL_DISK)
    status_line, result_line = report.strip().splitlines()[-2:]
    assert status_line == "status 1", report
    (line,) = (tmp_path / "stderr.txt").read_text().splitlines()
    assert line.startswith("main.py: error: training stopped: cannot ") and "No space left on device" in line
    result = json.loads(result_line)
    assert f"; the training state on disk is episode {result['saved_episode']}'s: python main.py --resume " in line
    assert not [name for name in result["files"] if ".tmp" in name], result["files"]
    assert result["saved_episode"] > 10  # it did fill up; the last complete state loads
    assert result["metrics_rows"] >= result["saved_episode"]
    assert result["used"] < result["sizes"] + 64 * 1024  # no space kept by a deleted temporary file


# ---------------------------------------------------------------- stale temporary files


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_stale_temporary_files_are_removed_and_named(tmp_path: Path) -> None:
    """Issue item 14: what a save killed between its write and its rename leaves, as the next run finds it."""
    first = main.train(_cfg(tmp_path, episodes=2), out=_quiet, root=tmp_path)
    dead = _dead_pid()
    stale = [
        tmp_path / f".checkpoint.pth.{dead}.zzzz9999.tmp",  # the checkpoint's folder
        first.run_dir / f".training_state.pth.{dead}.abcd1234.tmp",
        first.run_dir / ".training_state.pth.k2j3h4g5.tmp",  # as earlier versions named them: no process id
    ]
    live = first.run_dir / f".metrics.csv.{os.getpid()}.live0000.tmp"  # a save in progress: its process runs
    other = tmp_path / f".weights.pth.{dead}.abcd1234.tmp"  # another file's: not this run's business
    for path in [*stale, live, other]:
        path.write_bytes(b"half a file")
    lines: list[str] = []
    main.train(_cfg(tmp_path, episodes=3), out=lines.append, resume=first.state_path, root=tmp_path)
    assert [path.exists() for path in stale] == [False, False, False]
    assert live.exists() and other.exists()
    (line,) = [line for line in lines if line.startswith("removed")]
    assert line.startswith("removed 3 temporary files left by an interrupted save: ")
    assert sorted(Path(p).resolve() for p in line.split(": ", 1)[1].split(", ")) == sorted(p.resolve() for p in stale)
    # A new run cleans the checkpoint's folder.
    stale_checkpoint = tmp_path / f".checkpoint.pth.{dead}.qwer5678.tmp"
    stale_checkpoint.write_bytes(b"half a file")
    lines.clear()
    main.train(_cfg(tmp_path, episodes=1), out=lines.append, root=tmp_path)
    assert not stale_checkpoint.exists()
    assert f"removed 1 temporary file left by an interrupted save: {stale_checkpoint}" in lines


def test_remove_stale_temp_files_by_hand(tmp_path: Path) -> None:
    dead = _dead_pid()
    names = {
        f".a.pth.{dead}.abcd1234.tmp": False,
        f".a.pth.{os.getpid()}.abcd1234.tmp": True,  # alive
        f".b.mp4.{dead}.abcd1234.tmp.mp4": False,  # a video's, which keeps its extension
        ".a.pth.abcd1234.tmp": False,
        "a.pth": True,
        ".hidden": True,
        "notes.tmp": True,
    }
    for name in names:
        (tmp_path / name).write_text("x")
    removed = remove_stale_temp_files(tmp_path, "a.pth")
    assert sorted(p.name for p in removed) == sorted([f".a.pth.{dead}.abcd1234.tmp", ".a.pth.abcd1234.tmp"])
    removed = remove_stale_temp_files(tmp_path)
    assert [p.name for p in removed] == [f".b.mp4.{dead}.abcd1234.tmp.mp4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(name for name, kept in names.items() if kept)
    assert remove_stale_temp_files(tmp_path / "missing") == []


# ---------------------------------------------------------------- metrics.csv every episode


def test_metrics_reach_disk_every_episode_and_a_resume_keeps_them_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue item 15: the file never lags the run; after a crash and a resume it holds exactly the run's rows."""
    cfg = _cfg(tmp_path, episodes=6, save_every=2, log_every=100)
    play = main.play_episode
    on_disk: list[int] = []

    def play_and_look(*args, **kwargs):
        (metrics,) = tmp_path.glob("runs/*/metrics.csv")
        on_disk.append(len(_rows(metrics)))
        if len(on_disk) == 6:
            raise RuntimeError("the machine went down")  # in episode 6: episodes 1-5 played, 1-4 saved
        return play(*args, **kwargs)

    monkeypatch.setattr(main, "play_episode", play_and_look)
    with pytest.raises(RuntimeError, match="went down"):
        main.train(cfg, out=_quiet, root=tmp_path)
    monkeypatch.setattr(main, "play_episode", play)
    assert on_disk == [0, 1, 2, 3, 4, 5]  # before each episode, every finished one is on disk
    (state,) = tmp_path.glob("runs/*/training_state.pth")
    assert load_training_state(state, main.Config)["progress"]["episode"] == 4
    resumed = main.train(cfg, out=_quiet, resume=state, root=tmp_path)
    whole = main.train(cfg, out=_quiet, root=tmp_path)
    text = (resumed.run_dir / "metrics.csv").read_text()
    assert text.count("episode,") == 1  # one header

    def timeless(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in rows]

    rows = _rows(resumed.run_dir / "metrics.csv")
    assert [int(r["episode"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert timeless(rows) == timeless(_rows(whole.run_dir / "metrics.csv"))


@pytest.mark.skipif(sys.platform == "win32", reason="the run lock is an flock, which Windows lacks")
def test_a_run_that_another_process_trains_cannot_be_resumed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """While another process holds a run, --resume of it stops in one line and writes nothing; after, it goes on."""
    import subprocess

    from dqnkit.run.paths import LOCK_FILE

    first = main.train(_cfg(tmp_path, episodes=2, quiet=True), out=lambda _: None, root=tmp_path)
    lock = first.run_dir / LOCK_FILE  # absolute paths: main.main below writes nothing in the working folder
    holder = subprocess.Popen(  # another process that trains in the run: it holds the lock
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+b'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(lock)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p.name: p.read_bytes() for p in first.run_dir.iterdir()}
        status = main.main(["--resume", str(first.state_path), "--episodes", "4", "--quiet"])
        err = capsys.readouterr().err
        assert status == 1 and len(err.splitlines()) == 1
        assert "is in use: another process is training in it" in err
        assert {p.name: p.read_bytes() for p in first.run_dir.iterdir()} == before  # nothing written
    finally:
        holder.kill()
        holder.wait()
    assert main.main(["--resume", str(first.state_path), "--episodes", "4", "--quiet"]) == 0  # its holder is gone
    assert main.main(["--resume", str(first.state_path), "--episodes", "5", "--quiet"]) == 0  # and so is ours
