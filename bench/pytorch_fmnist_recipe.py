"""The reference CNN recipe of configs/fmnist-cnn.yaml trained in PyTorch, for an accuracy
side by side with Lockstep (same data files, normalisation, model, optimizer, schedule and
augmentation). usage: python3 bench/pytorch_fmnist_recipe.py [--seed 0] [--epochs 10] [--threads 1] [--init default|he_normal]

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


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--init", choices=["default", "he_normal"], default="default")
    a = p.parse_args()
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
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    batch = 128
    steps_per_epoch = math.ceil(len(xtr) / batch)
    total = steps_per_epoch * a.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / total, 1))))
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
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item() for i in range(0, len(xte), 1000))
        print(f"pytorch recipe init {a.init} seed {a.seed} epoch {epoch + 1}: test accuracy {100 * correct / len(xte):.2f}% ({time.time() - start:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
