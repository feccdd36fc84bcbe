"""The reference CNN recipe of configs/fmnist-cnn.yaml, or (--model resnet) the ResNet recipe of
configs/fmnist-resnet.yaml, trained in PyTorch, for an accuracy and wall time side by side with
Lockstep (same data files, normalisation, model, optimizer, schedule and augmentation).
usage: python3 bench/pytorch_fmnist_recipe.py [--model cnn|resnet] [--seed 0] [--epochs 10|15] [--threads 1] [--init default|he_normal]

The ResNet recipe: the model of bench/pytorch_reference.py, SGD (lr 0.1, momentum 0.9, weight
decay 5e-4 on every parameter), one epoch of linear warm-up then a cosine decay, per step as
Lockstep's schedule, horizontal flips and random erasing (p 0.5, area 2-33%, aspect ratio
log-uniform in [0.3, 1/0.3], filled with 0 after normalising, Lockstep's rule for the box).

--init he_normal re-draws every conv and linear weight from N(0, 2/fan_in) and zeroes the biases,
as Lockstep's he_normal does; the default keeps PyTorch's own initialisation, U(+-1/sqrt(fan_in))
for weights and biases (Lockstep's torch_default draws weights the same way; its biases start at 0).
"""
import argparse
import gzip
import math
import time

import numpy as np
import torch
import torch.nn as nn

from pytorch_reference import make_resnet


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def erase(x, rng, p=0.5, area=(0.02, 0.33), aspect=0.3):
    """Random erasing as Lockstep's Augment.erasingBox draws it, in place on a batch (N, C, H, W)."""
    n, _, h, w = x.shape
    for i in range(n):
        u = rng.random(5)
        if u[0] >= p:
            continue
        target = (area[0] + u[1] * (area[1] - area[0])) * h * w
        ratio = math.exp(math.log(aspect) * (1 - 2 * u[2]))
        eh = min(h, max(1, round(math.sqrt(target * ratio))))
        ew = min(w, max(1, round(math.sqrt(target / ratio))))
        top, left = int(u[3] * (h - eh + 1)), int(u[4] * (w - ew + 1))
        x[i, :, top:top + eh, left:left + ew] = 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["cnn", "resnet"], default="cnn")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="default: 10 (cnn), 15 (resnet)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--init", choices=["default", "he_normal"], default="default")
    a = p.parse_args()
    if a.epochs is None:
        a.epochs = 15 if a.model == "resnet" else 10
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    xtr = read_idx(f"{a.data}/train-images-idx3-ubyte.gz").astype(np.float32) / 255
    ytr = read_idx(f"{a.data}/train-labels-idx1-ubyte.gz").astype(np.int64)
    xte = read_idx(f"{a.data}/t10k-images-idx3-ubyte.gz").astype(np.float32) / 255
    yte = read_idx(f"{a.data}/t10k-labels-idx1-ubyte.gz").astype(np.int64)
    mean, std = xtr.mean(), xtr.std()
    xtr = torch.from_numpy((xtr - mean) / std).unsqueeze(1)
    xte = torch.from_numpy((xte - mean) / std).unsqueeze(1)
    ytr, yte = torch.from_numpy(ytr), torch.from_numpy(yte)
    if a.model == "resnet":
        model = make_resnet()
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(3136, 128, bias=False), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.25),
            nn.Linear(128, 10))
    if a.init == "he_normal":
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    opt = torch.optim.SGD(model.parameters(), lr=0.1 if a.model == "resnet" else 0.05, momentum=0.9, weight_decay=5e-4)
    batch = 128
    steps_per_epoch = math.ceil(len(xtr) / batch)
    total = steps_per_epoch * a.epochs
    warm = steps_per_epoch if a.model == "resnet" else 0

    def factor(s):   # Lockstep's Schedule.rate over the base rate, for optimizer step s (0-based)
        if s < warm:
            return (s + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min((s - warm) / max(total - warm, 1), 1)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    loss_fn = nn.CrossEntropyLoss()
    start = time.time()
    for epoch in range(a.epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(xtr)))
        for s in range(steps_per_epoch):
            idx = order[s * batch:(s + 1) * batch]
            x, y = xtr[idx].clone(), ytr[idx]
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x[flip] = x[flip].flip(-1)
            if a.model == "resnet":
                erase(x, rng)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item() for i in range(0, len(xte), 1000))
        print(f"pytorch {a.model} recipe init {a.init} seed {a.seed} epoch {epoch + 1}: test accuracy {100 * correct / len(xte):.2f}% ({time.time() - start:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
