"""How well the evaluation during training predicts unseen seeds: the data behind the preset's stopping rule.

Trains one configuration on one seed and, every ``--every`` episodes, plays the greedy policy
twice: on the *selection* seeds (1,000,000 and up, those ``--eval-every`` plays and the stopping
rule judges) and on the *test* seeds (2,000,000 and up, those ``benchmarks/compare.py`` reports).
Each evaluation's mean score, landed share and mean length go to one line on stderr and, with
the share on the pad, to one JSON line on stdout at the end. A stopping rule can then be judged on every snapshot of the
run: what it would have picked from the selection figures, and how that agent does on the test
seeds. Evaluating changes nothing in the training (the default run's test shows it).

    python benchmarks/selection.py --seed 0 --episodes 800 --set lr_decay_steps=250000
    python benchmarks/selection.py --seed 1 --no-preset --episodes 900

``docs/tuning.md`` holds the runs behind the preset and what they showed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

import common  # before NumPy: one BLAS thread, for reproducible runs  # isort: skip

import main
from dqnkit.cli import config_problem, positive_int, seed_number
from dqnkit.errors import UserError
from dqnkit.report.evaluation import UNSEEN_SEED_BASE, PeriodicEvaluation
from dqnkit.run.hooks import Episode, Hook
from dqnkit.settings import apply_preset

SELECTION_SEED = PeriodicEvaluation.SEED_BASE  # 1,000,000: what --eval-every plays and the stopping rule judges
TEST_SEED = UNSEEN_SEED_BASE  # 2,000,000: what compare.py reports
TRUE, FALSE = ("1", "true", "yes"), ("0", "false", "no")


def overrides(pairs: list[str], cfg: main.Config) -> dict[str, Any]:
    """``["lr_decay_steps=250000", ...]`` as values of ``cfg``'s fields, checked as main.py checks its flags.

    A pair that names no field, or a value its flag would refuse, exits with one line.
    """
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    out = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        if name not in fields or not text:
            raise SystemExit(f"selection.py: error: --set wants FIELD=VALUE with a Config field, got {pair!r}")
        meta = fields[name].metadata
        try:
            if isinstance(getattr(cfg, name), bool):
                if text.lower() not in TRUE + FALSE:
                    raise ValueError(f"expected true or false, got {text!r}")
                out[name] = text.lower() in TRUE
                continue
            out[name] = (meta.get("type") or str)(text)
            if "choices" in meta and out[name] not in meta["choices"]:
                raise ValueError(f"expected one of {', '.join(meta['choices'])}, got {text!r}")
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise SystemExit(f"selection.py: error: --set {pair}: {exc}") from None
    return out


class EvaluateAlong(Hook):
    """Every ``every`` episodes, the greedy policy on the selection seeds and on the test seeds: one row each."""

    def __init__(self, every: int, selection_episodes: int, test_episodes: int, env_id: str, max_steps: int) -> None:
        from dqnkit.envs import make_env

        self.every, self.rows = every, []
        self.selection = range(SELECTION_SEED, SELECTION_SEED + selection_episodes)
        self.test = range(TEST_SEED, TEST_SEED + test_episodes)
        self.judge = make_env(env_id, max_steps)  # its own environment: training's random streams stay untouched

    def on_start(self, agent) -> None:
        self.network, self.clock = agent.local_qnetwork, common.Stopwatch()

    def on_episode(self, episode: Episode) -> None:
        from dqnkit.report.evaluation import play_greedy
        from dqnkit.report.videos import greedy_policy

        if episode.episode % self.every:
            return
        policy = greedy_policy(self.network)
        row = {
            "episode": episode.episode,
            "steps": episode.total_steps,
            "seconds": round(self.clock.seconds(), 1),
            "training_average": episode.average_100,
            "selection": common.eval_summary(play_greedy(policy, self.judge, self.selection)),
            "test": common.eval_summary(play_greedy(policy, self.judge, self.test)),
        }
        self.rows.append(row)
        sel, test = row["selection"], row["test"]
        common.note(
            f"episode {episode.episode}: selection {sel['mean_score']:.1f} / {sel['landed_share']:.0%} / "
            f"{sel['mean_length']:.0f}; test {test['mean_score']:.1f} / {test['landed_share']:.0%} / "
            f"{test['mean_length']:.0f}"
        )

    def close(self, error: BaseException | None) -> None:
        self.judge.close()


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Train through ``main.train`` with an :class:`EvaluateAlong` hook, print one JSON line; return it."""
    parser = common.parser("selection.py", __doc__.splitlines()[0])
    parser.add_argument("--seed", type=seed_number, default=0, help="training seed")
    parser.add_argument("--episodes", type=positive_int, default=800, help="training episodes")
    parser.add_argument("--every", type=positive_int, default=20, help="evaluate every this many episodes")
    parser.add_argument("--selection-episodes", type=positive_int, default=100, help="episodes on the selection seeds")
    parser.add_argument("--test-episodes", type=positive_int, default=100, help="episodes on the test seeds")
    parser.add_argument("--no-preset", action="store_true", help="start from the defaults, not --preset fast")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override Config fields")
    args = parser.parse_args(argv)
    cfg = main.Config(seed=args.seed, episodes=args.episodes, video=False, quiet=True)
    if not args.no_preset:
        cfg = apply_preset(cfg, "fast")
    # Every episode, whatever a stopping rule would say; its own evaluations instead of the run's.
    own = {"eval_every": 0, "eval_target": None, "eval_from_average": None}
    cfg = dataclasses.replace(cfg, **{**overrides(args.set, cfg), **own})
    if problem := config_problem(cfg):
        parser.error(f"--set: {problem}")
    try:
        along = EvaluateAlong(args.every, args.selection_episodes, args.test_episodes, cfg.env, cfg.max_steps)
        with common.train_aside(cfg, [along]) as (trained, _):
            scores = trained.scores
    except UserError as exc:  # an environment that does not exist, a replay memory larger than the machine
        raise SystemExit(f"selection.py: error: {exc}") from None
    result = {"seed": args.seed, "preset": not args.no_preset, "set": args.set, "rows": along.rows, "scores": scores}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    run()
