#!/usr/bin/env python3
"""PyTorch eager on a GPU, tuned as a user would: what `scripts/gpu-check.sh` compares cptlab
against in the same session on the same GPU.

The models of bench/torch_reference.py (LeNet, torchvision's ResNet-18 written out), SGD
momentum 0.9, u8 batches from pinned host memory copied non-blocking and normalized on the
GPU, `cudnn.benchmark`, and for `--precision bf16|fp16` `torch.autocast("cuda", dtype)` with
`channels_last` (fp16 with `GradScaler`). The loss is read every 10 steps, as a user who logs
does. Random u8 data of CIFAR's shape (the speed does not depend on the values).

Prints one JSON object: {"model", "batch", "precision", "steps", "images_per_sec",
"seconds_per_epoch" (50,000 images), "torch"}.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import LeNet, ResNet18  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["lenet", "resnet18"], required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--log-every", type=int, default=10)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("torch_reference_gpu: no CUDA device visible to torch")
    dev = torch.device(args.device)
    torch.cuda.set_device(dev)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)

    n = 50_000
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), dtype=torch.int64)
    model = (LeNet(10) if args.model == "lenet" else ResNet18(10)).to(dev)
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    memory_format = torch.channels_last if amp is not None else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)
    mean = torch.tensor([0.5, 0.5, 0.5], device=dev).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.5, 0.5], device=dev).view(1, 3, 1, 1)
    model.train()
    steps_per_perm = n // args.batch
    perm = torch.randperm(n)

    def batch(i):
        idx = perm[(i % steps_per_perm) * args.batch : (i % steps_per_perm + 1) * args.batch]
        x = images[idx].pin_memory().to(dev, non_blocking=True)
        y = labels[idx].pin_memory().to(dev, non_blocking=True)
        x = ((x.float().div_(255) - mean) / std).contiguous(memory_format=memory_format)
        return x, y

    def step(i):
        x, y = batch(i)
        with torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    for i in range(args.warmup):
        step(i)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(args.steps):
        loss = step(args.warmup + i)
        if (i + 1) % args.log_every == 0:
            loss.item()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    print(
        json.dumps(
            {
                "model": args.model,
                "batch": args.batch,
                "precision": args.precision,
                "steps": args.steps,
                "images_per_sec": args.batch / dt,
                "seconds_per_epoch": dt * n / args.batch,
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
