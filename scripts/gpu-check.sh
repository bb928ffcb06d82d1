#!/usr/bin/env bash
# GPU acceptance run: in a few minutes on one GPU, writes gpu-report.md with a preflight
# (nvidia-smi, driver, glibc, ldd, doctor), then training runs on the GPU (ResNet-18 fp32,
# amp_bf16, amp_fp16, DeepSpeed-style fp16 with injected overflows, CPT ResNet-20 fp32 and
# amp_fp16, ViT Adam with warmup from 0, stop + resume, LeNet b16), each with its final loss,
# images/s, sampled GPU utilisation and host_reads_per_step, a one-rank NCCL worker, and
# bench/torch_reference_gpu.py (PyTorch eager, tuned: AMP bf16, channels_last, cudnn.benchmark)
# in the same session, as ratios.
#
# Usage: scripts/gpu-check.sh [--dry-run] [--out FILE] [--device cuda:N]
#   --dry-run  checks the binary, Python/torch and the GPU, prints the plan, runs nothing.
# Environment: CPTLAB_BIN (the cptlab binary), PYTHON (a Python with torch 2.11 + CUDA).
# Exits non-zero, with the reason on stderr, when there is no usable GPU.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=gpu-report.md
device=cuda:0
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --out) out=$2; shift ;;
    --device) device=$2; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

die() {
  echo "gpu-check: FAILED: $*" >&2
  exit 1
}

# The binary: $CPTLAB_BIN, the bundle's (beside scripts/), or the repository's release build.
bin=${CPTLAB_BIN:-}
if [ -z "$bin" ]; then
  for c in "$here/../cptlab" "$here/cptlab" "$here/../target/release/cptlab"; do
    if [ -x "$c" ]; then bin=$c; break; fi
  done
fi
[ -n "$bin" ] && [ -x "$bin" ] || die "no cptlab binary (set CPTLAB_BIN, or run from a gpu-bundle or a built repository)"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
root=$(cd "$(dirname "$bin")" && pwd)
# Scripts and references: the bundle keeps bench/ beside the binary, the repository at its root.
refs=$root
[ -f "$refs/bench/torch_reference_gpu.py" ] || refs=$(cd "$here/.." && pwd)

# A Python with torch: $PYTHON, the repository's .venv, then python3.
py=${PYTHON:-}
if [ -z "$py" ]; then
  for c in "$here/../.venv/bin/python" "$root/.venv/bin/python" python3; do
    if command -v "$c" >/dev/null 2>&1; then py=$c; break; fi
  done
fi
[ -n "$py" ] || die "no python (set PYTHON to one with torch 2.11.0+cu130)"
torch_lib=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null) \
  || die "$py cannot import torch (set PYTHON to one with torch 2.11.0+cu130)"
# The binary's rpath points at the build machine's torch; this machine's comes first.
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

missing=$(ldd "$bin" 2>&1 | grep 'not found' || true)
[ -z "$missing" ] || die "$bin cannot load its libraries with LD_LIBRARY_PATH=$torch_lib:
$missing"

# The GPU: nvidia-smi, torch and cptlab must all see it.
command -v nvidia-smi >/dev/null 2>&1 || die "no GPU: nvidia-smi is not installed (this is not a GPU machine)"
nvidia-smi -L 2>/dev/null | grep -q '^GPU ' || die "no GPU: nvidia-smi lists no device ($(nvidia-smi -L 2>&1 | head -1))"
"$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
  || die "no GPU visible to torch in $py (torch.cuda.is_available() is False)"
"$bin" doctor | grep -q '^cuda available: true' || die "cptlab sees no CUDA device ($bin doctor says: $("$bin" doctor | grep '^cuda available'))"

runs=(
  "resnet18-fp32|--preset resnet18-sgd --batch-size 512 --max-steps 120"
  "resnet18-amp_bf16|--preset resnet18-sgd --batch-size 512 --max-steps 120 --precision amp_bf16"
  "resnet18-amp_fp16|--preset resnet18-sgd --batch-size 512 --max-steps 120 --precision amp_fp16"
  "resnet18-fp16-overflows|--preset resnet18-sgd --batch-size 512 --max-steps 60 --precision fp16"
  "resnet20-cpt-fp32|--preset resnet20-cpt-cr --batch-size 256 --max-steps 100"
  "resnet20-cpt-amp_fp16|--preset resnet20-cpt-cr --batch-size 256 --max-steps 100 --precision amp_fp16"
  "vit-adam-warmup0|--preset vit-adam --batch-size 256 --max-steps 100"
  "lenet-b16-fp32|--preset lenet-sgd --batch-size 16 --max-steps 600"
)
if [ "$dry_run" = 1 ]; then
  echo "gpu-check: dry run on $device with $bin (torch lib $torch_lib); would run:"
  for r in "${runs[@]}"; do echo "  ${r%%|*}: cptlab run ${r#*|} --devices $device"; done
  echo "  stop + resume, one-rank NCCL worker, $refs/bench/torch_reference_gpu.py"
  exit 0
fi

work=$(mktemp -d)
trap 'kill "${sampler:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
export CPTLAB_RUNS_DIR=$work/runs CPTLAB_CACHE_DIR=$work/cache CPTLAB_PRESETS_DIR=$work/presets
data=synthetic:50000:2000
gpu_index=${device#cuda:}

report() { echo "$*" >>"$out"; }
: >"$out"
report "# cptlab GPU check"
report ""
report "$(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname), device $device"
report ""
report "## Preflight"
report '```'
report "$(nvidia-smi --query-gpu=index,name,uuid,memory.total,driver_version --format=csv 2>&1)"
report "glibc: $(ldd --version 2>&1 | head -1)"
report "binary needs: $(objdump -T "$bin" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1 || echo '?')"
report "torch: $("$py" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>&1)"
report "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
report "$(ldd "$bin" | grep -E 'torch|c10|cuda|nccl' || true)"
report ""
report "$("$bin" doctor 2>&1)"
report '```'
report ""

# Mean GPU utilisation (NVML through nvidia-smi, every 200 ms) while "$@" runs.
sampled() {
  local log=$work/util.log
  nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -i "$gpu_index" -lms 200 >"$log" 2>/dev/null &
  sampler=$!
  local rc=0
  "$@" || rc=$?
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  util=$(awk 'NR > 5 { s += $1; n++ } END { if (n) printf "%.0f%%", s / n; else print "?" }' "$log")
  return $rc
}

# One line of the table from a run's JSON events.
summarize() {
  "$py" - "$1" "$2" "$3" <<'EOF'
import json, sys
name, path, util = sys.argv[1], sys.argv[2], sys.argv[3]
steps, summary, error = [], None, None
for line in open(path):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("event") == "step":
        steps.append(e)
    elif e.get("event") == "finished":
        summary = e["summary"]
    elif e.get("event") == "failed":
        error = e.get("error")
if summary is None:
    print(f"| {name} | FAILED: {error} | | | | |")
    sys.exit(0)
later = steps[len(steps) // 3:] or steps
ips = sum(s["images_per_sec"] * s.get("steps", 1) for s in later) / max(1, sum(s.get("steps", 1) for s in later))
loss = steps[-1]["loss"] if steps else float("nan")
reads = summary.get("host_reads_per_step")
print(f"| {name} | {summary['status']} | {loss:.4f} | {ips:.0f} | {util} | {reads if reads is not None else '?'} | {summary.get('skipped_steps', 0)} |")
EOF
}

report "## Runs on $device"
report ""
report "| run | status | final loss | images/s | GPU util | host reads/step | skipped |"
report "|---|---|---|---|---|---|---|"
for r in "${runs[@]}"; do
  name=${r%%|*}
  # shellcheck disable=SC2206
  args=(${r#*|})
  env_extra=()
  [ "$name" = resnet18-fp16-overflows ] && env_extra=(CPTLAB_INJECT_OVERFLOW=3,4,10)
  echo "gpu-check: $name" >&2
  rc=0
  sampled timeout 150 env "${env_extra[@]}" "$bin" run "${args[@]}" --data "$data" --devices "$device" \
    --set train.eval=false --set train.checkpoint=false --json >"$work/$name.jsonl" 2>"$work/$name.err" || rc=$?
  line=$(summarize "$name" "$work/$name.jsonl" "$util")
  [ "$rc" = 0 ] || line="$line (exit $rc: $(tail -1 "$work/$name.err"))"
  report "$line"
done
report ""

# Stop + resume: SIGTERM at step 100, then --resume to the end.
echo "gpu-check: stop + resume" >&2
"$bin" run --preset lenet-sgd --data "$data" --devices "$device" --batch-size 64 --max-steps 400 --json \
  >"$work/stop.jsonl" 2>"$work/stop.err" &
pid=$!
for _ in $(seq 600); do
  grep -q '"step":100,' "$work/stop.jsonl" 2>/dev/null && break
  sleep 0.1
done
kill -TERM "$pid" 2>/dev/null || true
wait "$pid" || true
run_dir=$(ls -d "$CPTLAB_RUNS_DIR"/* 2>/dev/null | tail -1)
stop_status=$(grep -o '"status":"[a-z]*"' "$work/stop.jsonl" | tail -1 || true)
resume_status=$("$bin" run --resume "$run_dir" --json 2>"$work/resume.err" | grep -o '"status":"[a-z]*"' | tail -1 || true)
report "## Stop + resume"
report ""
report "stopped run: ${stop_status:-no summary}; resumed: ${resume_status:-failed ($(tail -1 "$work/resume.err"))}"
report ""

# NCCL at world size 1: one `cptlab worker` rank as torchrun would start it.
echo "gpu-check: nccl world 1" >&2
nccl_rc=0
timeout 120 env RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29517 \
  CPTLAB_RDZV_TOKEN=gpu-check-one-rank \
  "$bin" worker --preset lenet-sgd --data "$data" --devices "$device" --max-steps 50 --json \
  >"$work/nccl.jsonl" 2>"$work/nccl.err" || nccl_rc=$?
report "## NCCL, world size 1"
report ""
report "$(summarize worker-nccl "$work/nccl.jsonl" "-") (exit $nccl_rc$([ "$nccl_rc" = 0 ] || echo ": $(tail -1 "$work/nccl.err")"))"
report ""

# PyTorch eager on the same GPU, tuned as a user would, in this same session.
echo "gpu-check: PyTorch reference" >&2
report "## PyTorch eager reference (same GPU, same session)"
report ""
report "| case | PyTorch images/s | cptlab images/s | ratio cptlab/PyTorch |"
report "|---|---|---|---|"
for case in "resnet18 512 bf16 resnet18-amp_bf16" "resnet18 512 fp32 resnet18-fp32" "lenet 16 fp32 lenet-b16-fp32"; do
  read -r model batch prec ours <<<"$case"
  theirs=$(timeout 150 "$py" "$refs/bench/torch_reference_gpu.py" --model "$model" --batch "$batch" \
    --precision "$prec" --device "$device" 2>"$work/ref.err" | "$py" -c 'import json,sys; print(round(json.load(sys.stdin)["images_per_sec"]))' || echo "failed: $(tail -1 "$work/ref.err")")
  mine=$(grep "^| $ours |" "$out" | awk -F'|' '{ gsub(/ /, "", $5); print $5 }')
  ratio=$("$py" -c "import sys; a, b = sys.argv[1:]; print(f'{float(a) / float(b):.2f}')" "${mine:-nan}" "$theirs" 2>/dev/null || echo "?")
  report "| $model b$batch $prec | $theirs | ${mine:-?} | $ratio |"
done
report ""
echo "gpu-check: wrote $out" >&2
