#!/usr/bin/env bash
# Data-parallel scaling on CPU: one worker with T threads against N workers with T/N threads,
# ZeRO-0 against ZeRO-1, at a fixed global batch (strong) and a fixed per-worker batch (weak).
# Prints median ms per step, the share of communication time, and the efficiency.
# Usage: bench/scaling.sh [DATA] [STEPS]   (defaults: CPTLAB_DATA or synthetic, 300 steps)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/cptlab
DATA=${1:-${CPTLAB_DATA:-synthetic:20000:1000}}
STEPS=${2:-300}
RUNS=$(mktemp -d)
trap 'rm -rf "$RUNS"' EXIT

measure() { # batch devices threads zero -> "ms_per_step comm_share"
  CPTLAB_RUNS_DIR=$RUNS "$BIN" run --preset lenet-sgd --data "$DATA" --batch-size "$1" \
    --devices "$2" --threads "$3" --zero "$4" --max-steps "$STEPS" \
    --set train.eval=false --set train.checkpoint=false --json |
    python3 -c '
import json, sys, statistics as st
steps = [e for e in map(json.loads, sys.stdin) if e["event"] == "step"][20:]
total = lambda e: e["t_data"] + e["t_fwd"] + e["t_bwd"] + e["t_comm"] + e["t_opt"]
ms = st.median(total(e) for e in steps) * 1e3
comm = st.median(e["t_comm"] / total(e) for e in steps)
print(f"{ms:.3f} {comm:.3f}")'
}

echo "| batch | layout | ms/step | comm share | efficiency vs cpu:1 × 2 threads |"
echo "|---|---|---|---|---|"
for B in 16 128; do
  read -r base _ < <(measure "$B" cpu 2 0)
  echo "| $B | cpu:1, 2 threads | $base | - | 1.00 |"
  for Z in 0 1; do
    read -r ms comm < <(measure "$B" cpu:2 1 "$Z")
    eff=$(python3 -c "print(f'{$base/$ms:.2f}')")
    echo "| $B (strong) | cpu:2 × 1 thread, zero $Z | $ms | $comm | $eff |"
  done
  # Weak scaling: each of the 2 workers keeps batch B, so the global batch doubles; efficiency
  # compares samples per second per worker with one worker at batch B and 1 thread.
  read -r one _ < <(measure "$B" cpu 1 0)
  read -r ms comm < <(measure $((2 * B)) cpu:2 1 1)
  eff=$(python3 -c "print(f'{$one/$ms:.2f}')")
  echo "| $B per worker (weak) | cpu:2 × 1 thread, zero 1 vs cpu:1 × 1 thread at $B | $ms (vs $one) | $comm | $eff |"
done
