"""Files that survive a crash: atomic writes, stale temporary files, output checks, safe loading, the training state."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import random
import re
import tempfile
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
_UMASK = os.umask(0)  # the only way to read the umask is to set it: once, at import
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> None:
    """Call ``write(tmp_path)`` (for writers that need a file name: ffmpeg), then rename it onto ``path``."""
    _replace(Path(path), write, suffix, by_name=True)


def atomic_write_file(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(fh)`` on an open temporary file, then rename it onto ``path``."""
    _replace(Path(path), write)


def _replace(path: Path, write: Callable[[Any], None], suffix: str = "", by_name: bool = False) -> None:
    """Fill a temporary file beside ``path`` with ``write``, then rename it onto ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The writer's process id in the name tells a live save from the leftover of a killed one.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp" + suffix)
    except OSError as exc:
        raise UserError(f"cannot save {path}: {exc.strerror or exc}") from None
    try:
        if by_name:
            os.close(fd)
            write(tmp)
        # Closed here whatever write does: torch.save(obj, name) on a full disk left its file open, holding the space.
        with open(tmp, "rb+") if by_name else os.fdopen(fd, "wb") as fh:
            if not by_name:
                write(fh)
                fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)  # atomic in the same folder: a crash leaves the old complete file or the new one
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        # torch.save wraps what its file raised in a RuntimeError; the cause is what the user can act on.
        if not isinstance(exc, KeyboardInterrupt) and _caused_by(exc, KeyboardInterrupt) is not None:
            raise KeyboardInterrupt from None
        if (os_error := _caused_by(exc, OSError)) is not None:
            kept = f"; the previous {path.name} is unchanged" if path.is_file() else ""
            raise UserError(f"cannot save {path}: {os_error.strerror or os_error}{kept}") from None
        raise


def _caused_by(exc: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first exception of ``kind`` in its chain of causes, else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
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


# A temporary file of :func:`_replace`: ``.<name>.<pid>.<8 random characters>.tmp[.ext]``; older versions had no pid.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp(?:\.\w+)?$")
# The longest name a temporary file adds to a file's: ".<name>.<pid>.<8 characters>.tmp.<ext>".
TEMP_EXTRA = len(".") + len(".4194304.") + 8 + len(".tmp.webp")


def remove_stale_temp_files(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove and return the temporary files a killed save left in ``folder`` (of file ``name`` only, if given)."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in sorted(Path(folder).iterdir()):
            match = _TEMP_NAME.match(entry.name)
            if match is None or (name is not None and match["name"] != name) or not entry.is_file():
                continue
            if match["pid"] is not None and _alive(int(match["pid"])):  # a save in progress
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


def check_writable(folder: Path, what: str) -> Path:
    """Fail before training when ``folder`` cannot be written, creating nothing; return its nearest existing folder."""
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


def check_file_path(path: Path, what: str) -> None:
    """Fail before training when ``path`` is a folder, in one that cannot be written, or too long a name to save."""
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


def load_file(path: str | os.PathLike) -> Any:
    """Load a ``.pth`` file: tensors and plain data only (``weights_only``), never code; a bad file is one line."""
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
    broken = f"{p} is not a complete checkpoint (truncated or corrupt); use an intact copy"
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
        raise UserError(broken) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, ImportError):
        raise UserError(broken) from None


def network_from_weights(weights: Any, source: str | os.PathLike) -> Network:
    """A :class:`nnetwork.Network` (or ``DuelingNetwork``) shaped like ``weights`` (a state_dict), loaded."""
    import torch

    from nnetwork import DuelingNetwork, Network

    keys = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias")
    if not isinstance(weights, dict) or not all(isinstance(weights.get(k), torch.Tensor) for k in keys):
        raise UserError(f"{source} is not a checkpoint of this project (no fc1/fc2/fc3 network weights in it)")
    hidden, state_size = weights["fc1.weight"].shape
    network = DuelingNetwork if "value.weight" in weights else Network
    net = network(state_size, weights["fc3.weight"].shape[0], hidden_size=hidden)
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


def is_training_state(obj: Any) -> bool:
    """True for what :func:`save_training_state` writes."""
    return isinstance(obj, dict) and obj.get("format") == STATE_FORMAT


def save_training_state(path: Path, agent: Agent, env: gym.Env, cfg: Any, history: dict[str, Any]) -> None:
    """Save all a run needs to go on exactly; NumPy's random generator travels in the agent's state."""
    import torch

    rng = {"python": random.getstate(), "torch": torch.get_rng_state()}
    rng["env"], rng["action_space"] = (g.np_random.bit_generator.state for g in (env.unwrapped, env.action_space))
    state = {"format": STATE_FORMAT, "version": 1, "config": dataclasses.asdict(cfg), "agent": agent.state_dict()}
    save_torch({**state, "progress": history, "rng": rng}, path)


def restore_training_state(saved: dict[str, Any], agent: Agent, env: gym.Env) -> dict[str, Any]:
    """Put what :func:`save_training_state` saved back into ``agent`` and the random states; return the history."""
    import torch

    agent.load_state_dict(saved["agent"])
    random.setstate(saved["rng"]["python"])
    torch.set_rng_state(saved["rng"]["torch"])
    env.unwrapped.np_random.bit_generator.state = saved["rng"]["env"]
    env.action_space.np_random.bit_generator.state = saved["rng"]["action_space"]
    return saved["progress"]


def load_training_state(path: str | os.PathLike, config_cls: Callable[..., Any]) -> dict[str, Any]:
    """Load a training state written by :func:`save_training_state`, whose settings must fit ``config_cls``."""
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
