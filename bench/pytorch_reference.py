#!/usr/bin/env python3
"""Single-threaded PyTorch CPU reference for Lockstep's training throughput.

Trains an MLP, a small CNN and/or the small ResNet on random Fashion-MNIST-shaped data
(batch 128, inputs (128, 1, 28, 28), integer labels 0..9) with
torch.set_num_threads(1), and prints training samples per second as the
median of several timed runs.

The data tensors are created once before timing, so data loading is not
measured. Each timed step is: forward, cross-entropy loss,
optimizer.zero_grad(), backward(), optimizer.step().

Usage:
    python3 bench/pytorch_reference.py [--model mlp|cnn|resnet|both|all]
        [--steps 200] [--warmup 20] [--runs 5] [--batch 128] [--seed 0]
"""

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def make_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 512),
        nn.BatchNorm1d(512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.BatchNorm1d(512),
        nn.ReLU(),
        nn.Linear(512, 10),
    )


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3136, 128, bias=False),
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Dropout(0.25),
        nn.Linear(128, 10),
    )


class BasicBlock(nn.Module):
    """He et al. 2016's basic block as configs/fmnist-resnet.yaml builds it: conv-BN-ReLU-conv-BN
    plus the shortcut (a 1x1 strided conv and BN when the shape changes), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.inner = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return F.relu(self.inner(x) + self.shortcut(x))


def make_resnet() -> nn.Module:
    """configs/fmnist-resnet.yaml: a 3x3 stem and max pooling, one block per stage at 14x14x48,
    7x7x96 and 4x4x192, global average pooling, one dense layer (0.69 M parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 48, 3, padding=1, bias=False),
        nn.BatchNorm2d(48),
        nn.ReLU(),
        nn.MaxPool2d(2),
        BasicBlock(48, 48, 1),
        BasicBlock(48, 96, 2),
        BasicBlock(96, 192, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(192, 10),
    )


def make_optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    if name == "mlp":
        return torch.optim.Adam(model.parameters(), lr=1e-3)
    if name == "cnn":
        return torch.optim.SGD(
            model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4
        )
    if name == "resnet":
        return torch.optim.SGD(
            model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4
        )
    raise ValueError(f"unknown model {name!r}")


def train_steps(model, optimizer, x, y, steps: int) -> None:
    for _ in range(steps):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def bench(name: str, args) -> float:
    torch.manual_seed(args.seed)
    model = {"mlp": make_mlp, "cnn": make_cnn, "resnet": make_resnet}[name]()
    model.train()
    optimizer = make_optimizer(name, model)

    # Data created once, outside the timed region.
    x = torch.randn(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))

    train_steps(model, optimizer, x, y, args.warmup)

    rates = []
    for _ in range(args.runs):
        start = time.perf_counter()
        train_steps(model, optimizer, x, y, args.steps)
        elapsed = time.perf_counter() - start
        rates.append(args.steps * args.batch / elapsed)

    median = statistics.median(rates)
    runs = ", ".join(f"{r:.1f}" for r in rates)
    print(f"pytorch {name}: median {median:.1f} samples/s (runs: {runs})",
          flush=True)
    return median


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["mlp", "cnn", "resnet", "both", "all"], default="both",
                   help="both: the MLP and the CNN; all: the ResNet too")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.steps < 1 or args.runs < 1 or args.warmup < 0 or args.batch < 2:
        p.error("need steps>=1, runs>=1, warmup>=0, batch>=2")

    torch.set_num_threads(1)
    print(f"torch {torch.__version__}", flush=True)
    print(f"mkldnn available: {torch.backends.mkldnn.is_available()}",
          flush=True)
    print(f"threads: {torch.get_num_threads()}, batch {args.batch}, "
          f"steps {args.steps}, warmup {args.warmup}, runs {args.runs}",
          flush=True)

    names = {"both": ["mlp", "cnn"], "all": ["mlp", "cnn", "resnet"]}.get(args.model, [args.model])
    for name in names:
        bench(name, args)


if __name__ == "__main__":
    main()
