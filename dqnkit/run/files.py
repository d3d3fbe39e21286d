"""Files that survive a crash: atomic writes, safe loading, run folders and the resumable training state."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from dqnkit.errors import UserError

if TYPE_CHECKING:
    import gymnasium as gym

    from agent import Agent
    from nnetwork import Network

RUNS_DIR = Path("runs")
STATE_FORMAT = "lunarlander-dqn-training-state"
STATE_FILE = "training_state.pth"
_UMASK = os.umask(0)
os.umask(_UMASK)


# ---------------------------------------------------------------- atomic writes


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> None:
    """Call ``write(tmp_path)``, then rename the temporary file onto ``path``.

    For writers that need a file name (ffmpeg); :func:`atomic_write_file` is for those that take a
    file object. The temporary file sits in the same folder, so the rename is atomic: a crash at
    any moment leaves either the old complete file or the new complete one.
    """

    def fill(fd: int, tmp: str) -> None:
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())

    _replace(Path(path), fill, suffix)


def atomic_write_file(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(fh)`` on an open binary temporary file, then rename it onto ``path``.

    The file is closed here whatever ``write`` does. A writer that opens the file by name may
    keep it open when it fails: ``torch.save(obj, name)`` on a full disk left its descriptor
    open, so the unlinked file kept its space and the next write failed too.
    """

    def fill(fd: int, tmp: str) -> None:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())

    _replace(Path(path), fill)


def _replace(path: Path, fill: Callable[[int, str], None], suffix: str = "") -> None:
    """Fill a new temporary file beside ``path`` (``fill`` closes its descriptor), then rename it onto ``path``.

    On any failure the temporary file is removed and ``path`` is left as it was; a full disk or
    an unwritable folder becomes a one-line :class:`UserError`, a Ctrl-C stays a KeyboardInterrupt.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The writer's process id in the name tells a live save from the leftover of a killed one.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp" + suffix)
    except OSError as exc:
        raise UserError(f"cannot save {path}: {exc.strerror or exc}") from None
    try:
        fill(fd, tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        # torch.save wraps what its file raised in a RuntimeError; the cause is what the user can act on.
        if not isinstance(exc, KeyboardInterrupt) and _caused_by(exc, KeyboardInterrupt) is not None:
            raise KeyboardInterrupt from None
        if (os_error := _caused_by(exc, OSError)) is not None:
            kept = f"; the previous {path.name} is unchanged" if path.is_file() else ""
            raise UserError(f"cannot save {path}: {os_error.strerror or os_error}{kept}") from None
        raise


def _caused_by(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first exception of ``kind`` in its chain of causes, else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write_file`."""
    import torch

    atomic_write_file(path, lambda fh: torch.save(obj, fh))


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    atomic_write_file(path, lambda fh: fh.write(text.encode()))


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy ``source`` to ``target`` atomically."""
    data = Path(source).read_bytes()
    atomic_write_file(target, lambda fh: fh.write(data))


# A temporary file of :func:`atomic_write`: ``.<name>.<pid>.<8 random characters>.tmp[.ext]``;
# files of older versions have no pid.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp(?:\.\w+)?$")


def remove_stale_temp_files(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temporary files a killed save left in ``folder`` (of file ``name`` only, if given).

    A temporary file whose writing process is still alive is a save in progress and stays.
    Returns the files removed.
    """
    removed = []
    with contextlib.suppress(OSError):
        for entry in sorted(Path(folder).iterdir()):
            match = _TEMP_NAME.match(entry.name)
            if match is None or (name is not None and match["name"] != name) or not entry.is_file():
                continue
            if match["pid"] is not None and _alive(int(match["pid"])):
                continue
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    """True if process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a number no process can have
        return False
    except PermissionError:  # another user's process
        return True
    return pid > 0


# ---------------------------------------------------------------- run folders


def check_writable(folder: Path, what: str) -> Path:
    """Fail before training, not after it, when an output folder cannot be written.

    Creates nothing: it writes and removes a probe file in the folder, or in the
    nearest folder above it that exists (the one the missing folders will go in),
    and returns that folder.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # exists() follows links: a link to nowhere would fail every write later
            target = os.readlink(existing)
            raise UserError(f"cannot write {what} to {folder}/: {existing} is a link to {target}, which leads nowhere")
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write {what} to {folder}/: {exc.strerror or exc}") from None
    return existing


# The longest name a temporary file of atomic_write adds to a file's: ".<name>.<pid>.<8 characters>.tmp.<ext>".
TEMP_EXTRA = len(".") + len(".4194304.") + 8 + len(".tmp.webp")


def check_file_path(path: Path, what: str) -> None:
    """Fail before training, not when the file is first written: ``path`` must be a file name that can be written.

    Not a folder; in a folder that can be written (:func:`check_writable`); and short enough
    that its temporary twin's name (:func:`atomic_write`) fits the file system's limit.
    """
    if path.is_dir():
        raise UserError(f"{what} path {path} is a folder; give a file path, such as {path / 'checkpoint.pth'}")
    existing = check_writable(path.parent, what)
    try:
        most = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows), or no limit to tell
        return
    if len(os.fsencode(path.name)) + TEMP_EXTRA > most:
        raise UserError(
            f"{what}'s file name ({len(os.fsencode(path.name))} bytes) is too long for this file system: "
            f"{most} at most, and saving it safely adds up to {TEMP_EXTRA}; give a shorter name"
        )


LOCK_FILE = ".lock"  # in a run's folder, locked while a process trains there


class RunLock:
    """An exclusive lock on a run's folder while one process trains in it.

    Two processes resuming the same run would append to one ``metrics.csv`` and overwrite each
    other's training state; the second is refused in one line instead. The lock is an ``flock``
    on ``<run>/lock``, which the operating system drops when its process ends, however it ends,
    so a crashed run never leaves a stale lock. Where ``fcntl`` is missing (Windows) it does nothing.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self._file: BinaryIO | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`UserError` if another process holds it."""
        try:
            import fcntl
        except ImportError:  # Windows: no flock
            return
        handle = open(self.path, "a+b")  # noqa: SIM115 - held open for the run's life; closed by release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise UserError(
                f"{self.path.parent} is in use: another process is training in it; wait for it to stop, "
                "or stop it (Ctrl-C saves its state) and resume then"
            ) from None
        self._file = handle

    def release(self) -> None:
        """Let go of the lock (closing the file releases it); nothing to do if not held."""
        if self._file is not None:
            self._file.close()
            self._file = None


def run_name(cfg: Any, start: float) -> str:
    """``{env}__seed{seed}__{YYYYmmdd-HHMMSS}``: sortable, and says what the run was."""
    return f"{cfg.env}__seed{cfg.seed}__{time.strftime('%Y%m%d-%H%M%S', time.localtime(start))}"


def new_run_dir(parent: Path, name: str) -> Path:
    """Create ``parent/name`` for a new run, or ``name-2``, ``name-3``... if another run has it.

    ``mkdir`` without ``exist_ok`` is atomic: of two runs started in the same second
    with the same seed, exactly one gets each name, so they never share files.
    """
    check_writable(parent, "the run's files")
    for n in range(1, 1000):
        path = parent / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir(parents=True)  # still raises FileExistsError for the run folder itself
            return path
        except FileExistsError:
            continue
    raise UserError(f"too many runs named {name} in {parent}/")


# ---------------------------------------------------------------- safe loading


def load_file(path: str | os.PathLike) -> Any:
    """Load a ``.pth`` file safely: tensors and plain data only, never code.

    ``weights_only=True`` makes the unpickler refuse anything but tensors, numbers,
    strings and containers, so a file from a stranger cannot run code on load.
    Every way a file can be unusable becomes a one-line :class:`UserError`.
    """
    import pickle

    import torch

    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file")
    if not p.is_file():
        raise UserError(f"{p} is not a file")
    if p.stat().st_size == 0:
        raise UserError(f"{p} is empty, not a checkpoint (an interrupted copy?)")
    with open(p, "rb") as fh:
        head = fh.read(4)
    # torch.save writes a zip archive; very old PyTorch wrote a bare pickle (protocol byte 0x80).
    if head != b"PK\x03\x04" and head[:1] != b"\x80":
        raise UserError(f"{p} is not a PyTorch checkpoint file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing; one line is enough
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():  # the safe unpickler met something beyond plain data
            raise UserError(
                f"{p} holds more than tensors and plain data (Python objects or pickle code); "
                "refusing to load it, since that could run code"
            ) from None
        raise UserError(f"{p} is not a complete checkpoint (truncated or corrupt); use an intact copy") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, ImportError):
        raise UserError(f"{p} is not a complete checkpoint (truncated or corrupt); use an intact copy") from None


def network_from_weights(weights: Any, source: str | os.PathLike) -> Network:
    """A :class:`nnetwork.Network` (or ``DuelingNetwork``) shaped like ``weights`` (a state_dict), loaded."""
    import torch

    from nnetwork import DuelingNetwork, Network

    keys = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias")
    if not isinstance(weights, dict) or not all(isinstance(weights.get(k), torch.Tensor) for k in keys):
        raise UserError(f"{source} is not a checkpoint of this project (no fc1/fc2/fc3 network weights in it)")
    hidden, state_size = weights["fc1.weight"].shape
    network = DuelingNetwork if "value.weight" in weights else Network
    net = network(state_size, weights["fc3.weight"].shape[0], hidden)
    try:
        net.load_state_dict(weights)
    except RuntimeError:
        raise UserError(f"{source} holds a network whose layers do not fit together ({_shape(weights)})") from None
    return net


def _shape(weights: dict) -> str:
    """``8-64-64-4``: the layer sizes of a state_dict."""
    return "-".join([str(weights["fc1.weight"].shape[1])] + [str(weights[f"fc{i}.weight"].shape[0]) for i in (1, 2, 3)])


def check_network_fits(net: Network, env: gym.Env, source: str | os.PathLike) -> None:
    """The network must take this environment's observations and give one value per action."""
    obs, actions = env.observation_space.shape[0], int(env.action_space.n)
    if (net.state_size, net.action_size) != (obs, actions):
        raise UserError(
            f"{source} holds a network for {net.state_size} observations and {net.action_size} actions, "
            f"but {env.spec.id} has {obs} and {actions}"
        )


# ---------------------------------------------------------------- training state


def is_training_state(obj: Any) -> bool:
    """True for what :func:`save_training_state` writes."""
    return isinstance(obj, dict) and obj.get("format") == STATE_FORMAT


def save_training_state(path: Path, agent: Agent, env: gym.Env, cfg: Any, progress: dict[str, Any]) -> None:
    """Write everything a run needs to continue exactly where it is, atomically.

    ``cfg`` is the run's configuration, a dataclass instance; the random states are
    Python's, PyTorch's and the environment's (NumPy's generator travels in the agent).
    """
    import torch

    state = {
        "format": STATE_FORMAT,
        "version": 1,
        "config": dataclasses.asdict(cfg),
        "agent": agent.state_dict(),
        "progress": progress,
        "rng": {
            "python": random.getstate(),
            "torch": torch.get_rng_state(),
            "env": env.unwrapped.np_random.bit_generator.state,
            "action_space": env.action_space.np_random.bit_generator.state,
        },
    }
    save_torch(state, path)


def restore_training_state(saved: dict[str, Any], agent: Agent, env: gym.Env) -> dict[str, Any]:
    """Put what :func:`save_training_state` saved back into ``agent`` and the random states; return the progress."""
    import torch

    agent.load_state_dict(saved["agent"])
    random.setstate(saved["rng"]["python"])
    torch.set_rng_state(saved["rng"]["torch"])
    env.unwrapped.np_random.bit_generator.state = saved["rng"]["env"]
    env.action_space.np_random.bit_generator.state = saved["rng"]["action_space"]
    return saved["progress"]


def load_training_state(path: str | os.PathLike, config_cls: Callable[..., Any]) -> dict[str, Any]:
    """Load and check a training state written by :func:`save_training_state`.

    ``config_cls`` is the configuration class the run was saved with; its saved fields must fit it.
    """
    state = load_file(path)
    if not is_training_state(state):
        if isinstance(state, dict) and "fc1.weight" in state:
            raise UserError(f"{path} holds only network weights; --resume needs a {STATE_FILE} from a run folder")
        raise UserError(f"{path} is not a training state of this project")
    try:
        config_cls(**state["config"])
        for key in ("agent", "progress", "rng"):
            state[key]  # noqa: B018 - presence check
    except (TypeError, KeyError) as exc:
        raise UserError(f"{path} is a training state from an incompatible version ({exc})") from None
    return state
