"""Reference for `tests/autocast.rs`: cptlab's CIFAR ResNet-20 (option-A shortcuts) in PyTorch
eager, on the weights and batch the Rust test wrote, in fp32 and under
`torch.autocast("cpu", torch.bfloat16)`; BatchNorm in training mode (batch statistics), the loss
`cross_entropy(logits.float(), y)` as a PyTorch user writes it.

Input: DIR/manifest.json ({"tensors": [{"name", "shape", "offset"}]}, offsets in f32 elements
of DIR/tensors.bin, little-endian) holding the model's variables by cptlab's names plus "x"
(the batch) and "y" (labels, stored as f32). Output (stdout): one JSON object with the fp32 and
autocast losses and logits and the autocast logits' dtype.

Usage: .venv/bin/python tests/reference/autocast_bf16.py DIR
"""
import json
import sys

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
root = sys.argv[1]
with open(f"{root}/manifest.json") as f:
    manifest = json.load(f)
with open(f"{root}/tensors.bin", "rb") as f:
    flat = torch.frombuffer(bytearray(f.read()), dtype=torch.float32)
W = {}
for t in manifest["tensors"]:
    n = 1
    for d in t["shape"]:
        n *= d
    W[t["name"]] = flat[t["offset"] : t["offset"] + n].reshape(t["shape"]).clone()
x, y = W.pop("x"), W.pop("y").long()


def bn(t, name):
    return F.batch_norm(
        t,
        W[name + ".running_mean"].clone(),
        W[name + ".running_var"].clone(),
        W[name + ".weight"],
        W[name + ".bias"],
        training=True,
        momentum=0.1,
        eps=1e-5,
    )


def conv(t, name, stride):
    return F.conv2d(t, W[name + ".weight"], None, stride, 1)


def block(t, prefix, c_in, c_out, stride):
    out = F.relu(bn(conv(t, prefix + ".conv1", stride), prefix + ".bn1"))
    out = bn(conv(out, prefix + ".conv2", 1), prefix + ".bn2")
    if stride != 1 or c_in != c_out:
        pad = c_out // 4
        shortcut = F.pad(t[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad))
    else:
        shortcut = t
    return F.relu(out + shortcut)


def resnet20(t):
    t = F.relu(bn(conv(t, "conv1", 1), "bn1"))
    c_in = 16
    for stage, c_out in enumerate([16, 32, 64]):
        for i in range(3):
            stride = 2 if stage > 0 and i == 0 else 1
            t = block(t, f"layer{stage + 1}.{i}", c_in, c_out, stride)
            c_in = c_out
    t = F.adaptive_avg_pool2d(t, 1).flatten(1)
    return F.linear(t, W["linear.weight"], W["linear.bias"])


with torch.no_grad():
    logits32 = resnet20(x)
    loss32 = F.cross_entropy(logits32.float(), y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits_amp = resnet20(x)
    loss_amp = F.cross_entropy(logits_amp.float(), y)

print(
    json.dumps(
        {
            "fp32_loss": loss32.item(),
            "amp_loss": loss_amp.item(),
            "amp_logits_dtype": str(logits_amp.dtype),
            "fp32_logits": logits32.flatten().tolist(),
            "amp_logits": logits_amp.float().flatten().tolist(),
        }
    )
)
