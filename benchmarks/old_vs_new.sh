#!/usr/bin/env bash
# Old code against new: `speed.py --no-solve` of two checkouts, alternated old, new, old, new, ... (ABAB),
# each run its own process on one thread (speed.py sets OPENBLAS_NUM_THREADS=1 and torch.set_num_threads(1)),
# then, per agent, the ratio of the medians of every round's steps/s: new over old (above 1: the new code is faster).
#
#   benchmarks/old_vs_new.sh OLD_CHECKOUT [PAIRS] [speed.py flags ...]
#   benchmarks/old_vs_new.sh /tmp/old_main 3 --steps 20000 --rounds 3     # six runs of about a minute each
#   benchmarks/old_vs_new.sh /tmp/old_main 1 --steps 2000 --rounds 1      # a check that the commands work
#
# PYTHON (default: this checkout's .venv/bin/python) runs both; OUT (default: a new temporary folder) keeps
# old.jsonl, new.jsonl and each run's output; TASKSET="taskset -c 1" also pins every run to one core.
set -euo pipefail

old=$(cd "${1:?usage: benchmarks/old_vs_new.sh OLD_CHECKOUT [PAIRS] [speed.py flags ...]}" && pwd)
pairs=${2:-3}
shift $(($# < 2 ? $# : 2))
flags=("$@")
[ ${#flags[@]} -gt 0 ] || flags=(--steps 20000 --rounds 3)
new=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$new/.venv/bin/python}
out=${OUT:-$(mktemp -d -t old-vs-new-XXXXXX)}
mkdir -p "$out"
[ -f "$old/benchmarks/speed.py" ] || { echo "old_vs_new.sh: error: no benchmarks/speed.py in $old" >&2; exit 2; }
[[ $pairs =~ ^[1-9][0-9]*$ ]] || { echo "old_vs_new.sh: error: PAIRS must be a whole number of at least 1, got $pairs" >&2; exit 2; }

for i in $(seq 1 "$pairs"); do
    for side in old new; do
        repo=$old
        [ "$side" = new ] && repo=$new
        echo "pair $i/$pairs: $side ($repo) ..." >&2
        (cd /tmp && OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 ${TASKSET:-} "$python" "$repo/benchmarks/speed.py" \
            --no-solve "${flags[@]}" --append "$out/$side.jsonl" >"$out/$side-$i.log" 2>&1) ||
            { echo "old_vs_new.sh: error: $side run $i failed; see $out/$side-$i.log" >&2; exit 1; }
    done
done

"$python" - "$out" <<'EOF'
import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])
runs = {side: [json.loads(line) for line in (out / f"{side}.jsonl").read_text().splitlines()] for side in ("old", "new")}
print(f"old: {runs['old'][0]['machine']['commit']}; new: {runs['new'][0]['machine']['commit']}; files in {out}")
for side, side_runs in runs.items():
    steps = [r["env_step"]["median_us"] for r in side_runs]
    print(f"  {side}: {len(side_runs)} runs, bare environment step {', '.join(f'{s:.1f}' for s in steps)} us")
print(f"{'steps/s':<10}{'old median':>12}{'new median':>12}{'new/old':>9}{'(CPU time)':>12}   per pair")
for agent in runs["old"][0]["throughput"]["medians"]:
    def rates(side, kind):
        return [r2[agent] for r in runs[side] for r2 in (r["throughput"]["cpu"] if kind == "cpu" else r["throughput"])["rounds"]]

    old, new = statistics.median(rates("old", "wall")), statistics.median(rates("new", "wall"))
    cpu = statistics.median(rates("new", "cpu")) / statistics.median(rates("old", "cpu"))
    pairs = [n["throughput"]["medians"][agent] / o["throughput"]["medians"][agent] for o, n in zip(runs["old"], runs["new"])]
    print(f"{agent:<10}{old:>12,.0f}{new:>12,.0f}{new / old:>8.3f}x{cpu:>11.3f}x   {', '.join(f'{p:.3f}' for p in pairs)}")
print("new/old: the ratio of the medians of every round of every run; the reference is the same code on both")
print("sides, so its ratio is the machine's drift: a change of the others within it is noise.")
EOF
