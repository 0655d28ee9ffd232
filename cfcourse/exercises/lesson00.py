"""Exercises of lesson 00: measuring accuracy."""
from __future__ import annotations

import torch

from . import Exercise, check


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose highest logit sits at the true label; see lesson 00."""
    predictions = logits.argmax(dim=1)  # (batch,)
    return (predictions == labels).float().mean().item()


def _cases() -> list[tuple]:
    """Random logits of several shapes, a perfect batch and a hopeless one."""
    gen = torch.Generator().manual_seed(0)
    cases = [(torch.randn(n, c, generator=gen), torch.randint(0, c, (n,), generator=gen))
             for n, c in ((8, 10), (5, 3), (100, 10), (7, 2))]
    labels = torch.tensor([3, 1, 4, 1, 5, 9])
    perfect = torch.nn.functional.one_hot(labels, 10).float()
    cases += [(perfect, labels), (-perfect, labels)]
    return cases


_WRONG = [
    lambda logits, labels: (logits.argmax(1) == labels).sum().item(),  # a count, not a fraction
    lambda logits, labels: (logits.argmax(1) != labels).float().mean().item(),  # the error rate
    lambda logits, labels: (logits.argmax(0) == labels).float().mean().item(),  # argmax over the wrong axis
    lambda logits, labels: (logits.max(1).values == labels).float().mean().item(),  # the top score, not its index
    lambda logits, labels: (logits.argmax(1) == labels).sum().item() // len(labels),  # integer division
]

check.register(Exercise(
    name="accuracy",
    reference=accuracy,
    hint="the predicted class of each row is the index of its largest logit: logits.argmax(dim=1); compare it "
         "with labels to get True/False per row, then turn that into a fraction with .float().mean().item()",
    cases=_cases,
    wrong_answers=_WRONG,
))
