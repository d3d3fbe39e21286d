"""Never lose a run: resumable state, atomic files, safe loading, evaluation and clear errors."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import hashlib
import multiprocessing
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import main
from dqnkit.envs import episode_outcome, make_env
from dqnkit.errors import UserError
from dqnkit.report.evaluation import evaluate, evaluation_video_name
from dqnkit.report.filming import BackgroundVideos
from dqnkit.run.files import load_file, load_training_state
from nnetwork import Network

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--max-steps", "100", "--minibatch-size", "16", "--replay-buffer-size", "3000", "--no-video"]


def _cfg(tmp_path: Path, **overrides) -> main.Config:
    base = dict(
        episodes=6,
        max_steps=120,
        minibatch_size=16,
        replay_buffer_size=200,  # small enough to wrap around, so the circular position is exercised
        video=False,
        checkpoint=str(tmp_path / "weights.pth"),
        seed=11,
        save_every=1,
    )
    base.update(overrides)
    return main.Config(**base)


def _quiet(_: str) -> None:
    pass


def _scores(csv_path: Path) -> list[float]:
    with open(csv_path) as fh:
        return [float(row["score"]) for row in csv.DictReader(fh)]


# ---------------------------------------------------------------- resume


def test_resume_continues_exactly(tmp_path: Path) -> None:
    whole = main.train(_cfg(tmp_path), out=_quiet, root=tmp_path)
    first = main.train(_cfg(tmp_path, episodes=3), out=_quiet, root=tmp_path)
    state = load_training_state(first.state_path, main.Config)
    assert state["progress"]["episode"] == 3 and len(state["progress"]["rows"]) == 3
    assert state["agent"]["memory"]["full"]  # 3 episodes of up to 120 steps overflow 500 slots
    resumed = main.train(_cfg(tmp_path), out=_quiet, resume=first.state_path, root=tmp_path)
    assert resumed.run_dir == first.run_dir
    for i, (a, b) in enumerate(zip(whole.scores, resumed.scores, strict=True)):
        assert a == b, f"resumed run diverged at episode {i + 1}: {a} != {b}"
    assert resumed.total_steps == whole.total_steps
    for a, b in zip(
        torch.load(whole.last_weights, weights_only=True).values(),
        torch.load(resumed.last_weights, weights_only=True).values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    assert not whole.checkpoint.exists()  # neither run solved


def test_a_solved_run_resumes_only_with_keep_training(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, episodes=104, max_steps=5, target_score=-1e9, save_every=50)
    solved = main.train(cfg, out=_quiet, root=tmp_path)
    assert solved.solved_episode == 100 and len(solved.scores) == 100
    lines: list[str] = []
    again = main.train(cfg, out=lines.append, resume=solved.state_path, root=tmp_path)
    assert "this run was solved at episode 100; add --keep-training to go on" in lines
    assert again.scores == solved.scores and again.total_steps == solved.total_steps
    assert load_training_state(solved.state_path, main.Config)["progress"]["episode"] == 100
    kept = main.train(dataclasses.replace(cfg, keep_training=True), out=_quiet, resume=solved.state_path, root=tmp_path)
    assert kept.solved_episode == 100 and kept.scores[:100] == solved.scores and len(kept.scores) == 104


def test_resuming_a_run_that_played_all_its_episodes_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue item 9: one line that says why nothing happens, status 0, nothing rewritten."""
    monkeypatch.setattr(main, "train", functools.partial(main.train, root=tmp_path))  # the runs go under tmp_path
    assert main.main(["--episodes", "3", "--save-every", "1000", *TINY]) == 0
    (state,) = tmp_path.glob("runs/*/training_state.pth")
    files = {p.name: p.read_bytes() for p in state.parent.iterdir()}
    capsys.readouterr()
    assert main.main(["--resume", str(state)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["this run already played its 3 episodes; raise --episodes to go on"] and err == ""
    assert {p.name: p.read_bytes() for p in state.parent.iterdir() if p.name != "config.json"} == {
        name: data for name, data in files.items() if name != "config.json"
    }
    assert main.main(["--resume", str(state), "--episodes", "4"]) == 0
    assert "resuming at episode 4" in capsys.readouterr().out


def _start(root: Path, cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(root / "main.py"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigint_then_resume_gives_the_uninterrupted_scores(root: Path, tmp_path: Path) -> None:
    args = ["--episodes", "200", "--seed", "2", "--save-every", "1000", *TINY]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    proc = _start(root, tmp_path / "a", *args)
    first_line = proc.stdout.readline()  # training has begun once the run is announced
    assert first_line.startswith("run "), first_line
    time.sleep(random.Random().uniform(0.1, 1.0))  # a random moment, mid-episode more often than not
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    (state_path,) = (tmp_path / "a").glob("runs/*/training_state.pth")
    stopped_at = load_training_state(state_path, main.Config)["progress"]["episode"]
    assert 0 < stopped_at < 200, "the signal should arrive mid-run"
    resumed = subprocess.run(
        [sys.executable, str(root / "main.py"), "--resume", str(state_path), "--no-video"],
        cwd=tmp_path / "a",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at episode {stopped_at + 1}" in resumed.stdout
    whole = subprocess.run(
        [sys.executable, str(root / "main.py"), *args], cwd=tmp_path / "b", capture_output=True, text=True, timeout=300
    )
    assert whole.returncode == 0, whole.stderr
    interrupted_scores = _scores(state_path.parent / "metrics.csv")
    (whole_csv,) = (tmp_path / "b").glob("runs/*/metrics.csv")
    whole_scores = _scores(whole_csv)
    assert len(interrupted_scores) == len(whole_scores) == 200
    for i, (a, b) in enumerate(zip(whole_scores, interrupted_scores, strict=True)):
        assert a == b, f"episode {i + 1}: uninterrupted {a}, interrupted at {stopped_at} and resumed {b}"


def _processes_in(folder: Path) -> list[str]:
    """The command lines of the processes working in ``folder`` (its video worker, ffmpeg)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(os.readlink(f"/proc/{pid}/cwd")).is_relative_to(folder):
                found.append(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " "))
        except OSError:  # gone meanwhile, or not ours to look at
            continue
    return found


@pytest.mark.parametrize("moment", ["stopping after this episode", "finishing the videos"])
def test_a_second_sigint_stops_within_two_seconds(root: Path, tmp_path: Path, moment: str) -> None:
    """Issue item 5: the second Ctrl-C ends the process at once, even while videos are being made.

    A video every episode keeps the worker busy, so the end of the run has videos to wait for;
    the second signal comes as soon as the run says ``moment``.
    """
    args = ["--episodes", "100000", "--seed", "0", "--save-every", "1", "--video-every", "1", "--minibatch-size", "16"]
    proc = _start(root, tmp_path, *args)
    assert proc.stdout.readline().startswith("run ")
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("runs/*/training_state.pth")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # videos queued
    proc.send_signal(signal.SIGINT)
    for line in proc.stdout:
        if line.startswith((moment, "stopped at")):
            break
    assert line.startswith(moment), f"the run ended before the second signal: {line}"
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    out, err = proc.communicate(timeout=30)
    seconds = time.monotonic() - sent
    assert seconds < 2.0, f"the process took {seconds:.2f} s to end after the second SIGINT"
    assert proc.returncode == 130, (out, err)
    assert err.splitlines() == ["main.py: interrupted; the last saved training state is still complete"]
    (state,) = tmp_path.glob("runs/*/training_state.pth")
    assert load_training_state(state, main.Config)["progress"]["episode"] >= 1  # whole, and it loads
    # The run waits until its video worker and that worker's ffmpeg have ended: none may outlive it,
    # nor write a temporary file after the run removed it (as an ffmpeg that outlived it once did).
    assert not _processes_in(tmp_path), "the video worker or its ffmpeg outlived the run"
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_stopping_the_video_worker_ends_what_it_started_at_once(tmp_path: Path) -> None:
    """A second Ctrl-C stops the video worker and the processes it started (its ffmpeg) within two seconds.

    The stand-in for the video in hand: a process the worker waits for inside C code (``os.system``),
    where no Python signal handler runs, and a temporary file of the worker's, as an ffmpeg leaves one.
    """
    videos = BackgroundVideos(_quiet)
    videos._start_worker()
    started = tmp_path / "started"
    command = "touch .episode_0001.mp4.$PPID.x1y2z3w4.tmp.mp4 && echo $$ > started.part && mv started.part started"
    future = videos._pool.submit(os.system, f"cd {tmp_path} && {command} && exec sleep 60")
    videos._pending.append((1, future, tmp_path / "episode_0001.mp4"))
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:  # the worker has started its "ffmpeg"
        time.sleep(0.01)
    child = int(started.read_text())
    try:
        began = time.monotonic()
        videos.close(wait=False)
        assert time.monotonic() - began < 2.0
        assert not _running(child), "a process the video worker started outlived it"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["started"]  # the temporary file is gone
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def _train_in_child(root: str, argv: list[str]) -> None:
    main.train = functools.partial(main.train, root=root)  # the forked child's own main: its runs go under root
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the process is killed, never closed
    sys.exit(main.main(argv))


def test_sigkill_at_random_moments_never_leaves_a_broken_state(tmp_path: Path) -> None:
    """Kill -9 twenty times while the state is saved after every episode; the file on disk always loads.

    The children are forked from this process, so each starts training in milliseconds
    instead of re-importing PyTorch: the kills land on training and saving, not start-up.
    """
    fork = multiprocessing.get_context("fork")
    rng = random.Random()
    args = ["--episodes", "100000", "--seed", "1", "--save-every", "1", *TINY]
    deadline = time.monotonic() + 90
    kills, loaded = 0, 0
    state_path: Path | None = None
    last_episode = 0
    while kills < 20 and time.monotonic() < deadline:
        resume = ["--resume", str(state_path)] if state_path else []
        child = fork.Process(target=_train_in_child, args=(str(tmp_path), [*args, *resume]))
        child.start()
        while state_path is None and not list(tmp_path.glob("runs/*/training_state.pth")):
            time.sleep(0.01)  # the first run must leave a state behind, or the next would start afresh
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        kills += 1
        found = list(tmp_path.glob("runs/*/training_state.pth"))
        assert len(found) == 1
        state_path = found[0]
        state = load_training_state(state_path, main.Config)  # raises on a truncated or corrupt file
        assert state["progress"]["episode"] >= last_episode  # never goes backwards
        last_episode = state["progress"]["episode"]
        loaded += 1
    assert kills >= 20, f"only {kills} kills fitted in the time bound"
    assert loaded == kills and last_episode > 0
    # And resuming from what the last kill left behind runs on to the end.
    final = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--resume", str(state_path), "--episodes", str(last_episode + 2)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert final.returncode == 0, final.stderr
    assert load_training_state(state_path, main.Config)["progress"]["episode"] == last_episode + 2


# ---------------------------------------------------------------- safe loading


class _Evil:
    """Unpickling this runs code: it is what a hostile .pth file would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('owned')",))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_is_refused_and_runs_nothing(root: Path, tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth"
    payload = {"fc1.weight": _Evil(marker)}
    if writer == "pickle":
        evil.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, evil)
    with pytest.raises(UserError, match="refusing to load it"):
        load_file(evil)
    proc = subprocess.run(
        [sys.executable, str(root / "main.py"), "--evaluate", str(evil)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "refusing to load it" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not marker.exists(), "loading the file ran its code"


# ---------------------------------------------------------------- evaluation


def test_evaluate_reports_scores_and_outcomes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # about the working folder: evaluate films into its videos/, as a run does by default
    run = main.train(_cfg(tmp_path, episodes=2), out=_quiet)
    lines: list[str] = []
    result = evaluate(run.last_weights, episodes=5, seed=3, video=True, out=lines.append)
    assert len(result.scores) == len(result.outcomes) == len(result.lengths) == 5
    assert set(result.outcomes) <= {"landed", "crashed", "out of bounds", "timed out"}
    assert 0 <= result.on_pad <= result.outcomes.count("landed")
    text = "\n".join(lines)
    assert f"mean {np.mean(result.scores):.2f}" in text and "landings between the flags" in text
    (video,) = (tmp_path / "videos").glob("evaluate_*_last_*_seed3.mp4")  # named after the run and the file
    assert video.name == evaluation_video_name(run.last_weights, 3)
    assert video.name.startswith(f"evaluate_{run.run_dir.name}_last_")
    # A training state evaluates the same network as the weights file saved beside it.
    again = evaluate(run.state_path, episodes=5, seed=3, out=_quiet)
    assert again.scores == result.scores


def test_episode_outcome_reads_the_environment() -> None:
    env = make_env("LunarLander-v3", 1000)
    state, _ = env.reset(seed=0)
    terminated = truncated = False
    while not (terminated or truncated):
        state, reward, terminated, truncated, _ = env.step(0)  # engines off: it falls and crashes
    assert episode_outcome(env, state, terminated) == "crashed" and reward == -100
    assert episode_outcome(env, state, False) == "timed out"
    env.close()


# ---------------------------------------------------------------- numerical guard


def test_non_finite_loss_stops_before_the_step() -> None:
    from agent import Agent

    agent = Agent(8, 4, rng=np.random.default_rng(0), minibatch_size=4)
    before = [p.clone() for p in agent.local_qnetwork.parameters()]
    s = torch.zeros(4, 8)
    batch = (s, s, torch.zeros(4, 1, dtype=torch.int64), torch.full((4, 1), float("nan")), torch.zeros(4, 1))
    with pytest.raises(FloatingPointError, match="loss became nan"):
        agent.learn(batch, 0.99)
    for a, b in zip(before, agent.local_qnetwork.parameters(), strict=True):
        assert torch.equal(a, b)


def test_training_with_exploding_weights_stops_with_a_message(root: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(root / "main.py"), "--episodes", "30", "--learning-rate", "1e30", *TINY],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert "training stopped in episode" in line and "try a smaller --learning-rate" in line
    (last,) = tmp_path.glob("runs/*/last.pth")  # the run's folder: the checkpoint is for a run that solves
    assert f"The last good weights are in {last.relative_to(tmp_path)}" in line
    assert not (tmp_path / "checkpoint.pth").exists()
    net = Network(8, 4)
    net.load_state_dict(torch.load(last, weights_only=True))
    assert all(torch.isfinite(p).all() for p in net.parameters())


# ---------------------------------------------------------------- bad input


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a user's files: good weights, a training state, and assorted bad files."""
    ws = tmp_path_factory.mktemp("workspace")
    cfg = main.Config(episodes=2, max_steps=50, minibatch_size=16, video=False, seed=0)
    run = main.train(cfg, out=_quiet, root=ws)
    shutil.copy(run.last_weights, ws / "checkpoint.pth")  # a user's weights file
    good = (ws / "checkpoint.pth").read_bytes()
    (ws / "empty.pth").write_bytes(b"")
    (ws / "truncated.pth").write_bytes(good[: len(good) // 2])
    (ws / "notes.txt").write_text("not a checkpoint\n")
    torch.save({"answer": 42}, ws / "other.pth")
    acrobot = Network(6, 3)  # a network for another environment
    torch.save(acrobot.state_dict(), ws / "acrobot.pth")
    (ws / "state_path.txt").write_text(str(run.state_path.relative_to(ws)))  # relative to the workspace
    return ws


BAD_INPUTS = [
    (["--evaluate", "missing.pth"], 1, "missing.pth: no such file"),
    (["--evaluate", "empty.pth"], 1, "empty.pth is empty"),
    (["--evaluate", "truncated.pth"], 1, "truncated.pth is not a complete checkpoint (truncated or corrupt)"),
    (["--evaluate", "notes.txt"], 1, "notes.txt is not a PyTorch checkpoint file"),
    (["--evaluate", "other.pth"], 1, "other.pth is not a checkpoint of this project"),
    (["--evaluate", "acrobot.pth"], 1, "network for 6 observations and 3 actions, but LunarLander-v3 has 8 and 4"),
    (["--evaluate", "runs"], 1, "runs is not a file"),
    (["--resume", "checkpoint.pth"], 1, "holds only network weights"),
    (["--resume", "truncated.pth"], 1, "truncated.pth is not a complete checkpoint"),
    (["--resume", "{state}", "--learning-rate", "0.1"], 1, "--learning-rate cannot change when resuming"),
    (["--checkpoint", "notes.txt/weights.pth", "--episodes", "1"], 1, "cannot write the checkpoint to notes.txt"),
    (["--episodes", "1", "--video-every", "1"], 1, "cannot write videos to videos/"),  # videos is a file here
    (["--save-every", "0"], 2, "--save-every: must be at least 1"),
    (["--video"], 2, "--video goes with --evaluate"),
    (["--resume", "{state}", "--evaluate", "checkpoint.pth"], 2, "cannot be used together"),
    (["--evaluate", "checkpoint.pth", "--episodes", "0"], 2, "--episodes: must be at least 1"),
    (["--device", "cuda", "--episodes", "1"], 1, "PyTorch sees no CUDA GPU"),
]


@pytest.mark.parametrize(
    ("args", "status", "message"), BAD_INPUTS, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_bad_input_one_line_and_nothing_damaged(
    root: Path, workspace: Path, args: list[str], status: int, message: str
) -> None:
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    videos = workspace / "videos"
    if "--video-every" in args:
        videos.write_text("a file where the videos folder should be\n")
    state = (workspace / "state_path.txt").read_text()
    args = [a.replace("{state}", state) for a in args]
    before = _digest(workspace)
    try:
        proc = subprocess.run(
            [sys.executable, str(root / "main.py"), *args], cwd=workspace, capture_output=True, text=True, timeout=120
        )
    finally:
        after = _digest(workspace)
        if videos.is_file():
            videos.unlink()
    assert proc.returncode == status, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    damaged = {k for k in before if before[k] != after.get(k)}
    assert not damaged, f"files changed or removed: {damaged}"
