"""How well the evaluation during training predicts unseen seeds: the data behind the preset's stopping rule.

Trains one configuration on one seed and, every ``--every`` episodes, plays the greedy policy
twice: on the *selection* seeds (1,000,000 and up, those ``--eval-every`` plays and the stopping
rule judges) and on the *test* seeds (2,000,000 and up, those ``benchmarks/compare.py`` reports).
Each evaluation's mean score, landed share and mean length go to one line on stderr and, at
the end, to one JSON line on stdout. A stopping rule can then be judged on every snapshot of the
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
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

# main before NumPy: main sets OPENBLAS_NUM_THREADS=1 before OpenBLAS starts (see compare.py).
# isort: off
import main  # noqa: E402
from compare import train_aside  # noqa: E402
from dqnkit.run.hooks import Episode, Hook  # noqa: E402
from dqnkit.settings import apply_preset  # noqa: E402
# isort: on

if TYPE_CHECKING:
    from dqnkit.report.evaluation import EvalResult

SELECTION_SEED = 1_000_000  # dqnkit.report.evaluation.PeriodicEvaluation.SEED_BASE
TEST_SEED = 2_000_000  # compare.EVAL_SEED


def summary(result: EvalResult) -> dict[str, float]:
    """Mean score, landed share and mean length of an evaluation."""
    return {"mean_score": result.mean_score, "landed_share": result.landed_share, "mean_length": result.mean_length}


def overrides(pairs: list[str], cfg: main.Config) -> dict[str, Any]:
    """``["lr_decay_steps=250000", ...]`` as typed values of ``cfg``'s fields; a bad pair exits with one line."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    out = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        if name not in fields or not text:
            raise SystemExit(f"selection.py: error: --set wants FIELD=VALUE with a Config field, got {pair!r}")
        kind = type(getattr(cfg, name))
        out[name] = text.lower() in ("1", "true", "yes") if kind is bool else kind(text)
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
        self.network, self.start = agent.local_qnetwork, time.perf_counter()

    def on_episode(self, episode: Episode) -> None:
        from dqnkit.report.evaluation import play_greedy
        from dqnkit.report.videos import greedy_policy

        if episode.episode % self.every:
            return
        policy = greedy_policy(self.network)
        row = {
            "episode": episode.episode,
            "steps": episode.total_steps,
            "seconds": round(time.perf_counter() - self.start, 1),
            "training_average": episode.average_100,
            "selection": summary(play_greedy(policy, self.judge, self.selection)),
            "test": summary(play_greedy(policy, self.judge, self.test)),
        }
        self.rows.append(row)
        sel, test = row["selection"], row["test"]
        print(
            f"episode {episode.episode}: selection {sel['mean_score']:.1f} / {sel['landed_share']:.0%} / "
            f"{sel['mean_length']:.0f}; test {test['mean_score']:.1f} / {test['landed_share']:.0%} / "
            f"{test['mean_length']:.0f}",
            file=sys.stderr,
            flush=True,
        )

    def close(self, error: BaseException | None) -> None:
        self.judge.close()


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Train through ``main.train`` with an :class:`EvaluateAlong` hook, print one JSON line; return it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=800, help="training episodes")
    parser.add_argument("--every", type=int, default=20, help="evaluate every this many episodes")
    parser.add_argument("--selection-episodes", type=int, default=100)
    parser.add_argument("--test-episodes", type=int, default=100)
    parser.add_argument("--no-preset", action="store_true", help="start from the defaults, not --preset fast")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override Config fields")
    args = parser.parse_args(argv)
    cfg = main.Config(seed=args.seed, episodes=args.episodes, video=False, quiet=True)
    if not args.no_preset:
        cfg = apply_preset(cfg, "fast")
    cfg = dataclasses.replace(cfg, **overrides(args.set, cfg))
    along = EvaluateAlong(args.every, args.selection_episodes, args.test_episodes, cfg.env, cfg.max_steps)
    # Every episode, whatever a stopping rule would say; its own evaluations instead of the run's.
    with train_aside(dataclasses.replace(cfg, eval_every=0, eval_target=None), [along]) as (trained, _):
        scores = trained.scores
    result = {"seed": args.seed, "preset": not args.no_preset, "set": args.set, "rows": along.rows, "scores": scores}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    run()
