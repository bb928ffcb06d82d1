#!/usr/bin/env bash
# `make reproduce`: runs the small-scale reproduction sweeps (docs/reproduction/*.toml) on real
# CIFAR-10 and regenerates docs/REPRODUCTION.md from `cptlab compare`'s outputs (tables as
# Markdown, plots as SVG, verdicts computed from the JSON by scripts/reproduce_verdicts.py) and the
# hand-written headers beside the sweep files (docs/reproduction/*.head.md).
#
# Resumable: runs go to $REPRO_WORK (default target/reproduce/runs), and a rerun skips every
# finished point, so an interrupted `make reproduce` loses at most a point's current epoch.
# Nothing goes to the user's runs, presets or cache directories.
#
# Environment: BIN (default target/release/cptlab), CPTLAB_TEST_CIFAR10 (the JPEG archive,
# default ../shared/data/cifar10-jpg.tar.gz), REPRO_WORK (default target/reproduce),
# PYTHON (default python3), REPRO_ONLY="01 03" to run only some sweeps (the document is still
# written from whatever is recorded).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/cptlab}
ARCHIVE=${CPTLAB_TEST_CIFAR10:-../shared/data/cifar10-jpg.tar.gz}
WORK=${REPRO_WORK:-target/reproduce}
PYTHON=${PYTHON:-python3}
SRC=docs/reproduction
DOC=docs/REPRODUCTION.md
ONLY=${REPRO_ONLY:-}

[ -x "$BIN" ] || { echo "reproduce: $BIN is missing; run make build first" >&2; exit 1; }
[ -f "$ARCHIVE" ] || { echo "reproduce: $ARCHIVE is missing (set CPTLAB_TEST_CIFAR10 to the CIFAR-10 JPEG archive)" >&2; exit 1; }
mkdir -p "$WORK/runs" "$WORK/cache" "$WORK/json" "$WORK/logs" "$WORK/times" "$WORK/data"

# The subset: the first 1,000 training images of each class (0000-0999.jpg) and the whole test
# set, extracted once from the real archive.
SUB="$WORK/data/cifar10-train10k"
if [ ! -f "$SUB.done" ]; then
    rm -rf "$SUB" && mkdir -p "$SUB"
    tar -xzf "$ARCHIVE" -C "$SUB" --wildcards 'train/*/0???.jpg' 'test/*'
    n_train=$(find "$SUB/train" -name '*.jpg' | wc -l)
    n_test=$(find "$SUB/test" -name '*.jpg' | wc -l)
    [ "$n_train" -eq 10000 ] && [ "$n_test" -eq 10000 ] || {
        echo "reproduce: expected 10000 train and 10000 test images in $SUB, found $n_train and $n_test" >&2
        exit 1
    }
    touch "$SUB.done"
fi

# A copy of the binary, so a rebuild during the sweeps does not change it under them.
mkdir -p "$WORK/bin" && cp "$BIN" "$WORK/bin/cptlab.tmp" && mv "$WORK/bin/cptlab.tmp" "$WORK/bin/cptlab"
BIN="$WORK/bin/cptlab"
cptlab() { "$BIN" --runs-dir "$WORK/runs" --cache-dir "$WORK/cache" "$@"; }

# sweep ID FILE: runs one sweep (skipping finished points), records its wall time.
sweep() {
    local id=$1 file=$2 name t0 t1 rc=0
    name=$(sed -n 's/^name = "\(.*\)"/\1/p' "$file")
    if [ -n "$ONLY" ] && [[ " $ONLY " != *" $id "* ]]; then
        return 0
    fi
    echo "reproduce: sweep $id ($file) into $WORK/runs/$name"
    t0=$(date +%s)
    cptlab sweep "$file" --data "$SUB" --json >"$WORK/logs/$name.jsonl" 2>"$WORK/logs/$name.err" || rc=$?
    t1=$(date +%s)
    echo "$(date -u +%FT%TZ) $((t1 - t0)) $rc" >>"$WORK/times/$name"
    grep -h '"event":"sweep_ended"' "$WORK/logs/$name.jsonl" | tail -1 || true
    [ "$rc" -eq 0 ] || echo "reproduce: sweep $id exited $rc (see $WORK/logs/$name.err); the document says so" >&2
}

sweep 01 "$SRC/01-deepspeed-lenet.toml"
sweep 02 "$SRC/02-deepspeed-vit-speed.toml"
sweep 03 "$SRC/03-cpt-schedules.toml"
sweep 04 "$SRC/04-critical-windows.toml"
sweep 05 "$SRC/05-linear-scaling.toml"

R="$WORK/runs"
# compare ID ARGS...: the table (Markdown) into docs/reproduction/ID.table.md and the JSON.
compare() {
    local id=$1
    shift
    cptlab compare "$@" --md -o "$SRC/$id.table.md"
    cptlab compare "$@" --json -o "$WORK/json/$id.json"
}

# times NAME: the wall time of the sweep's invocations (seconds), for the document.
times() {
    local f="$WORK/times/$1"
    [ -f "$f" ] || { echo "not run"; return; }
    awk '{s += $2; n++; if ($3 != 0) bad = 1} END {
        printf "%d s (%.1f min) over %d invocation%s%s", s, s / 60, n, (n > 1 ? "s; points finished earlier were skipped" : ""),
            (bad ? "; **a point failed**, see the sweep log" : "") }' "$f"
}

sweep_dir() { echo "$R/$(sed -n 's/^name = "\(.*\)"/\1/p' "$SRC/$1.toml")"; }

S1=$(sweep_dir 01-deepspeed-lenet)
S2=$(sweep_dir 02-deepspeed-vit-speed)
S3=$(sweep_dir 03-cpt-schedules)
S4=$(sweep_dir 04-critical-windows)
S5=$(sweep_dir 05-linear-scaling)

compare 01-deepspeed-lenet "$S1" --by description --baseline DeepSpeed-style \
    --plot-curves "$SRC/01-deepspeed-lenet.curves.svg"
compare 02-deepspeed-speed "$S1" "$S2" --by model.kind --by description
compare 03-cpt-schedules "$S3" --baseline static --plot "$SRC/03-cpt-schedules.svg" \
    --plot-curves "$SRC/03-cpt-schedules.curves.svg"
cptlab compare "$S3" --baseline static --plot "$SRC/03-cpt-schedules.png" -o "$WORK/json/03-png.txt"
compare 04-critical-windows "$S4" --by description --baseline "none (static" \
    --plot-curves "$SRC/04-critical-windows.curves.svg"
cptlab compare "$S4" --by description --baseline "deficit [0, N/4)" --json -o "$WORK/json/04-first.json"
compare 05-linear-scaling "$S5" --by description --baseline "small-batch" \
    --plot-curves "$SRC/05-linear-scaling.curves.svg"

section() { # ID HEAD SWEEP_NAME VERDICT_ARGS...
    local id=$1 head=$2 name=$3
    shift 3
    cat "$SRC/$head.head.md"
    echo
    echo "**Sweep file:** [reproduction/$id.toml](reproduction/$id.toml) — wall time: $(times "$name")."
    echo
    echo "**Result** (\`cptlab compare\`):"
    echo
    cat "$SRC/$head.table.md"
    echo
}

{
    echo "# Reproduction"
    echo
    echo "Generated by \`make reproduce\` (scripts/reproduce.sh) on $(date -u +%F) from the sweeps in"
    echo "[docs/reproduction/](reproduction/); edit the sweep files or the \`*.head.md\` headers beside"
    echo "them, not this file. cptlab $(git describe --always --dirty 2>/dev/null || echo unknown),"
    echo "$(nproc) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), no GPU."
    echo
    echo "**Everything here is a scale-down.** Each claim runs on real CIFAR-10 (the JPEG copy of the"
    echo "full set; a 10,000-image training subset, the first 1,000 images of each class, and the full"
    echo "10,000-image test set), for 1–3 epochs, with LeNet or a small ViT instead of the papers'"
    echo "models, and 2–3 seeds per group: enough for a 95% interval, not for small effects. The whole"
    echo "run had to fit in about half an hour on 2 CPU cores that other builds were using at the same"
    echo "time, so the timings are noisy. A verdict says only what these runs show: *holds*,"
    echo "*does not hold* or *inconclusive at this scale*, with the interval it rests on. Intervals are"
    echo "95% Student t over seeds; Δ columns are seed-paired differences to the baseline group."
    echo "The full-scale sweep files are in [reproduction/full/](reproduction/full/) — **not run**."
    echo
    section 01-deepspeed-lenet 01-deepspeed-lenet repro-01-deepspeed-lenet
    echo "![claim 1 curves](reproduction/01-deepspeed-lenet.curves.svg)"
    echo
    "$PYTHON" scripts/reproduce_verdicts.py 1 "$WORK/json/01-deepspeed-lenet.json"
    echo
    section 02-deepspeed-vit-speed 02-deepspeed-speed repro-02-deepspeed-vit-speed
    "$PYTHON" scripts/reproduce_verdicts.py 2 "$WORK/json/02-deepspeed-speed.json"
    echo
    section 03-cpt-schedules 03-cpt-schedules repro-03-cpt-schedules
    echo "![claim 3: accuracy vs GBitOps](reproduction/03-cpt-schedules.svg)"
    echo "(also as [PNG](reproduction/03-cpt-schedules.png))"
    echo
    echo "![claim 3 curves](reproduction/03-cpt-schedules.curves.svg)"
    echo
    "$PYTHON" scripts/reproduce_verdicts.py 3 "$WORK/json/03-cpt-schedules.json"
    echo
    section 04-critical-windows 04-critical-windows repro-04-critical-windows
    echo "![claim 4 curves](reproduction/04-critical-windows.curves.svg)"
    echo
    "$PYTHON" scripts/reproduce_verdicts.py 4 "$WORK/json/04-critical-windows.json" "$WORK/json/04-first.json"
    echo
    section 05-linear-scaling 05-linear-scaling repro-05-linear-scaling
    echo "![claim 5 curves](reproduction/05-linear-scaling.curves.svg)"
    echo
    "$PYTHON" scripts/reproduce_verdicts.py 5 "$WORK/json/05-linear-scaling.json"
    echo
    cat "$SRC/full/README.md"
} >"$DOC.tmp"
mv "$DOC.tmp" "$DOC"
echo "reproduce: wrote $DOC"
