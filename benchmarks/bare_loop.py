"""A bare torch loop doing what `python -m cfcourse run permuted-mnist --strategy naive ...` does, written by hand.

Only the task tensors come from cfcourse (cfcourse.data.permuted_mnist), built outside the timed region.
The timed region is the same work the runner's `wall_s` covers: evaluate every task's full test set once
before training, then for each task train with a fresh SGD optimiser and evaluate every task again.

    python benchmarks/bare_loop.py --tasks 5 --epochs 1 --hidden 400 400 --lr 0.01 --momentum 0.9 \
        --batch-size 128 --seed 0

Prints one JSON object: wall_s (the timed region), acc_matrix, avg_acc, setup_s (data and model building).
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn


def build_model(hidden: list[int]) -> nn.Sequential:
    """784 -> hidden... -> 10 with ReLU; created in the same order as cfcourse.models.MLP, so same init per seed."""
    layers: list[nn.Module] = []
    width = 784
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


@torch.no_grad()
def evaluate(model: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, batch_size: int = 2000) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(y_all), batch_size):
        x = x_all[i:i + batch_size].float() / 255  # (batch, 784)
        correct += (model(x).argmax(1) == y_all[i:i + batch_size]).sum().item()
    model.train()
    return correct / len(y_all)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=5)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--hidden", type=int, nargs="+", default=[400, 400])
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    setup_start = time.perf_counter()
    from cfcourse.data import permuted_mnist  # only to build the very same tensors

    dev = torch.device(args.device)
    tasks = permuted_mnist(args.tasks, seed=args.seed, train_size=args.train_size, test_size=args.test_size)
    data = [(t.train_x.to(dev), t.train_y.to(dev), t.test_x.to(dev), t.test_y.to(dev)) for t in tasks]
    torch.manual_seed(args.seed)
    model = build_model(args.hidden).to(dev)
    gen = torch.Generator().manual_seed(args.seed)
    setup_s = time.perf_counter() - setup_start

    start = time.perf_counter()
    baseline = [evaluate(model, xte, yte) for _, _, xte, yte in data]
    R = []
    for xtr, ytr, _, _ in data:
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
        n = len(ytr)
        for _ in range(args.epochs):
            order = torch.randperm(n, generator=gen).to(dev)
            for i in range(0, n, args.batch_size):
                idx = order[i:i + args.batch_size]
                x = xtr[idx].float() / 255  # (batch, 784)
                loss = F.cross_entropy(model(x), ytr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        R.append([evaluate(model, xte, yte) for _, _, xte, yte in data])
    wall_s = time.perf_counter() - start

    print(json.dumps({"acc_matrix": [[round(v, 6) for v in row] for row in R], "baseline": baseline,
                      "avg_acc": round(sum(R[-1]) / len(R[-1]), 6), "wall_s": round(wall_s, 3),
                      "setup_s": round(setup_s, 3), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
