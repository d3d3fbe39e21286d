"""The training script: configuration, determinism, videos, and the command line."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import PIL.Image
import pytest
import torch

import main
from agent import Agent
from dqnkit.cli import build_parser
from dqnkit.report.filming import BackgroundVideos
from dqnkit.report.videos import greedy_policy, record_greedy_video, record_video
from nnetwork import DuelingNetwork, Network


def test_defaults_are_the_original_hyperparameters() -> None:
    cfg = main.Config()
    assert (cfg.learning_rate, cfg.minibatch_size, cfg.discount_factor) == (5e-4, 100, 0.99)
    assert (cfg.replay_buffer_size, cfg.interpolation_parameter, cfg.learn_every) == (100_000, 1e-3, 4)
    assert (cfg.episodes, cfg.max_steps) == (2000, 1000)
    assert (cfg.epsilon_start, cfg.epsilon_end, cfg.epsilon_decay) == (1.0, 0.01, 0.995)
    assert (cfg.env, cfg.target_score, cfg.video_every, cfg.hidden_size) == ("LunarLander-v3", 200.0, 50, 64)


def test_every_config_field_is_a_flag() -> None:
    help_text = build_parser(main.Config, main.PRESETS).format_help()
    for flag in (
        "--env",
        "--episodes",
        "--max-steps",
        "--seed",
        "--no-video",
        "--video-every",
        "--checkpoint",
        "--keep-training",
        "--device",
        "--learning-rate",
        "--epsilon-decay",
        "--replay-buffer-size",
    ):
        assert flag in help_text
    assert main.parse_config([]) == main.Config()
    cfg = main.parse_config(["--episodes", "7", "--no-video", "--keep-training", "--learning-rate", "1e-3"])
    assert (cfg.episodes, cfg.video, cfg.keep_training, cfg.learning_rate) == (7, False, True, 1e-3)


def test_epsilon_schedule() -> None:
    eps = [1.0]
    for _ in range(1000):
        eps.append(main.next_epsilon(eps[-1], 0.01, 0.995))
    assert eps[1] == pytest.approx(0.995) and eps[2] == pytest.approx(0.995**2)
    assert min(eps) == 0.01
    # 0.995^n reaches 0.01 after ceil(log(0.01)/log(0.995)) = 919 decays.
    assert eps.index(0.01) == 919


def _tiny(tmp_path: Path, **overrides) -> main.Config:
    base = dict(
        episodes=3,
        max_steps=60,
        minibatch_size=16,
        replay_buffer_size=1000,
        video=False,
        checkpoint=str(tmp_path / "weights.pth"),
        seed=5,
    )
    base.update(overrides)
    return main.Config(**base)


def test_same_seed_same_scores(tmp_path: Path) -> None:
    first = main.train(_tiny(tmp_path, episodes=4), out=lambda _: None, root=tmp_path).scores
    second = main.train(_tiny(tmp_path, episodes=4), out=lambda _: None, root=tmp_path).scores
    other = main.train(_tiny(tmp_path, episodes=4, seed=6), out=lambda _: None, root=tmp_path).scores
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        assert a == b, f"runs with the same seed diverged at episode {i + 1}: {a} != {b}"
    assert first != other


def test_videos_do_not_change_training(tmp_path: Path) -> None:
    quiet = main.train(_tiny(tmp_path, episodes=4), out=lambda _: None, root=tmp_path).scores
    filmed = main.train(_tiny(tmp_path, episodes=4, video=True, video_every=2), out=lambda _: None, root=tmp_path)
    assert quiet == filmed.scores
    (run_videos,) = (tmp_path / "videos").iterdir()  # one folder per run, named like the run
    # Each video with its thumbnail and what happened in it, for the training-progress table.
    names = [f"episode_000{e}.{kind}" for e in (2, 4) for kind in ("json", "mp4", "webp")]
    assert sorted(p.name for p in run_videos.iterdir()) == names


@pytest.mark.parametrize("network", [Network, DuelingNetwork], ids=lambda n: n.__name__)
def test_greedy_policy_is_the_argmax_of_the_network(network: type[Network]) -> None:
    torch.manual_seed(0)
    net = network(8, 4)
    states = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    expected = net(torch.from_numpy(states)).argmax(dim=1).tolist()
    policy = greedy_policy(net)
    assert [policy(s) for s in states] == expected
    assert policy(states[0].astype(np.float64).tolist()) == expected[0]  # a list or float64 state works too


def test_background_videos_show_the_policy_of_their_episode_and_failures_warn(tmp_path: Path) -> None:
    torch.manual_seed(0)
    agent = Agent(8, 4, rng=np.random.default_rng(0))
    before = {k: v.clone() for k, v in agent.local_qnetwork.state_dict().items()}
    warnings: list[str] = []
    videos = BackgroundVideos(warnings.append)
    videos.submit(1, agent.local_qnetwork, "LunarLander-v3", 60, tmp_path / "one.mp4", seed=4)
    with torch.no_grad():  # training goes on: the queued video must not see this
        for p in agent.local_qnetwork.parameters():
            p.mul_(-3.0)
    videos.submit(2, agent.local_qnetwork, "NoSuchEnv-v0", 60, tmp_path / "two.mp4", seed=4)
    videos.close()
    assert record_greedy_video(before, "LunarLander-v3", 60, tmp_path / "inline.mp4", seed=4) == videos.scores[1]
    assert len(_decode(tmp_path / "one.mp4")) == len(_decode(tmp_path / "inline.mp4"))
    (warning,) = [line for line in warnings if line.startswith("warning:")]  # and "finishing the video ..."
    assert warning.startswith("warning: could not write video for episode 2: cannot create environment 'NoSuchEnv-v0'")
    assert not (tmp_path / "two.mp4").exists() and 2 not in videos.scores


def test_background_videos_fall_back_to_inline_where_no_process_can_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import concurrent.futures

    def refuse(*args, **kwargs):
        raise OSError("no semaphores here")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", refuse)
    torch.manual_seed(0)
    agent = Agent(8, 4, rng=np.random.default_rng(0))
    lines: list[str] = []
    videos = BackgroundVideos(lines.append)
    videos.submit(3, agent.local_qnetwork, "LunarLander-v3", 30, tmp_path / "three.mp4", seed=1)
    videos.submit(4, agent.local_qnetwork, "LunarLander-v3", 30, tmp_path / "four.mp4", seed=1)
    videos.close()
    assert lines == ["warning: no video worker (no semaphores here); videos are recorded between episodes"]
    assert sorted(videos.scores) == [3, 4] and (tmp_path / "three.mp4").is_file() and (tmp_path / "four.mp4").is_file()


def test_train_writes_loadable_weights_and_metrics(tmp_path: Path) -> None:
    result = main.train(_tiny(tmp_path), out=lambda _: None, root=tmp_path)
    assert result.last_weights == result.run_dir / "last.pth"
    assert not (tmp_path / "weights.pth").exists()  # the checkpoint is written only by a run that solves
    net = Network(8, 4)
    net.load_state_dict(torch.load(result.last_weights, weights_only=True))
    with open(result.run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["episode"]) for r in rows] == [1, 2, 3]
    assert [float(r["score"]) for r in rows] == pytest.approx(result.scores, abs=1e-4)
    assert int(rows[-1]["total_steps"]) == result.total_steps
    assert float(rows[1]["epsilon"]) == pytest.approx(0.995)


def test_training_stops_at_target_score(tmp_path: Path) -> None:
    """With a target every run reaches, training stops at the first full 100-episode window."""
    cfg = _tiny(tmp_path, episodes=150, max_steps=5, target_score=-1e9)
    result = main.train(cfg, out=lambda _: None, root=tmp_path)
    assert result.solved_episode == 100 and len(result.scores) == 100
    kept = main.train(dataclasses.replace(cfg, episodes=103, keep_training=True), out=lambda _: None, root=tmp_path)
    assert kept.solved_episode == 100 and len(kept.scores) == 103


def _decode(path: Path) -> list[np.ndarray]:
    with imageio.get_reader(path, format="FFMPEG") as reader:
        meta = reader.get_meta_data()
        assert meta["codec"] == "h264"
        return list(reader.iter_data())


def test_record_video_is_decodable_h264(tmp_path: Path) -> None:
    from agent import Agent

    torch.manual_seed(0)
    agent = Agent(8, 4, rng=np.random.default_rng(0))
    path = tmp_path / "episode_0001.mp4"
    record_video(agent.greedy_action, "LunarLander-v3", 30, path, seed=0)
    frames = _decode(path)
    assert len(frames) == 31  # the reset frame plus one per step
    assert frames[0].shape == (400, 600, 3)
    assert frames[0].std() > 5  # a real picture, not a blank frame
    # The video, its thumbnail and what happened in it; no temporary file left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode_0001.json", "episode_0001.mp4", "episode_0001.webp"]
    summary = json.loads(path.with_suffix(".json").read_text())
    assert summary["length"] == len(frames) - 1 == 30 and summary["outcome"] == "timed out"
    with PIL.Image.open(path.with_suffix(".webp")) as thumbnail:
        assert thumbnail.size == (180, 120) and thumbnail.n_frames == 8  # frames 0, 4, ..., 28 of 31


def test_show_video_embeds_the_file(tmp_path: Path) -> None:
    from IPython.display import Video

    path = tmp_path / "episode_0050.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42fake-video-bytes")
    shown = main.show_video(str(path))
    assert isinstance(shown, Video)
    html = shown._repr_html_()
    assert "<video" in html and 'type="video/mp4"' in html and "base64," in html
    assert main.show_video(50, video_dir=tmp_path)._repr_html_() == html
    (tmp_path / "run_b").mkdir()
    newer = tmp_path / "run_b" / "episode_0050.mp4"
    newer.write_bytes(b"\x00\x00\x00\x18ftypmp42newer-bytes")
    os.utime(newer, (path.stat().st_mtime + 10,) * 2)
    assert main.show_video(50, video_dir=tmp_path)._repr_html_() == main.show_video(newer)._repr_html_() != html
    with pytest.raises(FileNotFoundError, match="no video"):
        main.show_video(100, video_dir=tmp_path)


def _run(root: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(root / "main.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_main_subprocess_tiny_run_writes_videos_and_last_weights(root: Path, tmp_path: Path) -> None:
    proc = _run(
        root,
        tmp_path,
        "--episodes",
        "2",
        "--max-steps",
        "40",
        "--video-every",
        "1",
        "--seed",
        "3",
        "--minibatch-size",
        "16",
        "--log-every",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    assert "episode     2" in proc.stdout
    videos = sorted((tmp_path / "videos").glob("*/*.mp4"))
    assert [v.name for v in videos] == ["episode_0001.mp4", "episode_0002.mp4"]
    frames = _decode(videos[0])
    assert len(frames) >= 2 and frames[0].shape == (400, 600, 3)
    (last,) = tmp_path.glob("runs/*/last.pth")
    Network(8, 4).load_state_dict(torch.load(last, weights_only=True))
    assert not (tmp_path / "checkpoint.pth").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--episodes", "-5"], "--episodes: must be at least 1"),
        (["--episodes", "ten"], "--episodes: expected a whole number, got 'ten'"),
        (["--epsilon-start", "1.5"], "--epsilon-start: must be between 0 and 1"),
        (["--epsilon-end", "-0.1"], "--epsilon-end: must be between 0 and 1"),
        (["--learning-rate", "nan"], "--learning-rate: expected a finite number"),
        (["--learning-rate", "0"], "--learning-rate: must be greater than 0"),
        (["--discount-factor", "abc"], "--discount-factor: expected a number, got 'abc'"),
        (["--device", "tpu"], "--device: invalid choice"),
        (["--epsilon-start", "0.1", "--epsilon-end", "0.5"], "must not exceed --epsilon-start"),
        (["--minibatch-size", "200", "--replay-buffer-size", "100"], "must be more than --minibatch-size"),
        (["--minibatch-size", "100", "--replay-buffer-size", "100"], "learning starts once the memory holds more"),
        (["--no-such-flag"], "unrecognized arguments"),
        (["--episode", "3"], "unrecognized arguments: --episode 3"),  # no abbreviations: a typo is not --episodes
        (["--evaluat", "x.pth"], "unrecognized arguments: --evaluat"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_flags_exit_with_one_line(root: Path, tmp_path: Path, args: list[str], message: str) -> None:
    proc = _run(root, tmp_path, *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        ("LunarLander-v2", "use --env LunarLander-v3"),
        ("NoSuchEnv-v0", "cannot create environment"),
        ("Lunarlander-v3", "cannot create environment 'Lunarlander-v3'"),  # a typo
        ("Pendulum-v1", "needs a discrete action space"),
    ],
)
def test_bad_environment_exits_with_one_line(root: Path, tmp_path: Path, env_id: str, message: str) -> None:
    proc = _run(root, tmp_path, "--env", env_id, "--episodes", "1", "--no-video")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []  # no empty run folder left behind (issue item 8)


def test_the_default_device_is_the_cpu_even_with_a_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue item 2: a 64-64 network ran 3.6x slower on an H200 than on the CPU; a GPU is for those who ask."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert main.Config().device == main.parse_config([]).device == "cpu"
    assert main.resolve_device("cpu") == torch.device("cpu")
    assert main.resolve_device("auto") == torch.device("cuda")  # auto still takes a GPU it is told of
    build_agent = main.build_agent
    devices: list[torch.device] = []

    def recording_build_agent(cfg, env, device, rng):
        devices.append(device)
        return build_agent(cfg, env, device, rng)

    monkeypatch.setattr(main, "build_agent", recording_build_agent)
    lines: list[str] = []
    main.train(main.Config(episodes=1, max_steps=20, video=False), out=lines.append, root=tmp_path)
    assert devices == [torch.device("cpu")]
    assert lines[0].startswith("run ") and " on cpu;" in lines[0]


@pytest.mark.parametrize("how", ["stdout closed at once", "| head -3"])
def test_a_closed_stdout_ends_quietly(root: Path, tmp_path: Path, how: str) -> None:
    """Issue item 6: ``python main.py --evaluate x.pth | head -3`` ends without a BrokenPipeError traceback."""
    torch.save(Network(8, 4).state_dict(), tmp_path / "w.pth")
    command = [sys.executable, str(root / "main.py"), "--evaluate", "w.pth", "--episodes", "2"]
    if how == "| head -3":
        proc = subprocess.run(
            f"{shlex.join(command)} | head -3", shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 3
        assert proc.stderr == ""
        return
    child = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # the reader is gone before the first line: every write fails
    _, err = child.communicate(timeout=120)
    assert err == b"" and child.returncode == 141  # 128 + SIGPIPE, as a process a closed pipe ends
