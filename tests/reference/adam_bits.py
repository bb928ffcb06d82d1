"""Reference bits for `adam_and_adamw_match_torch_optim_bit_for_bit` in src/engine/optim.rs.

Not run by the tests (they hard-code what this prints). torch.optim.Adam/AdamW on CPU with
foreach=False (`_single_tensor_adam`, what torch picks for CPU tensors), a warmup that starts at
lr 0, gradients with exact zeros (where the second moment stays 0).

Usage: python tests/reference/adam_bits.py
"""
import torch

torch.manual_seed(0)
n = 16
p0 = torch.randn(n)
grads = [torch.randn(n) * (torch.arange(n) % 3 != 0) for _ in range(4)]
lrs = [0.0, 1e-3, 0.0, 3e-3]


def bits(t):
    return ", ".join(f"0x{x & 0xFFFFFFFF:08x}" for x in t.view(torch.int32).tolist())


print(f"const P0: [u32; {n}] = [{bits(p0)}];")
print(f"const GRADS: [[u32; {n}]; {len(grads)}] = [")
for g in grads:
    print(f"    [{bits(g)}],")
print("];")
print(f"const LRS: [f64; {len(lrs)}] = {lrs};")
for name, cls, wd in [("ADAM", torch.optim.Adam, 0.01), ("ADAMW", torch.optim.AdamW, 0.1)]:
    p = torch.nn.Parameter(p0.clone())
    opt = cls([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd, foreach=False)
    for lr, g in zip(lrs, grads):
        opt.param_groups[0]["lr"] = lr
        p.grad = g.clone()
        opt.step()
    print(f"// {cls.__name__}(betas=(0.9, 0.999), eps=1e-8, weight_decay={wd})")
    print(f"const {name}: [u32; {n}] = [{bits(p.detach())}];")
