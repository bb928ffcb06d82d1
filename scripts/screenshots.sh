#!/usr/bin/env bash
# `make screenshots`: PNGs of the workbench from real runs, into screenshots/: every view at
# the smallest size it is made for and at a large one (VIEW-80x24.png, VIEW-160x48.png).
# The TUI runs in tmux; `tmux capture-pane -e` keeps the colours as ANSI escapes, a small
# converter below turns them into HTML, and headless Chromium (Debian's package) renders that.
# The same session is resized for each size (the workbench redraws on SIGWINCH), so the live
# run is caught at the same moment in both.
# CPTLAB_TEST_CIFAR10=none makes it use the synthetic set (faster, accuracy means less).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/target/release/cptlab
OUT=$ROOT/screenshots
SIZES="80x24 160x48"
# The size the session waits in (the largest: the most of each view is visible).
COLS=160
ROWS=48

need() {
  command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2"; }
}
need tmux tmux
need chromium chromium
need python3 python3
[ -x "$BIN" ] || { echo "build first: make build" >&2; exit 1; }
mkdir -p "$OUT"

WORK=$(mktemp -d)
S=cptlab-shots-$$
# A tmux server of its own, without the user's tmux.conf: nothing the user has open is touched.
tm() { tmux -L "$S" -f /dev/null "$@"; }
trap 'tm kill-server 2>/dev/null || true; rm -rf "$WORK"' EXIT
# Decoded datasets are kept between invocations (decoding CIFAR-10 takes a while).
CACHE=$ROOT/target/screenshots-cache
ENV=(env -u CPTLAB_DATA "CPTLAB_RUNS_DIR=$WORK/runs" "CPTLAB_PRESETS_DIR=$WORK/presets" "CPTLAB_CACHE_DIR=$CACHE")
# Real CIFAR-10 where the repository has it beside it (accuracy then means something), else
# the synthetic set.
CIFAR=${CPTLAB_TEST_CIFAR10:-$ROOT/../shared/data/cifar10-jpg.tar.gz}
if [ -f "$CIFAR" ]; then
  DATA=$(cd "$(dirname "$CIFAR")" && pwd)/$(basename "$CIFAR")
  EPOCHS_AB=2 EPOCHS_DEMO=6 EPOCHS_SWEEP=1 CAPTURE_AT="epoch 2 done"
else
  DATA=synthetic:16384:2048
  EPOCHS_AB=4 EPOCHS_DEMO=12 EPOCHS_SWEEP=4 CAPTURE_AT="epoch 4 done"
fi
echo "data: $DATA"

echo "two finished runs for Compare: full precision and CPT (CR, 3-8 bits), same seed"
"${ENV[@]}" "$BIN" run --preset quickstart --data "$DATA" --name fp32 --epochs "$EPOCHS_AB" >/dev/null 2>&1
"${ENV[@]}" "$BIN" run --preset quickstart --data "$DATA" --name cpt-cr --epochs "$EPOCHS_AB" \
  --cpt CR --q-min 3 --q-max 8 --cycles 8 >/dev/null 2>&1

echo "a small sweep for the Sweeps view: three schedules x two seeds"
"${ENV[@]}" "$BIN" sweep --preset quickstart --data "$DATA" --sweep-name schedules \
  --vary precision.schedule.kind=CR,RR,static --seeds 2 --epochs "$EPOCHS_SWEEP" \
  >/dev/null 2>&1

# The run the Dashboard shows: long enough to be caught half-way.
mkdir -p "$WORK/presets"
cat >"$WORK/presets/cpt-demo.toml" <<'EOF'
name = "cpt-demo"
description = "LeNet with a cyclic precision schedule (CR, 3-8 bits, 8 cycles)"
seed = 42
[model]
kind = "lenet"
[data]
random_crop_padding = 0
horizontal_flip = false
normalize = "half"
[optimizer]
kind = "sgd"
lr = 0.05
momentum = 0.9
[lr_schedule]
kind = "cosine_annealing"
[train]
batch_size = 64
epochs = EPOCHS_DEMO
[precision.schedule]
kind = "CR"
q_min = 3
q_max = 8
cycles = 8
EOF
sed -i "s/EPOCHS_DEMO/$EPOCHS_DEMO/" "$WORK/presets/cpt-demo.toml"

wait_for() {
  for _ in $(seq 1 600); do
    if tm capture-pane -p -t "$S" | grep -qF -- "$1"; then return 0; fi
    sleep 0.25
  done
  echo "timed out waiting for: $1" >&2
  tm capture-pane -p -t "$S" >&2
  exit 1
}

keys() {
  for k in "$@"; do tm send-keys -t "$S" "$k"; sleep 0.3; done
}

resize() {
  tm resize-window -t "$S" -x "$1" -y "$2"
}

# shot VIEW: VIEW-80x24.png and VIEW-160x48.png, then back to the waiting size.
shot() {
  local view=$1 size
  for size in $SIZES; do
    resize "${size%x*}" "${size#*x}"
    # The redraw after SIGWINCH, and a frame of the live run at the new size.
    sleep 1.2
    render "$view-$size" "${size%x*}" "${size#*x}"
  done
  resize "$COLS" "$ROWS"
  sleep 0.5
}

render() {
  local name=$1 cols=$2 rows=$3
  tm capture-pane -e -p -t "$S" >"$WORK/$name.ans"
  python3 - "$WORK/$name.ans" "$WORK/$name.html" "$cols" <<'PY'
# ANSI (SGR) → HTML, one div per row, every non-ASCII cell pinned to one column so glyphs
# that come from a fallback font (Braille, arrows) keep the grid.
import html, sys

src, dst, cols = sys.argv[1], sys.argv[2], int(sys.argv[3])
BASE = ["#1d1f21", "#cc6666", "#b5bd68", "#f0c674", "#81a2be", "#b294bb", "#8abeb7", "#c5c8c6",
        "#666666", "#d54e53", "#b9ca4a", "#e7c547", "#7aa6da", "#c397d8", "#70c0b1", "#eaeaea"]
FG, BG = "#c5c8c6", "#1d1f21"

def c256(n):
    if n < 16:
        return BASE[n]
    if n < 232:
        n -= 16
        v = [0, 95, 135, 175, 215, 255]
        return "#%02x%02x%02x" % (v[n // 36], v[n // 6 % 6], v[n % 6])
    g = 8 + (n - 232) * 10
    return "#%02x%02x%02x" % (g, g, g)

def sgr(state, params):
    p = [int(x) if x else 0 for x in params.split(";")] if params else [0]
    i = 0
    while i < len(p):
        n = p[i]
        if n == 0:
            state.clear()
        elif n == 1:
            state["b"] = True
        elif n == 2:
            state["dim"] = True
        elif n == 3:
            state["i"] = True
        elif n == 4:
            state["u"] = True
        elif n == 7:
            state["rev"] = True
        elif n == 22:
            state.pop("b", None); state.pop("dim", None)
        elif n == 23:
            state.pop("i", None)
        elif n == 24:
            state.pop("u", None)
        elif n == 27:
            state.pop("rev", None)
        elif 30 <= n <= 37:
            state["fg"] = BASE[n - 30]
        elif 90 <= n <= 97:
            state["fg"] = BASE[n - 90 + 8]
        elif 40 <= n <= 47:
            state["bg"] = BASE[n - 40]
        elif 100 <= n <= 107:
            state["bg"] = BASE[n - 100 + 8]
        elif n == 39:
            state.pop("fg", None)
        elif n == 49:
            state.pop("bg", None)
        elif n in (38, 48) and i + 1 < len(p):
            key = "fg" if n == 38 else "bg"
            if p[i + 1] == 5 and i + 2 < len(p):
                state[key] = c256(p[i + 2]); i += 2
            elif p[i + 1] == 2 and i + 4 < len(p):
                state[key] = "#%02x%02x%02x" % tuple(p[i + 2:i + 5]); i += 4
        i += 1

def style(state):
    fg, bg = state.get("fg", FG), state.get("bg", None)
    if state.get("rev"):
        fg, bg = (bg or BG), fg
    css = ["color:" + fg]
    if bg:
        css.append("background:" + bg)
    if state.get("b"):
        css.append("font-weight:bold")
    if state.get("dim"):
        css.append("opacity:.6")
    if state.get("i"):
        css.append("font-style:italic")
    if state.get("u"):
        css.append("text-decoration:underline")
    return ";".join(css)

# Braille cells drawn as 2x4 dots filling the cell, as a terminal font does (fallback fonts
# draw them small and narrow).
DOTS = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (0, 3), (1, 3)]
def braille(bits):
    dots = "".join('<circle cx="%.2f" cy="%.2f" r="0.36"/>' % (0.5 + x, 0.5 + y)
                   for i, (x, y) in enumerate(DOTS) if bits >> i & 1)
    return '<svg class="b" viewBox="0 0 2 4" preserveAspectRatio="none">%s</svg>' % dots

rows = []
for line in open(src, encoding="utf-8", errors="replace").read().split("\n"):
    state, out, i, width = {}, [], 0, 0
    while i < len(line):
        ch = line[i]
        if ch == "\x1b" and i + 1 < len(line) and line[i + 1] == "[":
            j = i + 2
            while j < len(line) and not ("@" <= line[j] <= "~"):
                j += 1
            if j < len(line) and line[j] == "m":
                sgr(state, line[i + 2:j])
            i = j + 1
            continue
        o = ord(ch)
        cell = html.escape(ch)
        if 0x2800 <= o <= 0x28FF:
            cell = braille(o - 0x2800)
        elif 0x25A0 <= o <= 0x25FF or 0x2700 <= o <= 0x27BF or 0x2190 <= o <= 0x21FF:
            # Not in DejaVu Sans Mono: pinned to one column.
            cell = '<span class="c">%s</span>' % cell
        out.append('<span style="%s">%s</span>' % (style(state), cell))
        width += 1
        i += 1
    if width < cols:
        out.append(" " * (cols - width))
    rows.append('<div class="r">%s</div>' % "".join(out))
while rows and rows[-1] == '<div class="r">%s</div>' % (" " * cols):
    rows.pop()
page = """<!doctype html><html><head><meta charset="utf-8"><style>
body{margin:0;background:%s}
pre{margin:0;padding:14px 16px;font-family:'DejaVu Sans Mono',monospace;font-size:15px;
line-height:1.15;color:%s;white-space:pre}
.r{height:1.15em;overflow:hidden}
.c{display:inline-block;width:1ch;overflow:visible;text-align:center;vertical-align:top}
.b{display:inline-block;width:1ch;height:1.15em;vertical-align:top;fill:currentColor}
</style></head><body><pre>%s</pre></body></html>""" % (BG, FG, "".join(rows))
open(dst, "w", encoding="utf-8").write(page)
PY
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$(mktemp -d -p "$WORK")" \
    --screenshot="$OUT/$name.png" --window-size=$((cols * 91 / 10 + 40)),$((rows * 173 / 10 + 30)) "file://$WORK/$name.html" \
    >/dev/null 2>&1
  echo "screenshots/$name.png ($(du -k "$OUT/$name.png" | cut -f1) KB)"
}

tm new-session -d -s "$S" -x "$COLS" -y "$ROWS" "${ENV[*]} $BIN --preset cpt-demo --data $DATA"
# Sized by resize-window from here on, not by a client.
tm set-option -t "$S" window-size manual
wait_for "Setup · preset cpt-demo"
keys Down Down Down
shot setup

# s shows what will start and asks.
keys s
wait_for "Start this run?"
keys y
wait_for "$CAPTURE_AT"
shot dashboard

# Compare the two finished runs: Runs lists newest first (the live run, cpt-cr, fp32);
# the first marked is A.
keys 5
wait_for "Runs ·"
keys Up Up Up Down Down Space Up Space c
wait_for "A / B"
shot compare

keys 5
wait_for "Runs ·"
shot runs

keys 4
wait_for "Presets"
shot presets

keys 6
wait_for "schedules"
keys Enter
shot sweeps

# Leave: the demo run is still live, so stop it.
keys q
wait_for "Leave the workbench?"
keys x
sleep 1
echo "done"
