"""Exercise of lesson 06: the distillation loss of Learning without Forgetting.

The check compares the learner's function with the package's
`cfcourse.strategies.distillation.distillation_loss` (T^2 times the KL
divergence from the old model's softened outputs to the new model's) on
cases with known answers, and names the common mistake a wrong answer matches.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..strategies.distillation import distillation_loss
from . import Exercise, Verdict, check, close

TOL = 1e-4  # float32 sums over a few classes: implementations differ by far less


def _cases() -> list[tuple[str, torch.Tensor, torch.Tensor, float]]:
    """(what, new_logits (batch, classes), old_logits (batch, classes), temperature), with answers known or derived."""
    gen = torch.Generator().manual_seed(6)
    same = torch.randn(8, 10, generator=gen) * 3
    return [
        ("new == old: nothing changed, so the loss is 0", same.clone(), same.clone(), 2.0),
        ("T = 1, old softmax (3/4, 1/4), new (1/2, 1/2): 3/4 ln(3/2) + 1/4 ln(1/2) = 0.1308",
         torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]]), 1.0),
        ("16 samples, 10 classes, T = 2", torch.randn(16, 10, generator=gen) * 2,
         torch.randn(16, 10, generator=gen) * 2, 2.0),
        ("5 samples, 4 classes, T = 0.5", torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen), 0.5),
        ("3 samples, 2 classes (one head of split MNIST), T = 4", torch.randn(3, 2, generator=gen) * 4,
         torch.randn(3, 2, generator=gen) * 4, 4.0),
    ]


def _kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row, from log-probabilities."""
    return (p_log.exp() * (p_log - q_log)).sum(1)


def _named(name: str, fn: Callable) -> Callable:
    fn.__name__ = fn.__qualname__ = name
    return fn


def _soft(logits: torch.Tensor, T: float) -> torch.Tensor:
    return F.log_softmax(logits / T, dim=1)


def _kl_div_given_probabilities(new: torch.Tensor, old: torch.Tensor, T: float) -> torch.Tensor:
    """What F.kl_div(softmax(new / T), softmax(old / T), reduction="batchmean") * T² computes: it takes its first
    argument for log-probabilities."""
    log_p_old = _soft(old, T)
    return (log_p_old.exp() * (log_p_old - _soft(new, T).exp())).sum(1).mean() * T ** 2


MISTAKES = [
    (_named("no_t_squared", lambda new, old, T: _kl(_soft(old, T), _soft(new, T)).mean()),
     "it looks like the T² factor is missing: softening by T shrinks the gradients by about 1/T², so LwF "
     "multiplies the KL by T² to keep the distillation term as strong at any temperature"),
    (_named("kl_wrong_direction", lambda new, old, T: _kl(_soft(new, T), _soft(old, T)).mean() * T ** 2),
     "it looks like the KL runs the wrong way: KL(p_new || p_old). The old model's outputs are the targets, "
     "so weigh by them: sum over classes of p_old · (log p_old − log p_new)"),
    (_named("no_temperature", lambda new, old, T: _kl(_soft(old, 1.0), _soft(new, 1.0)).mean()),
     "it looks like the temperature is not used: divide both sets of logits by T before the softmax, "
     "and multiply the result by T²"),
    (_named("temperature_not_squared", lambda new, old, T: _kl(_soft(old, T), _soft(new, T)).mean() * T),
     "it looks like you multiplied by T, not by T²"),
    (_named("soft_cross_entropy", lambda new, old, T: -(_soft(old, T).exp() * _soft(new, T)).sum(1).mean() * T ** 2),
     "it looks like the cross-entropy with soft targets (Hinton's form). It has the same gradient as KL, but it "
     "is not 0 when nothing has changed: it includes the entropy of the old outputs. Use the KL divergence: "
     "subtract p_old · log p_old"),
    (_named("summed_over_samples", lambda new, old, T: _kl(_soft(old, T), _soft(new, T)).sum() * T ** 2),
     "it looks like a sum over the samples; take the mean over the batch, so the loss does not grow with the "
     "batch size"),
    (_named("softmax_over_the_batch",
            lambda new, old, T: _kl(F.log_softmax(old / T, dim=0), F.log_softmax(new / T, dim=0)).mean() * T ** 2),
     "it looks like the softmax runs over the batch (dim=0); each sample's outputs over the classes must sum "
     "to 1: softmax along dim=1 (or dim=-1)"),
    (_named("temperature_on_the_old_only", lambda new, old, T: _kl(_soft(old, T), _soft(new, 1.0)).mean() * T ** 2),
     "it looks like only the old logits were divided by T; soften both, new_logits / T and old_logits / T"),
    (_named("divided_by_t_squared", lambda new, old, T: _kl(_soft(old, T), _soft(new, T)).mean() / T ** 2),
     "it looks like you divided by T²; multiply by it, to make up for the gradients that softening shrinks"),
    (_named("kl_div_given_probabilities", _kl_div_given_probabilities),
     "it looks like F.kl_div was given probabilities; its first argument must be log-probabilities: "
     "F.kl_div(F.log_softmax(new_logits / T, dim=1), F.softmax(old_logits / T, dim=1), reduction='batchmean')"),
    (_named("mean_over_classes_too",
            lambda new, old, T: (_soft(old, T).exp() * (_soft(old, T) - _soft(new, T))).mean() * T ** 2),
     "it looks like the mean over the classes as well as the batch (F.kl_div's reduction='mean' does that); "
     "sum over the classes and take the mean over the batch only (reduction='batchmean')"),
]


def detached_new_logits(new_logits, old_logits, temperature):
    """The right value from new_logits.detach(): no gradient reaches the new model."""
    return distillation_loss(new_logits.detach(), old_logits, temperature)


def returned_a_number(new_logits, old_logits, temperature):
    """The right value as a Python number (.item()): no gradient."""
    return distillation_loss(new_logits, old_logits, temperature).item()


def _gradient_problem(fn: Callable) -> str | None:
    """None if fn's loss carries a gradient into the new logits, else what is wrong."""
    _, new, old, T = _cases()[2]
    new = new.clone().requires_grad_()
    out = fn(new, old.clone(), T)
    if not isinstance(out, torch.Tensor) or out.grad_fn is None:
        return ("your loss carries no gradient back to new_logits (did you call .item(), .detach() or build a "
                "new tensor?); training needs a tensor that autograd can follow")
    if out.numel() != 1:
        return f"your loss has shape {tuple(out.shape)}; it must be one number, the mean over the batch"
    return None


def verify(fn: Callable) -> Verdict:
    """Compare fn with the package's distillation_loss on every case; name the mistake a wrong answer matches."""
    for what, new, old, T in _cases():
        want = distillation_loss(new.clone(), old.clone(), T)
        got = fn(new.clone(), old.clone(), T)
        if got is None:
            return Verdict(False, "distillation_loss returned None: did you forget the `return`?")
        if close(got, want, TOL):
            continue
        shown = f"case '{what}': your function returned {_value(got)}, expected {want.item():.4f}"
        for mistake, why in MISTAKES:
            if close(got, mistake(new.clone(), old.clone(), T), TOL):
                return Verdict(False, f"{shown}; {why}")
        return Verdict(False, shown)
    problem = _gradient_problem(fn)
    return Verdict(problem is None, problem or "all cases match")


def _value(x) -> str:
    try:
        return f"{float(x):.4f}"
    except (TypeError, ValueError, RuntimeError):
        return repr(x)[:80]


check.register(Exercise(
    name="distillation_loss",
    reference=distillation_loss,
    hint="soften both with the temperature: log_softmax(new_logits / T, dim=1) and the same for old_logits; the "
         "KL divergence is the sum over classes of p_old · (log p_old − log p_new); take its mean over the batch "
         "and multiply by T²",
    verify_fn=verify,
    wrong_answers=[mistake for mistake, _ in MISTAKES] + [detached_new_logits, returned_a_number],
))
