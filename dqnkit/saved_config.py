"""Settings read back from disk: ``--config FILE`` (a run's ``config.json``, ``tune.py``'s ``best_config.json``)
and those a resumed run goes on with (its training state's)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from dqnkit.errors import UserError

# What a resumed run may change: how long it goes on and what it writes, never how it learns.
RESUME_OVERRIDABLE = frozenset(
    ("episodes", "keep_training", "video", "video_every", "log_every", "save_every", "checkpoint", "device")
    + ("target_score", "eval_target", "eval_landed")
)


def read_config_file(path: str | os.PathLike, config_cls: type) -> dict[str, Any]:
    """The settings of a JSON config file (``config.json``, ``best_config.json``), each checked as its flag is.

    Every way the file can be unusable is a one-line :class:`UserError`: unreadable, not JSON, not
    one object, a name that is no setting, or a value its flag would refuse.
    """
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"--config {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise UserError(f"--config {path} is not JSON ({getattr(exc, 'msg', exc)}{where})") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path} must hold one JSON object of settings, not {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    if unknown := sorted(set(data) - set(fields)):
        raise UserError(f"--config {path} names settings this version does not have: {', '.join(unknown)}")
    return {name: _checked_value(fields[name], value, path) for name, value in data.items()}


def _checked_value(f: dataclasses.Field, value: Any, path: str | os.PathLike) -> Any:
    """``value`` for field ``f`` if its flag would take it, else a one-line :class:`UserError`."""
    flag, check, choices = "--" + f.name.replace("_", "-"), f.metadata.get("type"), f.metadata.get("choices")
    wanted = bool if isinstance(f.default, bool) else type(f.default)
    if value is None and f.default is None:
        return None
    if f.default is None:  # a number that may be left out (--eval-target)
        wanted = float
    kinds = (int, float) if wanted is float else (wanted,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and wanted is not bool):
        raise UserError(f"--config {path}: {f.name} must be {wanted.__name__}, got {value!r}")
    if choices is not None and value not in choices:
        raise UserError(f"--config {path}: {f.name} must be one of {', '.join(choices)}, got {value!r}")
    if check is not None:
        try:
            value = check(repr(value) if isinstance(value, float) else str(value))
        except argparse.ArgumentTypeError as exc:
            raise UserError(f"--config {path}: {f.name} ({flag}) {exc}") from None
    return float(value) if wanted is float else value


def resumed_config(cfg: Any, given: Collection[str], saved: Any, source: str) -> Any:
    """The configuration a resumed run goes on with: ``saved``, with the given flags it may change.

    A flag that would change how the run learns (anything outside :data:`RESUME_OVERRIDABLE`)
    is refused with a :class:`UserError` when its value differs from the saved one.
    """
    changed = sorted(
        f"--{k.replace('_', '-')}" for k in set(given) - RESUME_OVERRIDABLE if getattr(cfg, k) != getattr(saved, k)
    )
    if changed:
        raise UserError(
            f"{', '.join(changed)} cannot change when resuming: the run goes on with the settings saved in {source}"
        )
    return dataclasses.replace(saved, **{k: getattr(cfg, k) for k in set(given) & RESUME_OVERRIDABLE})
