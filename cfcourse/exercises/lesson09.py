"""Exercise of lesson 09: the L2-to-start penalty, the pull that keeps fine-tuned weights near the pretrained ones.

Checked against `cfcourse.lm.cures.l2_penalty` (strength/2 · Σ (w − w_start)²)
on tensors of several shapes, and for a gradient that autograd can follow.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..lm.cures import l2_penalty
from . import Exercise, Verdict, check, close

TOL = 1e-4


def l2_to_start(params: list[torch.Tensor], start: list[torch.Tensor], strength: float) -> torch.Tensor:
    """The reference: strength/2 times the summed squared distance of every weight from its starting value."""
    return l2_penalty(params, start, strength)


def _cases() -> list[tuple[str, list[torch.Tensor], list[torch.Tensor], float]]:
    gen = torch.Generator().manual_seed(9)
    w = [torch.randn(4, 3, generator=gen), torch.randn(5, generator=gen)]
    moved = [torch.randn(6, 6, generator=gen), torch.randn(6, generator=gen), torch.randn(2, 6, generator=gen)]
    return [
        ("at the start: nothing moved, so the penalty is 0", [x.clone() for x in w], [x.clone() for x in w], 10.0),
        ("two weights moved by 2 and 1, strength 1: 1/2 · (2² + 1²) = 2.5", [torch.tensor([3.0, 2.0])],
         [torch.tensor([1.0, 1.0])], 1.0),
        ("three tensors of different shapes, strength 0.3", [x + 0.3 * torch.randn(x.shape, generator=gen)
                                                              for x in moved], [x.clone() for x in moved], 0.3),
        ("strength 0 switches it off", [x + 1 for x in w], [x.clone() for x in w], 0.0),
    ]


def _named(name: str, fn: Callable) -> Callable:
    fn.__name__ = fn.__qualname__ = name
    return fn


def _sq(params, start):
    return [(p - s).pow(2).sum() for p, s in zip(params, start)]


def _first_tensor_only(params, start, strength):
    for p, s in zip(params, start):
        return 0.5 * strength * (p - s).pow(2).sum()  # returns inside the loop


MISTAKES = [
    (_named("no_half", lambda p, s, k: k * sum(_sq(p, s))),
     "it looks like the ½ is missing: the penalty is strength/2 · Σ (w − w_start)², so its gradient is "
     "strength · (w − w_start)"),
    (_named("norm_not_squared", lambda p, s, k: 0.5 * k * sum(torch.sqrt(x) for x in _sq(p, s))),
     "it looks like the norm of the distance, not its square: square every difference and sum them, without a "
     "square root"),
    (_named("mean_not_sum", lambda p, s, k: 0.5 * k * sum((a - b).pow(2).mean() for a, b in zip(p, s))),
     "it looks like a mean over each tensor's weights; sum over every weight, so a big matrix is pulled as "
     "hard, weight for weight, as a small one"),
    (_named("weights_not_distance", lambda p, s, k: 0.5 * k * sum(a.pow(2).sum() for a in p)),
     "it looks like plain weight decay, Σ w²: that pulls towards zero, not towards the pretrained weights; "
     "use w − w_start"),
    (_named("absolute", lambda p, s, k: 0.5 * k * sum((a - b).abs().sum() for a, b in zip(p, s))),
     "it looks like absolute differences (an L1 pull); square them"),
    (_named("sum_not_difference", lambda p, s, k: 0.5 * k * sum((a + b).pow(2).sum() for a, b in zip(p, s))),
     "it looks like w + w_start where the distance w − w_start belongs: the penalty must be 0 at the start"),
    (_named("first_tensor_only", _first_tensor_only),
     "it looks like only the first tensor counted (is the `return` inside the loop?); add up the terms of every "
     "pair (p, s), then return"),
    (_named("no_strength", lambda p, s, k: 0.5 * sum(_sq(p, s))),
     "it looks like the strength is not used: multiply the sum by strength / 2"),
]

IN_PLACE = ("the value is right, but your function changed the {what} it was given; training calls the penalty at "
            "every step, so the change would pile up (and `start` is what the weights are pulled back to). Build "
            "new tensors, (p - s).pow(2), instead of changing them in place (-=, .sub_())")


def detached_weights(params, start, strength):
    """(p.detach() - s): the right value, but no gradient reaches the weights."""
    return 0.5 * strength * sum((p.detach() - s).pow(2).sum() for p, s in zip(params, start))


def returned_a_number(params, start, strength):
    """The right value as a Python number (.item()): no gradient."""
    return l2_penalty(params, start, strength).item()


def start_changed_in_place(params, start, strength):
    """The right value and gradient, but `start` is overwritten with s - p (s.sub_(p)) on the way."""
    total = 0
    for p, s in zip(params, start):
        total = total + s.sub_(p).pow(2).sum()
    return 0.5 * strength * total


def verify(fn: Callable) -> Verdict:
    """Compare fn with l2_penalty on every case, name a matching mistake, and check the gradient flows."""
    for what, params, start, strength in _cases():
        want = l2_penalty(params, start, strength)
        given = [p.clone() for p in params], [s.clone() for s in start]
        got = fn(*given, strength)
        if got is None:
            return Verdict(False, "l2_to_start returned None: did you forget the `return`?")
        if close(got, want, TOL):
            for what, was, now in (("params", params, given[0]), ("start", start, given[1])):
                if not all(torch.equal(a, b) for a, b in zip(was, now)):
                    return Verdict(False, IN_PLACE.format(what=what))
            continue
        try:
            shown = f"case '{what}': your function returned {float(got):.4f}, expected {want.item():.4f}"
        except (TypeError, ValueError, RuntimeError):
            return Verdict(False, f"case '{what}': return one number as a tensor, got {repr(got)[:80]}")
        for mistake, why in MISTAKES:
            if close(got, mistake(params, start, strength), TOL):
                return Verdict(False, f"{shown}; {why}")
        return Verdict(False, shown)
    _, params, start, strength = _cases()[2]
    params = [p.clone().requires_grad_() for p in params]
    out = fn(params, start, strength)
    if not isinstance(out, torch.Tensor) or out.grad_fn is None:
        return Verdict(False, "your penalty carries no gradient back to the weights (did you call .item() or "
                              ".detach()?); training adds it to the loss, so autograd must follow it")
    out.backward()
    if not all(close(p.grad, strength * (p.detach() - s), TOL) for p, s in zip(params, start)):
        return Verdict(False, "the gradient of your penalty is not strength · (w − w_start)")
    return Verdict(True, "all cases match, and the gradient is strength · (w − w_start)")


check.register(Exercise(
    name="l2_to_start",
    reference=l2_to_start,
    hint="for each pair (p, s) add (p - s).pow(2).sum(); multiply the total by strength / 2; keep it a tensor "
         "(no .item()) so that autograd can follow it",
    verify_fn=verify,
    wrong_answers=[mistake for mistake, _ in MISTAKES] + [detached_weights, returned_a_number, start_changed_in_place],
))
