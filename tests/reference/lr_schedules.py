"""Reference LR and momentum sequences for the tests in src/schedule/lr.rs.

Not run by the tests (they hard-code the numbers printed here). Runs the libraries' own code:
- DeepSpeed 0.19.8's `deepspeed/runtime/lr_schedules.py`, imported by path from the sdist
  (`pip download --no-deps --no-binary :all: deepspeed==0.19.8`, untar) with a stub for
  `deepspeed.utils.logger` (the module's only DeepSpeed import), so nothing is built;
- PyTorch's `torch.optim.lr_scheduler.CyclicLR`.

Usage: python tests/reference/lr_schedules.py /path/to/deepspeed-0.19.8/deepspeed/runtime/lr_schedules.py

Each sequence is what optimizer step s (0-based) runs with, in DeepSpeed's engine order
(`optimizer.step()` then `lr_scheduler.step()`) and PyTorch's (`scheduler.step()` after
`optimizer.step()`): the value read from the param group before step s.
"""
import importlib.util
import logging
import sys
import types

import torch

ds_path = sys.argv[1]
utils = types.ModuleType("deepspeed.utils")
utils.logger = logging.getLogger("deepspeed-stub")
sys.modules["deepspeed"] = types.ModuleType("deepspeed")
sys.modules["deepspeed.utils"] = utils
spec = importlib.util.spec_from_file_location("ds_lr_schedules", ds_path)
ds = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ds)


def params():
    return [torch.nn.Parameter(torch.zeros(1))]


def run(opt, sched, steps, key):
    out = []
    for _ in range(steps):
        g = opt.param_groups[0]
        mom = g["betas"][0] if "betas" in g else g.get("momentum")
        out.append((g["lr"], mom))
        opt.step()
        sched.step()
    return out


def show(name, seq, picks):
    print(name)
    for s in picks:
        lr, mom = seq[s]
        print(f"  step {s}: lr {lr!r} momentum {mom!r}")


# WarmupCosineLR past total_num_steps: base 0.5, W = 10 (log), total 110, ratios 0.1 / 0.01.
opt = torch.optim.SGD(params(), lr=0.5)
sched = ds.WarmupCosineLR(opt, total_num_steps=110, warmup_min_ratio=0.1, warmup_num_steps=10,
                          cos_min_ratio=0.01, warmup_type="log")
show("WarmupCosineLR", run(opt, sched, 200, None), [0, 1, 5, 11, 60, 109, 110, 111, 150, 199])

# warmup_num_steps = 0 raises in every warmup schedule.
for cls, kw in [(ds.WarmupLR, {}), (ds.WarmupDecayLR, {"total_num_steps": 100}),
                (ds.WarmupCosineLR, {"total_num_steps": 100})]:
    try:
        cls(torch.optim.SGD(params(), lr=0.1), warmup_num_steps=0, **kw)
        print(cls.__name__, "warmup_num_steps=0: accepted")
    except ValueError as e:
        print(cls.__name__, "warmup_num_steps=0:", e)
    s = cls(torch.optim.SGD(params(), lr=0.1), warmup_num_steps=1, **kw)
    print(cls.__name__, "warmup_num_steps=1 ->", s.warmup_num_steps)

# OneCycle with stairs, on Adam (betas cycled) and SGD (momentum not cycled: no betas).
kw = dict(cycle_min_lr=0.1, cycle_max_lr=1.0, decay_lr_rate=0.5, cycle_first_step_size=4,
          cycle_second_step_size=6, cycle_first_stair_count=2, cycle_second_stair_count=3,
          decay_step_size=5, cycle_min_mom=0.8, cycle_max_mom=0.9, decay_mom_rate=0.1)
opt = torch.optim.Adam(params(), lr=1.0, betas=(0.9, 0.999))
seq = run(opt, ds.OneCycle(opt, **kw), 30, None)
show("OneCycle stairs 2/3 on Adam", seq, range(0, 30))
print("  beta2 after:", opt.param_groups[0]["betas"][1])
opt = torch.optim.SGD(params(), lr=1.0, momentum=0.9)
show("OneCycle stairs 2/3 on SGD", run(opt, ds.OneCycle(opt, **kw), 12, None), [0, 1, 4, 7])
# Default stair counts, no momentum decay, asymmetric 3/7.
opt = torch.optim.Adam(params(), lr=1.0)
seq = run(opt, ds.OneCycle(opt, cycle_min_lr=0.01, cycle_max_lr=0.1, cycle_first_step_size=3,
                           cycle_second_step_size=7, decay_step_size=2), 14, None)
show("OneCycle continuous 3/7 on Adam", seq, range(0, 14))
# A single stair count (second = first) over a 5/5 cycle.
opt = torch.optim.Adam(params(), lr=1.0)
seq = run(opt, ds.OneCycle(opt, cycle_min_lr=0.0, cycle_max_lr=1.0, cycle_first_step_size=5,
                           cycle_first_stair_count=2), 11, None)
show("OneCycle stairs 2 (second None) 5/5", seq, range(0, 11))

# PyTorch CyclicLR with momentum: base 0.1, max 0.5, up 2, down 3.
for mode, gamma in [("triangular", 1.0), ("triangular2", 1.0), ("exp_range", 0.9)]:
    opt = torch.optim.SGD(params(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.1, max_lr=0.5, step_size_up=2,
                                              step_size_down=3, mode=mode, gamma=gamma)
    show(f"CyclicLR {mode} on SGD", run(opt, sched, 12, None), range(0, 12))
opt = torch.optim.Adam(params(), lr=0.1, betas=(0.95, 0.999))
sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.1, max_lr=0.5, step_size_up=2,
                                          step_size_down=3, base_momentum=0.85, max_momentum=0.95)
show("CyclicLR triangular on Adam (base_momentum 0.85, max 0.95)", run(opt, sched, 6, None),
     range(0, 6))
print("  beta2 after:", opt.param_groups[0]["betas"][1])
# SGD without momentum: PyTorch still cycles it (SGD's defaults have `momentum`).
opt = torch.optim.SGD(params(), lr=0.1)
sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.1, max_lr=0.5, step_size_up=2)
show("CyclicLR on SGD(momentum=0)", run(opt, sched, 3, None), range(0, 3))
