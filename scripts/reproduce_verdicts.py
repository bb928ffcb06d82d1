#!/usr/bin/env python3
"""Verdicts for docs/REPRODUCTION.md from `cptlab compare --json` outputs (scripts/reproduce.sh).

Usage: reproduce_verdicts.py CLAIM JSON [JSON ...]  -> Markdown on stdout.
Every verdict is "holds", "does not hold" or "inconclusive at this scale", decided only from the
95% intervals cptlab computed (seed-paired differences, or the groups' own intervals); the rule of
each claim is printed with it. Standard library only.
"""
import json
import sys


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def pp(e, signed=True):
    """An accuracy estimate (fractions) in percentage points with its interval."""
    if not e or e.get("mean") is None:
        return "n/a"
    m = e["mean"] * 100
    s = f"{m:+.2f}" if signed else f"{m:.2f}"
    if e.get("half_width") is None:
        return f"{s} (one seed: no interval)"
    return f"{s} ± {e['half_width'] * 100:.2f} (95% CI {e['lo'] * 100:+.2f} to {e['hi'] * 100:+.2f})"


def sign(e):
    """+1 when the interval lies above 0, -1 below, 0 when it spans 0 or is missing."""
    if not e or e.get("lo") is None:
        return 0
    if e["lo"] > 0:
        return 1
    if e["hi"] < 0:
        return -1
    return 0


def group(doc, *parts):
    hits = [g for g in doc["groups"] if all(p in g["label"] for p in parts)]
    if len(hits) > 1:
        # "normal: SGD" is also part of "normal: SGD + CyclicLR": a label ending there wins.
        hits = [g for g in hits if g["label"].endswith(parts[-1])] or hits
    if len(hits) != 1:
        raise SystemExit(f"verdicts: {len(hits)} groups match {parts!r} in {[g['label'] for g in doc['groups']]}")
    return hits[0]


def short(label):
    """A group label without the `description=` / key prefixes."""
    return ", ".join(kv.split("=", 1)[-1] for kv in label.split(", ") if not kv.startswith("model.kind="))


def unfinished_note(docs):
    bad = [(g["label"], g["not_finished"]) for d in docs for g in d["groups"] if g["not_finished"]]
    if not bad:
        return ""
    return "\n\n**Some runs did not finish** (left out of the figures): " + "; ".join(
        f"{short(l)}: {n}" for l, n in bad
    )


def claim1(doc):
    base = doc["baseline"]
    lines, signs = [], []
    for g in doc["groups"]:
        if g["label"] == base:
            continue
        d = g["delta_final_vs_baseline"]
        s = sign(d)
        signs.append(s)
        what = {1: "normal above DeepSpeed-style (the paper's direction)",
                -1: "normal below DeepSpeed-style (against the paper)",
                0: "no difference detected"}[s]
        lines.append(f"- {short(g['label'])} − DeepSpeed-style: {pp(d)} points, n = {d['n']} seed pairs: {what}.")
    if signs and all(s == 1 for s in signs):
        v = "**holds** at this scale: every normal group ends above the DeepSpeed-style group"
    elif any(s == -1 for s in signs):
        v = "**does not hold** at this scale: at least one normal group ends significantly below the DeepSpeed-style group"
    else:
        v = "**inconclusive at this scale**: not every difference is distinguishable from 0 with these seeds"
    return ("Rule: holds when every normal group's seed-paired Δ to the DeepSpeed-style group has a 95% "
            "interval above 0; does not hold when any lies below 0.\n\n" + "\n".join(lines)
            + f"\n\n**Verdict:** {v}." + unfinished_note([doc]))


def secs(e):
    if not e or e.get("mean") is None:
        return "n/a"
    if e.get("half_width") is None:
        return f"{e['mean']:.2f} s (one run)"
    return f"{e['mean']:.2f} ± {e['half_width']:.2f} s"


def claim2(doc):
    out, results = [], []
    for model, paper in (("lenet", 1), ("vit", -1)):
        if model == "lenet":
            normal = group(doc, "model.kind=lenet", "description=normal: SGD")
        else:
            normal = group(doc, "model.kind=vit", "normal:")
        ds = group(doc, f"model.kind={model}", "DeepSpeed-style")
        n, d = normal["seconds_per_epoch"], ds["seconds_per_epoch"]
        if None in (n.get("lo"), d.get("lo")):
            s = 0
        elif d["lo"] > n["hi"]:
            s = 1
        elif d["hi"] < n["lo"]:
            s = -1
        else:
            s = 0
        ratio = d["mean"] / n["mean"] if n.get("mean") and d.get("mean") else float("nan")
        what = {1: "DeepSpeed-style slower", -1: "DeepSpeed-style faster", 0: "intervals overlap: no direction shown"}[s]
        agrees = {True: "as the paper", False: "against the paper"}[s == paper] if s else "neither way"
        out.append(f"- {model}: normal {secs(n)}/epoch, DeepSpeed-style {secs(d)}/epoch "
                   f"(ratio {ratio:.2f}×): {what} ({agrees}).")
        results.append(0 if s == 0 else (1 if s == paper else -1))
    if all(r == 1 for r in results):
        v = "**holds** on this machine: DeepSpeed-style slower on LeNet and faster on the ViT"
    elif any(r == -1 for r in results):
        v = ("**does not hold** on this machine for the model(s) marked \"against the paper\" "
             "(a CPU's bf16 kernels, not a GPU's, decide the speed here)")
    else:
        shown = [m for m, r in zip(("LeNet", "ViT"), results) if r == 1]
        open_ = [m for m, r in zip(("LeNet", "ViT"), results) if r == 0]
        v = ("**inconclusive at this scale**: "
             + (f"{' and '.join(shown)} as the paper, " if shown else "")
             + f"the intervals overlap for {' and '.join(open_)}")
    return ("Rule: a direction only where the 95% intervals of s/epoch do not overlap.\n\n" + "\n".join(out)
            + f"\n\n**Verdict:** {v}." + unfinished_note([doc]))


def claim3(doc):
    base = doc["baseline"]
    rows, worse, better, cheaper = [], [], [], []
    for g in doc["groups"]:
        if g["label"] == base:
            continue
        d, r = g["delta_final_vs_baseline"], g["gbitops_ratio"]
        s = sign(d)
        name = g["label"].split("=", 1)[-1]
        (better if s == 1 else worse if s == -1 else []).append(name)
        if r.get("mean") is not None and r["mean"] < 1:
            cheaper.append(name)
        ratio = f"{r['mean']:.3f}" if r.get("mean") is not None else "n/a"
        what = {1: "better", -1: "worse", 0: "no difference detected"}[s]
        rows.append(f"| {name} | {ratio} | {pp(d)} | {what} |")
    n_cpt = len(rows)
    table = "| schedule | GBitOps ÷ static | Δ final acc vs static (points) | |\n|---|---|---|---|\n" + "\n".join(rows)
    if worse:
        v = f"**does not hold** at this scale for {', '.join(worse)} (significantly below static)"
        if len(worse) < n_cpt:
            v += f"; the other {n_cpt - len(worse)} schedules show no significant loss"
    elif len(better) == n_cpt and len(cheaper) == n_cpt:
        v = "**holds** at this scale: every schedule is cheaper and significantly better than static"
    else:
        v = (f"**inconclusive at this scale**: {len(cheaper)} of {n_cpt} schedules cost less than static, "
             f"none is significantly worse, {len(better)} significantly better; with 2 seeds \"no "
             "difference detected\" is not evidence of equality")
    return ("Rule: per schedule, the seed-paired Δ to static is better/worse where its 95% interval excludes 0. "
            "Holds when every schedule is cheaper and significantly better; does not hold where a schedule is "
            "significantly worse; inconclusive otherwise.\n\n" + table + f"\n\n**Verdict:** {v}." + unfinished_note([doc]))


def claim4(none_doc, first_doc):
    lines = ["(a) Deficits against no deficit (seed-paired Δ of final accuracy, points):", ""]
    deficits = [g for g in none_doc["groups"] if "deficit [0," in g["label"]]
    for g in deficits:
        lines.append(f"- {short(g['label'])}: {pp(g['delta_final_vs_baseline'])}")
    longest = [g for g in deficits if "N/2" in g["label"]][0]
    s = sign(longest["delta_final_vs_baseline"])
    means = [g["delta_final_vs_baseline"]["mean"] for g in deficits]
    monotone = all(a >= b for a, b in zip(means, means[1:]))
    va = {1: "**does not hold**: the longest deficit ends significantly above no deficit",
          -1: "**holds**: the longest deficit [0, N/2) ends significantly below no deficit",
          0: "**inconclusive at this scale**: the longest deficit's interval spans 0"}[s]
    va += f"; the mean loss {'does' if monotone else 'does not'} grow with R"
    lines += ["", f"Verdict (a): {va}.", "", "(b) Later windows of length N/4 against the first one, [0, N/4):", ""]
    later = [g for g in first_doc["groups"] if g["label"].split("=", 1)[-1].startswith("window [")]
    for g in later:
        lines.append(f"- {short(g['label'])}: {pp(g['delta_final_vs_baseline'])}")
    last = [g for g in later if "3N/4, N" in g["label"]][0]
    s = sign(last["delta_final_vs_baseline"])
    vb = {1: "**holds**: the last window [3N/4, N) ends significantly above the first one",
          -1: "**does not hold**: the last window ends significantly below the first one",
          0: "**inconclusive at this scale**: the interval of last − first spans 0"}[s]
    lines += ["", f"Verdict (b): {vb}."]
    return "\n".join(lines) + unfinished_note([none_doc])


def claim5(doc):
    lines = []
    verdict = None
    for g in doc["groups"]:
        if g["label"] == doc["baseline"]:
            continue
        d = g["delta_final_vs_baseline"]
        if d.get("lo") is None:
            v = "inconclusive (no interval)"
        elif d["hi"] < 0:
            v = "accuracy loss (interval below 0)"
        elif d["lo"] > -0.01:
            v = "no loss beyond 1 point (interval above −1)"
        else:
            v = "inconclusive"
        lines.append(f"- {short(g['label'])} − baseline: {pp(d)} points: {v}.")
        if "warmup)" in g["label"] and "+" in g["label"]:
            verdict = v
    if verdict is None:
        v = "**inconclusive at this scale** (the warmup group is missing)"
    elif verdict.startswith("no loss"):
        v = "**holds** at this scale (within a 1-point margin) for linear scaling + gradual warmup"
    elif verdict.startswith("accuracy loss"):
        v = "**does not hold** at this scale: linear scaling + warmup ends below the small-batch baseline"
    else:
        v = "**inconclusive at this scale**: the interval reaches below −1 point but not entirely below 0"
    return ("Rule (margin 1 point): holds when the warmup group's seed-paired Δ to the baseline has a 95% interval "
            "above −1 point; does not hold when it lies below 0.\n\n" + "\n".join(lines)
            + f"\n\n**Verdict:** {v}." + unfinished_note([doc]))


def main():
    claim, paths = sys.argv[1], sys.argv[2:]
    docs = [load(p) for p in paths]
    fn = {"1": claim1, "2": claim2, "3": claim3, "4": claim4, "5": claim5}[claim]
    print(fn(*docs))


if __name__ == "__main__":
    main()
