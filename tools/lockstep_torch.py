#!/usr/bin/env python3
"""Builds a torch.nn model from a Lockstep checkpoint and loads its weights.

    import lockstep_torch
    model, meta = lockstep_torch.load("runs/x/best.safetensors")
    logits = model(images)   # images: (N, C, H, W) float32 pixel values in [0, 1] (byte / 255)

The checkpoint describes itself (metadata "architecture", "input_shape", "normalization",
"class_names", "temperature"), so neither the config nor the data is needed. The model includes
the input normalisation and a stored temperature; it is in eval mode. Conventions: NCHW,
convolution is cross-correlation (as torch.nn.Conv2d), flattening is in C, H, W order, dense
weights are (out, in) (as torch.nn.Linear). Reads safetensors without the safetensors package.

As a check: lockstep_torch.py CHECKPOINT LOGITS.npy (--idx DIR | --csv FILE) [--count N]
compares the model's logits with `lockstep eval --logits` and exits 1 above 1e-4.
"""
import json, struct, sys

import numpy as np
import torch
from torch import nn


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    start = 8 + n
    tensors = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name} is {info['dtype']}, expected F32")
        b, e = info["data_offsets"]
        tensors[name] = torch.from_numpy(np.frombuffer(data[start + b:start + e], dtype="<f4").reshape(info["shape"]).copy())
    return tensors, meta


class Residual(nn.Module):
    def __init__(self, inner, shortcut):
        super().__init__()
        self.inner, self.shortcut = inner, shortcut

    def forward(self, x):
        return self.inner(x) + self.shortcut(x)


class Affine(nn.Module):
    """(x - mean) / std, then divided by nothing: the checkpoint's input normalisation."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x):
        return (x - self.mean) / self.std


class Scale(nn.Module):
    def __init__(self, temperature):
        super().__init__()
        self.temperature = temperature

    def forward(self, x):
        return x / self.temperature


def build(layers, t):
    modules = []
    for d in layers:
        k = d["kind"]
        if k == "dense":
            w = t[d["weight"]]
            m = nn.Linear(w.shape[1], w.shape[0], bias=d["bias"] is not None)
            m.weight.data.copy_(w)
            if d["bias"] is not None:
                m.bias.data.copy_(t[d["bias"]])
        elif k == "conv":
            w = t[d["weight"]]
            m = nn.Conv2d(w.shape[1], w.shape[0], d["kernel"], stride=d["stride"], padding=d["padding"], bias=d["bias"] is not None)
            m.weight.data.copy_(w)
            if d["bias"] is not None:
                m.bias.data.copy_(t[d["bias"]])
        elif k in ("maxpool", "avgpool"):
            m = (nn.MaxPool2d if k == "maxpool" else nn.AvgPool2d)(d["size"], stride=d["stride"])
        elif k == "global_avgpool":
            m = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        elif k == "flatten":
            m = nn.Flatten()
        elif k == "batchnorm":
            c = len(t[d["weight"]])
            m = (nn.BatchNorm2d if len(d["input_shape"]) == 3 else nn.BatchNorm1d)(c, eps=d["epsilon"])
            for attr, key in (("weight", "weight"), ("bias", "bias"), ("running_mean", "running_mean"), ("running_var", "running_var")):
                getattr(m, attr).data.copy_(t[d[key]])
        elif k == "groupnorm":
            c = len(t[d["weight"]])
            m = nn.GroupNorm(d["groups"], c, eps=d["epsilon"])
            m.weight.data.copy_(t[d["weight"]])
            m.bias.data.copy_(t[d["bias"]])
        elif k == "relu":
            m = nn.ReLU()
        elif k == "leaky_relu":
            m = nn.LeakyReLU(d["slope"])
        elif k == "prelu":
            w = t[d["weight"]]
            m = nn.PReLU(len(w))
            m.weight.data.copy_(w)
        elif k == "sigmoid":
            m = nn.Sigmoid()
        elif k == "tanh":
            m = nn.Tanh()
        elif k == "elu":
            m = nn.ELU(d["alpha"])
        elif k == "gelu":
            m = nn.GELU(approximate="tanh")
        elif k == "silu":
            m = nn.SiLU()
        elif k == "softplus":
            m = nn.Softplus()
        elif k == "identity":
            m = nn.Identity()
        elif k == "residual":
            m = Residual(build(d["inner"], t), build(d["shortcut"], t) if d["shortcut"] else nn.Identity())
        else:
            raise ValueError(f"layer {d['name']}: kind {k!r} has no torch form here")
        modules.append(m)
    return nn.Sequential(*modules)


def load(path):
    """(model, metadata) for a Lockstep checkpoint."""
    tensors, meta = read_safetensors(path)
    if "architecture" not in meta:
        raise ValueError(f"{path}: no 'architecture' metadata (written by an older Lockstep)")
    body = build(json.loads(meta["architecture"]), tensors)
    front = []
    if meta.get("normalization") == "pixels":
        front = [Affine(float(meta["normalize_mean"]), float(meta["normalize_std"]))]
    elif meta.get("normalization") == "features":
        front = [Affine(json.loads(meta["normalize_mean"]), json.loads(meta["normalize_std"]))]
    back = [Scale(float(meta["temperature"]))] if "temperature" in meta else []
    return nn.Sequential(*front, body, *back).eval(), meta


def main():
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from check_common import arguments
    args, x, ref = arguments("checkpoint")
    model, _ = load(args.checkpoint)
    x = torch.from_numpy(x)
    torch.set_num_threads(1)
    with torch.no_grad():
        out = model(x).numpy()
    diff = float(np.abs(out - ref).max())
    print(f"lockstep_torch: {len(x)} samples, max |torch - Lockstep| = {diff:.3g}, torch {torch.__version__}")
    sys.exit(0 if diff <= args.tolerance else 1)


if __name__ == "__main__":
    main()
