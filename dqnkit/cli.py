"""The command line: flags built from the configuration dataclass it is handed, a grouped --help, one-line errors.

Each field of the configuration is declared with :func:`setting`, which carries the field's help,
its validator and its ``--help`` group; :func:`build_parser` turns every field into a ``--flag``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

from dqnkit.errors import UserError
from dqnkit.run.batch import seeds_problem
from dqnkit.run.files import STATE_FILE
from dqnkit.saved_config import read_config_file

PROG = "main.py"
DESCRIPTION = "Train a Deep Q-Network on LunarLander (defaults: the original hyperparameters)."

# The --help groups, in the order they are shown; every configuration field names one of the first three.
ORIGINAL = "the original hyperparameters"
RUN = "run and output"
BEYOND = "beyond the original"
ACTIONS = "actions"
GROUP_DESCRIPTIONS = {
    ORIGINAL: "the defaults are those of the original DQN",
    RUN: "where a run goes, what it shows and what it keeps",
    BEYOND: "later improvements, each off by default",
    ACTIONS: "other than training from scratch",
}


def _number(text: str, kind: Callable[[str], Any], what: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _bounded(kind: type, within: Callable[[Any], bool], must: str, doc: str) -> Callable[[str], Any]:
    """A flag's validator: ``text`` as ``kind`` (finite), refused in one line unless ``within(value)``."""

    def check(text: str) -> Any:
        value = _number(text, kind, "a whole number" if kind is int else "a number")
        if not within(value):
            raise argparse.ArgumentTypeError(f"must be {must}, got {value if kind is int else text}")
        return value

    check.__doc__ = doc
    return check


finite_float = _bounded(float, lambda v: True, "finite", "Any finite number.")
positive_int = _bounded(int, lambda v: v >= 1, "at least 1", "A whole number of at least 1.")
nonnegative_int = _bounded(int, lambda v: v >= 0, "0 or more", "A whole number of at least 0.")
positive_float = _bounded(float, lambda v: v > 0, "greater than 0", "A finite number greater than 0.")
unit_interval = _bounded(float, lambda v: 0.0 <= v <= 1.0, "between 0 and 1", "A number from 0 to 1.")
open_unit_interval = _bounded(
    float, lambda v: 0.0 < v <= 1.0, "greater than 0 and at most 1", "A number greater than 0 and at most 1."
)


def seed_number(text: str) -> int:
    """A seed NumPy takes: a whole number from 0 to 2**32 - 1."""
    value = nonnegative_int(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"must be less than 2**32 = {2**32} (NumPy's seeds), got {value}")
    return value


def seed_range(text: str) -> list[int]:
    """``--seeds``' words: a seed, or ``A-B``, the seeds A to B."""
    first, dash, last = text.partition("-")
    if not dash:
        return [seed_number(text)]
    low, high = seed_number(first), seed_number(last)
    if high < low:
        raise argparse.ArgumentTypeError(f"a range goes up, got {text}")
    return list(range(low, high + 1))


def setting(default: Any, help: str, check: Callable[[str], Any] | None = None, *, group: str, **extra: Any) -> Any:
    """A dataclass field carrying its command-line help, validator and ``--help`` group.

    ``extra`` goes to ``add_argument`` as it is (``action``, ``choices``, ``metavar``), except
    ``flag``, which names the flag when it is not the field's name (``--no-video``).
    """
    if group not in (ORIGINAL, RUN, BEYOND):
        raise ValueError(f"unknown --help group {group!r}")
    return dataclasses.field(default=default, metadata={"help": help, "type": check, "group": group, **extra})


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each flag's default, except where it says nothing (switches, None)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        # On/off switches: "(default: True)" would only confuse; and "(default: None)" says nothing.
        if action.nargs == 0 or action.default is None or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: "prog: error: message (see --help)"."""

    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(
    config_cls: type, presets: Mapping[str, Mapping[str, Any]], suppress_defaults: bool = False
) -> argparse.ArgumentParser:
    """Turn every field of ``config_cls`` into a ``--flag`` in its group, plus ``--preset`` and the actions.

    With ``suppress_defaults``, flags the user did not type are absent from the result.
    Abbreviations are refused: ``--episode 3`` is a mistake, not ``--episodes 3``.
    """
    parser = OneLineParser(
        prog=PROG,
        description=DESCRIPTION,
        formatter_class=HelpFormatter,
        argument_default=argparse.SUPPRESS if suppress_defaults else None,
        allow_abbrev=False,
        add_help=False,
    )
    groups = {title: parser.add_argument_group(title, text) for title, text in GROUP_DESCRIPTIONS.items()}
    groups[ACTIONS].add_argument("-h", "--help", action="help", help="show this help message and exit")
    for f in dataclasses.fields(config_cls):
        add_field_flag(groups[f.metadata["group"]], f, None if suppress_defaults else f.default)
    if presets:
        listed = "; ".join(f"{name}: " + ", ".join(f"{k}={v}" for k, v in p.items()) for name, p in presets.items())
        groups[BEYOND].add_argument(
            "--preset",
            choices=tuple(presets),
            help=f"start from a named set of settings ({listed}); flags given as well override it",
        )
    _add_actions(groups[ACTIONS])
    return parser


def add_field_flag(group: Any, f: dataclasses.Field, default: Any) -> None:
    """Add the ``--flag`` of configuration field ``f`` to ``group`` (a parser or a group), with ``default``.

    ``default`` None leaves the flag out of the result when not given (``argument_default``).
    """
    meta = {k: v for k, v in f.metadata.items() if k != "group"}
    flag = meta.pop("flag", "--" + f.name.replace("_", "-"))
    kwargs: dict[str, Any] = {"dest": f.name, "help": meta.pop("help")}
    if default is not None:
        kwargs["default"] = default
    check = meta.pop("type")
    if check is not None:
        kwargs["type"] = check
        kwargs["metavar"] = {int: "N", float: "X"}.get(type(f.default), "VALUE")
    kwargs.update(meta)
    group.add_argument(flag, **kwargs)


def _add_actions(actions: argparse._ArgumentGroup) -> None:
    """The flags that do something other than train from scratch."""
    actions.add_argument(
        "--config",
        metavar="FILE",
        help="start from the settings in a JSON file (tune.py's best_config.json, or a run's config.json to "
        "repeat that run); flags given as well override them",
    )
    actions.add_argument(
        "--resume",
        nargs="+",
        metavar="PATH",
        help=f"continue the run saved in PATH (a {STATE_FILE}); several: continue them together, as --seeds does",
    )
    actions.add_argument(
        "--seeds",
        nargs="+",
        type=seed_range,
        metavar="SEED",
        help="train these seeds together in one process, each a run of its own as --seed would make it, their "
        "networks stacked (the preset's options and the original's; docs/speed.md); A-B is a range: --seeds 100-104",
    )
    actions.add_argument(
        "--evaluate",
        metavar="PATH",
        help="play greedy episodes (--episodes, default 100) with a saved network or training state and report",
    )
    actions.add_argument(
        "--video", dest="eval_video", action="store_true", help="with --evaluate: film the first episode"
    )
    actions.add_argument(
        "--plot", metavar="CSV", help="draw the learning curve of a run's metrics.csv as a PNG beside it"
    )
    actions.add_argument(
        "--progress",
        metavar="RUN",
        help="write the training-progress table of a run's folder (runs/<run>): one row per video, "
        "with what the agent does and a thumbnail, as progress.md and progress.html",
    )


def parse_command_line(
    argv: list[str] | None, config_cls: type, presets: Mapping[str, Mapping[str, Any]]
) -> tuple[Any, dict[str, Any], set[str]]:
    """Parse the command line: the validated configuration, the actions, and which fields were given.

    The settings come from the defaults, then ``--config FILE`` or ``--preset``, then the flags typed.
    Bad input exits with one line and status 2.
    """
    parser = build_parser(config_cls, presets)
    args = vars(parser.parse_args(argv))
    actions = {k: args.pop(k) for k in ("resume", "evaluate", "eval_video", "plot", "progress", "seeds")}
    actions["seeds"] = [s for words in actions["seeds"] for s in words] if actions["seeds"] else None
    preset, config_file = args.pop("preset", None), args.pop("config", None)
    if problem := _actions_problem(actions, preset, config_file):
        parser.error(problem)
    given = set(vars(build_parser(config_cls, presets, suppress_defaults=True).parse_args(argv))) & {
        f.name for f in dataclasses.fields(config_cls)
    }
    cfg = config_cls(**args)
    if config_file is not None:
        try:
            cfg = apply_preset(cfg, read_config_file(config_file, config_cls), given)
        except UserError as exc:
            parser.error(str(exc))
    if problem := config_problem(cfg):
        parser.error(problem)
    if preset is not None:
        cfg = apply_preset(cfg, presets[preset], given)
        if problem := config_problem(cfg):
            parser.error(problem)
    if actions["seeds"] is not None and (problem := seeds_problem(cfg, actions["seeds"], given)):
        parser.error(problem)
    return cfg, actions, given


def _actions_problem(actions: dict[str, Any], preset: str | None, config_file: str | None) -> str | None:
    """Flags that cannot go together; a message or None."""
    chosen = [f"--{k}" for k in ("resume", "evaluate", "plot", "progress", "seeds") if actions[k] is not None]
    if len(chosen) > 1:
        return f"{' and '.join(chosen)} cannot be used together"
    if actions["resume"] is not None and (preset is not None or config_file is not None):
        flag = "--preset" if preset is not None else "--config"
        return f"{flag} goes with a new run: a resumed run goes on with the settings saved in its training state"
    others = [flag for flag in chosen if flag != "--seeds"]  # a file's settings may train several seeds
    if config_file is not None and (preset is not None or others):
        other = "--preset" if preset is not None else others[0]
        return f"--config and {other} cannot be used together: --config gives every setting of a new run"
    if actions["eval_video"] and actions["evaluate"] is None:
        return "--video goes with --evaluate (training films every --video-every episodes by itself)"
    return None


def apply_preset(cfg: Any, preset: Mapping[str, Any], given: Collection[str] = frozenset()) -> Any:
    """``cfg`` with the fields of ``preset``, except those in ``given`` (flags the user typed)."""
    return dataclasses.replace(cfg, **{k: v for k, v in preset.items() if k not in given})


def config_problem(cfg: Any) -> str | None:
    """Checks that involve more than one field; returns a message or None."""
    if cfg.epsilon_end > cfg.epsilon_start:
        return f"--epsilon-end ({cfg.epsilon_end}) must not exceed --epsilon-start ({cfg.epsilon_start})"
    if cfg.replay_buffer_size <= cfg.minibatch_size:  # learning starts once the memory holds more than one
        return (
            f"--replay-buffer-size ({cfg.replay_buffer_size}) must be more than --minibatch-size "
            f"({cfg.minibatch_size}): learning starts once the memory holds more than one minibatch"
        )
    if not cfg.checkpoint.strip():
        return "--checkpoint must be a file path"
    if cfg.eval_target is not None and not cfg.eval_every:
        return "--eval-target needs --eval-every: the stopping rule judges the evaluations that flag runs"
    if cfg.eval_from_average is not None and not cfg.eval_every:
        return "--eval-from-average needs --eval-every: it says from when those evaluations run"
    if cfg.grad_clip < 0 or cfg.priority_alpha < 0 or not 0 <= cfg.priority_beta <= 1:
        return "--grad-clip and --priority-alpha must be 0 or more, --priority-beta between 0 and 1"
    return None
