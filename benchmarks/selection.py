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

# main before NumPy: main sets OPENBLAS_NUM_THREADS=1 before OpenBLAS starts (see compare.py).
# isort: off
import main  # noqa: E402
import numpy as np  # noqa: E402
# isort: on

if TYPE_CHECKING:
    from dqnkit.evaluation import EvalResult

SELECTION_SEED = 1_000_000  # dqnkit.evaluation.PeriodicEvaluation.SEED_BASE
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


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Train, evaluate along the way, print one JSON line; return it."""
    import torch

    from dqnkit.evaluation import play_greedy
    from dqnkit.videos import greedy_policy

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
        cfg = main.apply_preset(cfg, "fast")
    cfg = dataclasses.replace(cfg, **overrides(args.set, cfg))

    torch.set_num_threads(1)
    env, judge = main.make_env(cfg.env, cfg.max_steps), main.make_env(cfg.env, cfg.max_steps)
    rng = main.seed_everything(cfg.seed)
    env.action_space.seed(cfg.seed)
    agent = main.build_agent(cfg, env, torch.device("cpu"), rng)
    epsilon, steps, scores, rows = cfg.epsilon_start, 0, [], []
    start = time.perf_counter()
    try:
        for episode in range(1, cfg.episodes + 1):
            score, length, epsilon = main.play_episode(
                env, agent, cfg, epsilon, steps, cfg.seed if episode == 1 else None
            )
            steps += length
            scores.append(score)
            if not cfg.epsilon_decay_steps:
                epsilon = main.next_epsilon(epsilon, cfg.epsilon_end, cfg.epsilon_decay)
            if episode % args.every:
                continue
            policy = greedy_policy(agent.local_qnetwork)
            row = {
                "episode": episode,
                "steps": steps,
                "seconds": round(time.perf_counter() - start, 1),
                "training_average": float(np.mean(scores[-100:])),
                "selection": summary(
                    play_greedy(policy, judge, range(SELECTION_SEED, SELECTION_SEED + args.selection_episodes))
                ),
                "test": summary(play_greedy(policy, judge, range(TEST_SEED, TEST_SEED + args.test_episodes))),
            }
            rows.append(row)
            sel, test = row["selection"], row["test"]
            print(
                f"episode {episode}: selection {sel['mean_score']:.1f} / {sel['landed_share']:.0%} / "
                f"{sel['mean_length']:.0f}; test {test['mean_score']:.1f} / {test['landed_share']:.0%} / "
                f"{test['mean_length']:.0f}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        env.close()
        judge.close()
    result = {"seed": args.seed, "preset": not args.no_preset, "set": args.set, "rows": rows, "scores": scores}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    run()
