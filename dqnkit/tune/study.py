"""The study of ``tune.py``: its storage, sampler and pruner, and what makes a study the same study. Storage
as Optuna advises: a journal file for one machine's processes, PostgreSQL (with heartbeats) for several."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqnkit.errors import UserError, first_line
from dqnkit.run.files import RUNS_DIR, _alive, check_writable
from dqnkit.settings import PRESETS
from dqnkit.tune.space import SPACES, params_of
from dqnkit.tune.trial import OBJECTIVES, TrialPlan

TUNE_DIR = RUNS_DIR / "tune"
N_STARTUP_TRIALS = 10  # random trials before TPE models the results (rl-baselines3-zoo's default)
MEDIAN_STARTUP_TRIALS = 5  # finished trials before the median pruner prunes anything
DATABASES = ("postgresql", "mysql")  # SQLite is left out: parallel writers lock it ("database is locked")


@dataclass
class StudySpec:
    """A study as the command names it: where it is stored and what it searches (``plan``)."""

    name: str
    storage: str  # an absolute journal path (.log) or a database URL
    plan: TrialPlan
    sampler: str = "tpe"
    pruner: str = "median"
    heartbeat_interval: int = 60
    grace_period: int = 120

    @property
    def directions(self) -> tuple[str, ...]:
        return OBJECTIVES[self.plan.objective]

    def identity(self) -> dict[str, Any]:
        """What a study keeps from its first command, its space as text too: a later command must ask for the same."""
        plan, budget = self.plan, dataclasses.asdict(self.plan.base)
        del budget["seed"]
        fingerprint = json.dumps([[p.name, p.kind, list(p.values)] for p in SPACES[plan.space]])
        space = {"space": plan.space, "space_fingerprint": fingerprint}
        # One seed a trial leaves no key: the identity of the studies made before --seeds-per-trial.
        seeds = {"seeds_per_trial": plan.seeds_per_trial} if plan.seeds_per_trial != 1 else {}
        return {"objective": plan.objective, **space, "seed": plan.seed, **seeds, "budget": budget}


def storage_location(given: str | None, name: str, root: Path = Path()) -> str:
    """``--storage`` as workers open it: a journal path made absolute under ``root`` or a database URL; or UserError."""
    given = str(TUNE_DIR / f"{name}.log") if given is None else given
    if given.endswith(".log") and "://" not in given:
        return str((root / given).resolve())
    from sqlalchemy import exc, make_url

    try:
        url = make_url(given)
        url.port  # noqa: B018 - parsing the port is where "host:abc" fails
    except (exc.ArgumentError, ValueError):
        url = None
    if url is None or url.get_backend_name() not in DATABASES:
        raise UserError(
            f"--storage {given!r} is neither a journal file (a path ending in .log) nor a database URL "
            "(postgresql://user:password@host:port/database); SQLite cannot take parallel workers"
        )
    return given


def open_storage(spec: StudySpec) -> Any:
    """The Optuna storage of ``spec``; a database that cannot be opened is a one-line :class:`UserError`."""
    import optuna

    if "://" not in spec.storage:
        return journal_storage(Path(spec.storage))
    connect = {"connect_args": {"connect_timeout": 10}} if spec.storage.startswith("postgresql") else {}
    beats = {"heartbeat_interval": spec.heartbeat_interval, "grace_period": spec.grace_period}
    try:
        with warnings.catch_warnings():  # heartbeat_interval is "experimental" in Optuna 5.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(spec.storage, engine_kwargs={"pool_pre_ping": True, **connect}, **beats)
    except Exception as exc:  # the line that says what went wrong, without SQLAlchemy's wrapping
        error = first_line(Exception(str(getattr(exc, "orig", None) or exc))).removeprefix("connection failed: ")
        if isinstance(exc, ImportError):
            error = "the driver is missing: pip install -r requirements-tune.txt"
        raise UserError(f"cannot open --storage {hide_password(spec.storage)}: {error}") from None


def journal_storage(path: Path) -> Any:
    """The journal file ``path`` as an Optuna storage; a file that is not a journal is a one-line :class:`UserError`.
    Opening creates a missing file: :func:`open_study` opens one only once every check has passed."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    try:  # Optuna would skip a first line it cannot read, then append to the file
        with open(path, "rb") as fh:
            entry = json.loads(fh.readline() or b'{"op_code": 0}')  # an empty file is a new journal
    except FileNotFoundError:
        entry = {"op_code": 0}
    except ValueError:
        entry = None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(entry, dict) or "op_code" not in entry:
        raise UserError(f"{path} is not an Optuna journal file: its first line is no journal entry")
    try:
        storage = JournalStorage(JournalFileBackend(str(path)))
        storage.get_all_studies()  # reads the file through
        return storage
    except Exception as exc:
        raise UserError(f"{path} is not an Optuna journal file ({type(exc).__name__}: {first_line(exc)})") from None


def hide_password(url: str) -> str:
    """``url`` with its password as ``***``."""
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


def make_sampler(spec: StudySpec) -> PerTrialSeed:
    """Seeded TPE (multivariate, as rl-baselines3-zoo) or random sampling, seeded afresh for every trial."""
    return PerTrialSeed(spec.sampler, spec.plan.seed)


class PerTrialSeed:
    """A sampler whose draws for trial N depend only on the study seed, N and the trials before it: the storage
    numbers trials once across workers, commands and machines, so no two trials share a seed (one seed per worker
    let two commands started together draw the same settings)."""

    def __init__(self, kind: str, study_seed: int) -> None:
        self.kind, self.study_seed = kind, study_seed
        self.inner = self.make(-1)

    def make(self, number: int) -> Any:
        import optuna

        seed = int.from_bytes(hashlib.sha256(f"{self.study_seed}:{number}".encode()).digest()[:4], "big")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if self.kind == "random":
                return optuna.samplers.RandomSampler(seed=seed)
            return optuna.samplers.TPESampler(n_startup_trials=N_STARTUP_TRIALS, seed=seed, multivariate=True)

    def before_trial(self, study: Any, trial: Any) -> None:  # Optuna calls it before any draw of the trial
        self.inner = self.make(trial.number)
        self.inner.before_trial(study, trial)

    def __getattr__(self, name: str) -> Any:  # sample_relative, after_trial, ...: the sampler of the trial
        if name == "inner":  # not set yet: no endless recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def make_pruner(spec: StudySpec) -> Any:
    """The pruner, on each evaluation's mean at its episode. median: not before a third of the budget
    (rl-baselines3-zoo's warm-up) nor 5 finished trials; halving: rungs at a ninth, a third and all of it."""
    import optuna

    episodes = spec.plan.base.episodes
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=episodes // 3)
    if spec.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, episodes // 9), reduction_factor=3)
    return optuna.pruners.NopPruner()


def check_identity(study: Any, spec: StudySpec) -> None:
    """Refuse, in one line, a study made with another objective, search space, seed, seeds per trial or budget."""
    saved, wanted = study.user_attrs.get("tune"), spec.identity()
    if saved is None:
        raise UserError(f"study {spec.name} in {spec.storage} was not made by tune.py; give another --study")
    if saved["space"] == wanted["space"] and saved["space_fingerprint"] != wanted["space_fingerprint"]:
        raise UserError(f"study {spec.name} searched another version of --space {saved['space']}; give another --study")
    for key in ("objective", "space", "seed", "seeds_per_trial"):
        was, asked, flag = saved.get(key, 1), wanted.get(key, 1), "--" + key.replace("_", "-")  # 1: one seed a trial
        if was != asked:
            raise UserError(
                f"study {spec.name} exists with {flag} {was}, not {asked}: "
                f"give {flag} {was} to continue it, or another --study"
            )
    if changed := [k for k in wanted["budget"] if saved["budget"].get(k) != wanted["budget"][k]]:
        was = ", ".join(f"--{k.replace('_', '-')} {saved['budget'].get(k)}" for k in changed)
        raise UserError(f"study {spec.name} exists with {was}: give the same budget to continue it, or another --study")


def open_study(spec: StudySpec) -> Any:
    """Load the study, checked to be the same, or create it with the original defaults and ``--preset fast``'s
    settings queued first; one line on any problem, and nothing written before every check has passed."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # tune.py prints a line of its own for each trial
    named = {"study_name": spec.name, "sampler": make_sampler(spec), "pruner": make_pruner(spec)}
    journal = "://" not in spec.storage
    storage = open_storage(spec) if not journal or Path(spec.storage).exists() else None  # opening creates a journal
    if storage is not None and spec.name in optuna.get_all_study_names(storage):
        study = optuna.load_study(storage=storage, **named)
        check_identity(study, spec)
        return study
    if leftovers := sorted(spec.plan.folder.glob("trial-*")):
        raise UserError(
            f"{spec.plan.folder} holds trials of an earlier study {spec.name} whose storage has no such study "
            f"({leftovers[0].name}, ...); move that folder away or give another --study"
        )
    check_writable(spec.plan.folder, "the study's files")
    if journal:
        check_writable(Path(spec.storage).parent, "the study's journal")
        Path(spec.storage).parent.mkdir(parents=True, exist_ok=True)
    spec.plan.folder.mkdir(parents=True, exist_ok=True)
    storage = storage or open_storage(spec)
    study = optuna.create_study(storage=storage, directions=spec.directions, load_if_exists=True, **named)
    if "tune" in study.user_attrs:  # another machine made it a moment ago: continue that one
        check_identity(study, spec)
        return study
    study.set_user_attr("tune", spec.identity())
    base = spec.plan.base
    starts = {"the original defaults": base, "--preset fast": dataclasses.replace(base, **PRESETS["fast"])}
    for what, cfg in starts.items():
        try:
            params = params_of(cfg, spec.plan.space)
        except ValueError:  # a space that leaves it out (--space fast left out the preset of 2026-11-26)
            continue
        study.enqueue_trial(params, user_attrs={"start": what}, skip_if_exists=True)
    return study


def fail_orphaned_trials(study: Any) -> list[int]:
    """Fail the RUNNING trials of this machine whose worker process (``host:pid``, the ``worker`` user
    attribute) is gone; return their numbers. A journal file has no heartbeat to do it."""
    from optuna.trial import TrialState

    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        name, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if name == host and pid.isdigit() and not _alive(int(pid)):
            # Optuna has no public call to annotate another worker's trial; its own callbacks use the storage.
            study._storage.set_trial_user_attr(trial._trial_id, "reason", f"its worker (process {pid}) was killed")
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(trial.number)
    return failed


def requeue_unfinished(study: Any) -> list[int]:
    """Queue again, once each (``retry_of``), the settings of trials that Ctrl-C or a killed worker stopped,
    so that the next command runs them (the original defaults, say); return their numbers."""
    trials = study.get_trials(deepcopy=False)
    queued = {t.user_attrs.get("retry_of") for t in trials}
    again = []
    for trial in trials:
        stopped = str(trial.user_attrs.get("reason", "")).startswith(("interrupted", "its worker"))
        if trial.state.name == "FAIL" and stopped and trial.number not in queued:
            attrs = {"retry_of": trial.number, **{k: v for k, v in trial.user_attrs.items() if k == "start"}}
            study.enqueue_trial(trial.params, user_attrs=attrs)
            again.append(trial.number)
    return again
