"""Tune the DQN's settings with an Optuna study: every trial a real ``main.train`` run.

    python tune.py --study lander --trials 20 --jobs 2          # one machine: runs/tune/lander.log
    python tune.py --study lander --storage postgresql://user:password@host/db   # the same on each machine
    python tune.py --help

The tuner itself is ``dqnkit/tune/command.py``; this script hands it ``main.Config`` and ``main.train``.
See docs/tuner.md.
"""

from __future__ import annotations

import sys

# main before NumPy: main sets OPENBLAS_NUM_THREADS=1 before OpenBLAS starts, here and in every worker
# process (each imports this file first).
import main  # isort: skip
from dqnkit.errors import run_script
from dqnkit.tune import command

if __name__ == "__main__":
    sys.exit(run_script(lambda: command.main(sys.argv[1:], main.Config, main.train)))
