"""tune.py against a real PostgreSQL server, started here: several workers on one study, heartbeats.

The server is PostgreSQL's own binaries (Debian's ``postgresql`` package, which ``.ci/run`` installs),
in a temporary folder, on 127.0.0.1 and a free port, for this test session only. PostgreSQL refuses
to run as root, so as root (CI) its binaries run as the ``postgres`` user, which that package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from test_tuning import TINY, start_tune, tune, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT/postgres`` of a server that lives as long as the test session."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip(
            "PostgreSQL's server binaries are not installed (.ci/run installs them: apt-get install postgresql)"
        )
    bindir = Path(found[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="dqn-postgres-"))  # under /tmp, which the postgres user can reach
    as_server = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        as_server = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    ctl = [*as_server, str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run(
            [*as_server, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [*ctl, "-o", options, "-l", str(folder / "log"), "-w", "start"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "-m", "fast", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def _study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def test_two_workers_count_each_trial_once_and_the_cap_holds(postgres_url: str, tmp_path: Path) -> None:
    done = tune(
        tmp_path,
        "--study",
        "pg-cap",
        "--storage",
        postgres_url,
        "--jobs",
        "2",
        "--trials",
        "20",
        "--max-total-trials",
        "5",
        *TINY,
    )
    assert done.returncode == 0, done.stderr
    trials = _study(postgres_url, "pg-cap").trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4] and all(t.state.is_finished() for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2
    lines = [line for line in done.stdout.splitlines() if line.startswith("trial ")]
    assert sorted(int(line.split()[1]) for line in lines) == [0, 1, 2, 3, 4], "each trial reported once"
    assert done.stdout.startswith(f"study pg-cap in postgresql://postgres@127.0.0.1:{postgres_url.rsplit(':', 1)[1]}")


def test_a_killed_machine_leaves_its_trial_failed_by_heartbeat_and_the_other_goes_on(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two commands on one study, as on two machines; one is killed (SIGKILL) with its worker mid-trial."""
    budget = ["--episodes", "25", "--max-steps", "100", "--eval-every", "5", "--eval-episodes", "2"]
    common = [
        "--study",
        "pg-beat",
        "--storage",
        postgres_url,
        "--heartbeat-interval",
        "1",
        "--grace-period",
        "3",
        *budget,
        "--eval-target",
        "1000",
        "--max-total-trials",
        "7",
    ]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    survivor = start_tune(tmp_path / "a", *common, "--trials", "8")
    wait_for(lambda: _has_study(postgres_url), 60, "the study")
    victim = start_tune(tmp_path / "b", *common, "--trials", "8")
    try:

        def victims_trial() -> list:
            return [
                t
                for t in _study(postgres_url, "pg-beat").get_trials(states=(optuna.trial.TrialState.RUNNING,))
                if t.intermediate_values and t.user_attrs.get("worker", "").endswith(f":{_worker_of(victim)}")
            ]

        wait_for(victims_trial, 90, "a trial of the second command")
        trial = victims_trial()[0]
        os.kill(_worker_of(victim), signal.SIGKILL)  # the machine goes: its worker and its command
        victim.kill()
        victim.communicate()
        # The survivor's worker fails it once the grace period is over, while it still runs trials.
        wait_for(lambda: _study(postgres_url, "pg-beat").trials[trial.number].state.name == "FAIL", 60, "the heartbeat")
        assert survivor.poll() is None, "failed by the heartbeat, not by the survivor's end"
        out, err = survivor.communicate(timeout=240)
    finally:
        survivor.kill()
        victim.kill()
    assert survivor.returncode == 0, err
    trials = _study(postgres_url, "pg-beat").trials
    assert len(trials) == 7 and not [t for t in trials if not t.state.is_finished()]
    assert "reason" not in trials[trial.number].user_attrs, "the heartbeat failed it, not a command on its machine"
    after = [t for t in trials if t.number > trial.number and t.state.name == "COMPLETE"]
    assert after, "the other command went on"


def _has_study(url: str) -> bool:
    try:
        return bool(optuna.get_all_study_names(storage=url).count("pg-beat"))
    except Exception:
        return False


def _worker_of(command: subprocess.Popen) -> int:
    """The process id of the one worker of a ``--jobs 1`` command."""
    children = subprocess.run(
        ["pgrep", "-P", str(command.pid), "-f", "multiprocessing.spawn"], capture_output=True, text=True
    ).stdout.split()
    return int(children[0]) if children else -1
