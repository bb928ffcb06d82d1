#!/usr/bin/env python3
"""The PyTorch eager loop that `cptlab bench` measures itself against.

Same work as cptlab's training step: a u8 batch gathered from the decoded dataset in memory,
converted to float and normalized, forward, cross-entropy, backward, torch.optim.SGD step
(momentum 0.9) with PyTorch's defaults. Reads the dataset from cptlab's cache file
(`CPTLAB01` magic, u64 header length, JSON header, train images, train labels u16 LE, …).

Prints one JSON object: {"model", "batch", "threads", "steps", "seconds_per_step": [per rep]}.
"""
import argparse
import json
import struct
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LeNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + idt)


class ResNet18(nn.Module):
    """torchvision's resnet18 (same layers and shapes), written out so torchvision is not needed."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def load_cache(path):
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:8] == b"CPTLAB01", f"{path}: not a cptlab dataset cache"
    (hlen,) = struct.unpack("<Q", raw[8:16])
    header = json.loads(raw[16 : 16 + hlen])
    shape = header["shape"]
    c, h, w = shape["channels"], shape["height"], shape["width"]
    n = header["train_len"]
    off = 16 + hlen
    images = torch.frombuffer(bytearray(raw[off : off + n * c * h * w]), dtype=torch.uint8).view(n, c, h, w)
    off += n * c * h * w
    labels = torch.frombuffer(bytearray(raw[off : off + 2 * n]), dtype=torch.int16).to(torch.int64)
    return images, labels, len(header["classes"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="cptlab dataset cache file")
    ap.add_argument("--model", choices=["lenet", "resnet18"], required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.001)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images, labels, classes = load_cache(args.data)
    model = LeNet(classes) if args.model == "lenet" else ResNet18(classes)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
    n = images.shape[0]
    model.train()

    def step(i, perm):
        idx = perm[i * args.batch : (i + 1) * args.batch]
        x = (images[idx].float().div_(255) - mean) / std
        y = labels[idx]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    per_rep = []
    steps_per_perm = n // args.batch
    for rep in range(args.reps):
        perm = torch.randperm(n)
        for i in range(args.warmup):
            step(i % steps_per_perm, perm)
        t0 = time.perf_counter()
        for i in range(args.steps):
            step(i % steps_per_perm, perm)
        per_rep.append((time.perf_counter() - t0) / args.steps)
    print(json.dumps({"model": args.model, "batch": args.batch, "threads": args.threads,
                      "steps": args.steps, "torch": torch.__version__, "seconds_per_step": per_rep}))


if __name__ == "__main__":
    main()
