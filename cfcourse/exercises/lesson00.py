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


# --- plausible wrong answers: each is the reference with one mistake, and the check must refuse every one ---

def count_not_fraction(logits, labels):
    """The number of right rows, not the fraction."""
    return (logits.argmax(1) == labels).sum().item()


def error_rate(logits, labels):
    """The fraction of wrong rows (!= instead of ==)."""
    return (logits.argmax(1) != labels).float().mean().item()


def argmax_over_the_batch(logits, labels):
    """argmax along dim 0, the batch, instead of dim 1, the classes."""
    return (logits.argmax(0) == labels).float().mean().item()


def argmax_without_dim(logits, labels):
    """argmax with no dim: one index into the flattened logits for the whole batch."""
    return (logits.argmax() == labels).float().mean().item()


def top_score_not_its_index(logits, labels):
    """Compares the largest logit itself, not its index, with the label."""
    return (logits.max(1).values == labels).float().mean().item()


def argmin_not_argmax(logits, labels):
    """The class with the smallest logit (the sign of the logits turned round)."""
    return (logits.argmin(1) == labels).float().mean().item()


def integer_division(logits, labels):
    """The count divided with //, which rounds every fraction below 1 down to 0."""
    return (logits.argmax(1) == labels).sum().item() // len(labels)


def divided_by_the_classes(logits, labels):
    """The count divided by the number of classes (the wrong dimension), not by the batch size."""
    return (logits.argmax(1) == labels).sum().item() / logits.shape[1]


def a_percentage(logits, labels):
    """A percentage (0-100), not a fraction (0-1)."""
    return 100 * (logits.argmax(1) == labels).float().mean().item()


WRONG_ANSWERS = [count_not_fraction, error_rate, argmax_over_the_batch, argmax_without_dim, top_score_not_its_index,
                 argmin_not_argmax, integer_division, divided_by_the_classes, a_percentage]

check.register(Exercise(
    name="accuracy",
    reference=accuracy,
    hint="the predicted class of each row is the index of its largest logit: logits.argmax(dim=1); compare it "
         "with labels to get True/False per row, then turn that into a fraction with .float().mean().item()",
    cases=_cases,
    wrong_answers=WRONG_ANSWERS,
))
