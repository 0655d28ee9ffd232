"""Exercises of lesson 09: replay's schedule (how many old blocks each batch carries, so that the share over a run
is exact) and the L2-to-start penalty, the pull that keeps fine-tuned weights near the pretrained ones.

The schedule is checked by what makes it right, so any correct way of writing it passes: one count per step,
none above the batch size, exactly floor(steps · batch_size · ratio) old blocks in all, and never more than one
block ahead of or behind the ratio at any step. The penalty is checked against `cfcourse.lm.cures.l2_penalty`
(strength/2 · Σ (w − w_start)²) on tensors of several shapes, and for a gradient that autograd can follow.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable

import torch

from ..lm import cures
from ..lm.cures import l2_penalty
from . import Comparison, Exercise, Verdict, check, close, named

TOL = 1e-4


def l2_to_start(params: list[torch.Tensor], start: list[torch.Tensor], strength: float) -> torch.Tensor:
    """The reference: strength/2 times the summed squared distance of every weight from its starting value."""
    return l2_penalty(params, start, strength)


def _cases() -> list[tuple[str, tuple[list[torch.Tensor], list[torch.Tensor], float]]]:
    gen = torch.Generator().manual_seed(9)
    w = [torch.randn(4, 3, generator=gen), torch.randn(5, generator=gen)]
    moved = [torch.randn(6, 6, generator=gen), torch.randn(6, generator=gen), torch.randn(2, 6, generator=gen)]
    return [
        ("at the start: nothing moved, so the penalty is 0", ([x.clone() for x in w], [x.clone() for x in w], 10.0)),
        ("two weights moved by 2 and 1, strength 1: 1/2 · (2² + 1²) = 2.5", ([torch.tensor([3.0, 2.0])],
                                                                            [torch.tensor([1.0, 1.0])], 1.0)),
        ("three tensors of different shapes, strength 0.3", ([x + 0.3 * torch.randn(x.shape, generator=gen)
                                                              for x in moved], [x.clone() for x in moved], 0.3)),
        ("strength 0 switches it off", ([x + 1 for x in w], [x.clone() for x in w], 0.0)),
    ]


def _sq(params, start):
    return [(p - s).pow(2).sum() for p, s in zip(params, start)]


def _first_tensor_only(params, start, strength):
    for p, s in zip(params, start):
        return 0.5 * strength * (p - s).pow(2).sum()  # returns inside the loop


MISTAKES = [
    (named("no_half", lambda p, s, k: k * sum(_sq(p, s))),
     "it looks like the ½ is missing: the penalty is strength/2 · Σ (w − w_start)², so its gradient is "
     "strength · (w − w_start)"),
    (named("norm_not_squared", lambda p, s, k: 0.5 * k * sum(torch.sqrt(x) for x in _sq(p, s))),
     "it looks like the norm of the distance, not its square: square every difference and sum them, without a "
     "square root"),
    (named("mean_not_sum", lambda p, s, k: 0.5 * k * sum((a - b).pow(2).mean() for a, b in zip(p, s))),
     "it looks like a mean over each tensor's weights; sum over every weight, so a big matrix is pulled as "
     "hard, weight for weight, as a small one"),
    (named("weights_not_distance", lambda p, s, k: 0.5 * k * sum(a.pow(2).sum() for a in p)),
     "it looks like plain weight decay, Σ w²: that pulls towards zero, not towards the pretrained weights; "
     "use w − w_start"),
    (named("absolute", lambda p, s, k: 0.5 * k * sum((a - b).abs().sum() for a, b in zip(p, s))),
     "it looks like absolute differences (an L1 pull); square them"),
    (named("sum_not_difference", lambda p, s, k: 0.5 * k * sum((a + b).pow(2).sum() for a, b in zip(p, s))),
     "it looks like w + w_start where the distance w − w_start belongs: the penalty must be 0 at the start"),
    (named("first_tensor_only", _first_tensor_only),
     "it looks like only the first tensor counted (is the `return` inside the loop?); add up the terms of every "
     "pair (p, s), then return"),
    (named("no_strength", lambda p, s, k: 0.5 * sum(_sq(p, s))),
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


def _one_number(what: str, got, want) -> str | None:
    """Asks for one number when the answer is not one."""
    try:
        float(got)
    except (TypeError, ValueError, RuntimeError):
        return f"case '{what}': return one number as a tensor, got {repr(got)[:80]}"
    return None


def _shown(what: str, got, want: torch.Tensor) -> str:
    return f"case '{what}': your function returned {float(got):.4f}, expected {want.item():.4f}"


def _gradient_problem(fn: Callable) -> str | None:
    """None if autograd can follow fn's penalty back to the weights, with the gradient strength · (w − w_start)."""
    _, (params, start, strength) = _cases()[2]
    params = [p.clone().requires_grad_() for p in params]
    out = fn(params, start, strength)
    if not isinstance(out, torch.Tensor) or out.grad_fn is None:
        return ("your penalty carries no gradient back to the weights (did you call .item() or .detach()?); "
                "training adds it to the loss, so autograd must follow it")
    out.backward()
    if not all(close(p.grad, strength * (p.detach() - s), TOL) for p, s in zip(params, start)):
        return "the gradient of your penalty is not strength · (w − w_start)"
    return None


check.register(Exercise(
    name="l2_to_start",
    reference=l2_to_start,
    hint="for each pair (p, s) add (p - s).pow(2).sum(); multiply the total by strength / 2; keep it a tensor "
         "(no .item()) so that autograd can follow it",
    verify_fn=Comparison("l2_to_start", l2_to_start, _cases, MISTAKES, tol=TOL, form=_one_number, shown=_shown,
                         unchanged={0: "params", 1: "start"}, in_place=IN_PLACE, at_end=_gradient_problem),
    wrong_answers=[mistake for mistake, _ in MISTAKES] + [detached_weights, returned_a_number, start_changed_in_place],
))


# --- replay's schedule -------------------------------------------------------------------------------------------

def replay_schedule(steps: int, batch_size: int, ratio: float) -> list[int]:
    """The reference: old blocks in each step's batch, spread evenly so that the run's share is exactly `ratio`."""
    return cures.replay_schedule(steps, batch_size, ratio)


SCHEDULE_CASES = [(50, 2, 0.25), (50, 2, 0.5), (10, 4, 0.3), (10, 4, 0.4), (7, 3, 0.0), (12, 8, 0.9), (100, 2, 0.1),
                  (9, 1, 0.5)]


def _exact(steps: int, batch_size: int, ratio: float) -> int:
    return math.floor(steps * batch_size * ratio + 1e-9)


def _front_loaded(steps, b, r):
    left, out = _exact(steps, b, r), []
    for _ in range(steps):
        out.append(min(b, left))
        left -= out[-1]
    return out


SCHEDULE_MISTAKES = [
    (named("rounded_per_step", lambda n, b, r: [round(b * r)] * n),
     "it looks like each step rounds batch_size · ratio on its own: with 2 blocks and a ratio of 0.25 that is "
     "round(0.5) = 0 at every step, and nothing is ever replayed. Round the running total instead, and let each "
     "step take what the total has grown by"),
    (named("ceil_per_step", lambda n, b, r: [math.ceil(b * r)] * n),
     "it looks like each step rounds batch_size · ratio up: every step replays at least one block, far more than "
     "the ratio asks. Round the running total, not each step"),
    (named("floor_per_step", lambda n, b, r: [math.floor(b * r)] * n),
     "it looks like each step rounds batch_size · ratio down: the fractions are thrown away at every step, so a "
     "ratio below 1 / batch_size replays nothing. Round the running total, not each step"),
    (named("all_at_the_start", _front_loaded),
     "the total is right, but all the old text comes first and none at the end: the model practises medicine, "
     "then forgets it again over the steps without any. Spread the blocks: after s steps, about s · batch_size · "
     "ratio of them"),
    (named("all_at_the_end", lambda n, b, r: _front_loaded(n, b, r)[::-1]),
     "the total is right, but all the old text comes at the end: for most of the run nothing is replayed. Spread "
     "the blocks: after s steps, about s · batch_size · ratio of them"),
    (named("whole_batches", lambda n, b, r: [b if r and (s + 1) % max(1, round(1 / r)) == 0 else 0
                                               for s in range(n)]),
     "it looks like whole batches of old text every so many steps, instead of old blocks mixed into every "
     "batch: the counts jump between 0 and the batch size. Spread the blocks: never more than one block ahead of "
     "the ratio"),
    (named("running_total", lambda n, b, r: [math.floor((s + 1) * b * r + 1e-9) for s in range(n)]),
     "it looks like the running total (how many old blocks so far) where each step's own count belongs: take "
     "the difference between the total after this step and after the one before"),
    (named("new_blocks", lambda n, b, r: [b - c for c in cures.replay_schedule(n, b, r)]),
     "it looks like the number of *new* blocks in each batch; return how many are old text"),
]


def _random_draws(steps, batch_size, ratio):
    """Each block old with probability `ratio`: right on average, never exact, and different every call."""
    return [sum(random.random() < ratio for _ in range(batch_size)) for _ in range(steps)]


# Names the known mistake a schedule matches; a right schedule need not be the reference's, so it is judged by
# its properties (verify_schedule), not by this comparison.
_SCHEDULE_MISTAKES = Comparison("replay_schedule", replay_schedule, lambda: [("", c) for c in SCHEDULE_CASES],
                                SCHEDULE_MISTAKES, same=lambda got, mistake: [int(c) for c in got] == list(mistake))


def verify_schedule(fn: Callable) -> Verdict:
    """Check the learner's schedule by the properties that make it right, naming a known mistake it matches."""
    for steps, b, r in SCHEDULE_CASES:
        got = fn(steps, b, r)
        if got is None:
            return Verdict(False, "replay_schedule returned None: did you forget the `return`?")
        try:
            counts = [int(c) for c in got]
        except (TypeError, ValueError):
            return Verdict(False, f"return a list of whole numbers, one per step; got {repr(got)[:80]}")
        if any(c != x for c, x in zip(counts, got)):
            return Verdict(False, f"return whole numbers of blocks; got {repr(got)[:80]}")
        case = f"{steps} steps, batches of {b}, ratio {r}"
        why = _SCHEDULE_MISTAKES.which_mistake(fn, counts, (steps, b, r))
        problem = None
        if len(counts) != steps:
            problem = f"{len(counts)} counts, one per step expected ({steps})"
        elif any(c < 0 or c > b for c in counts):
            problem = f"a count outside 0..{b}: {counts[:12]}"
        elif sum(counts) != _exact(steps, b, r):
            problem = (f"{sum(counts)} old blocks in all, expected exactly floor({steps} · {b} · {r}) = "
                       f"{_exact(steps, b, r)}")
        elif any(abs(sum(counts[:k]) - k * b * r) >= 1 + 1e-9 for k in range(1, steps + 1)):
            problem = f"the old blocks are not spread evenly: {counts[:16]}{' ...' if steps > 16 else ''}"
        elif counts != [int(c) for c in fn(steps, b, r)]:
            problem = "two calls gave two different schedules"
        if problem is not None:
            if why is None and counts != [int(c) for c in fn(steps, b, r)]:
                why = ("it looks like random draws: right on average, but the share is never exact and changes "
                       "from run to run, so two runs of a cure cannot be compared. Compute the counts from the "
                       "running total instead")
            return Verdict(False, f"on {case}: {problem}" + (f"; {why}" if why else ""))
    return Verdict(True, "every case has exactly the ratio's share of old blocks, spread evenly over the steps")


check.register(Exercise(
    name="replay_schedule",
    reference=replay_schedule,
    hint="keep a running total: after step s the run should have replayed floor((s + 1) · batch_size · ratio) "
         "blocks; each step replays the difference from the total after the step before",
    verify_fn=verify_schedule,
    wrong_answers=[mistake for mistake, _ in SCHEDULE_MISTAKES] + [_random_draws],
))
