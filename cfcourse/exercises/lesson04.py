"""Exercises of lesson 04: the diagonal Fisher information, the EWC penalty and SI's importance.

Both references are the package's own code (`cfcourse.strategies.regularization`), wrapped only to take the
arguments the lesson's exercises take, so the learner's formula and the one EWC trains with can never
disagree. The checks run on real MNIST digits and small real networks, and name the common mistake a wrong
answer looks like.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Task, load_mnist, to_float
from ..models import MLP
from ..strategies.regularization import diagonal_fisher, quadratic_penalty, si_importance, trainable
from . import Comparison, Exercise, check, named

Tensors = dict[str, torch.Tensor]


# --- the references: the package's functions ------------------------------------------------------

def fisher_diagonal(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Tensors:
    """The package's `diagonal_fisher` on exactly these digits x (n, 784) in [0, 1] and labels y (n,)."""
    pixels = (x * 255).round()
    if not torch.allclose(pixels / 255, x, atol=1e-6) or pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("x must hold MNIST digits as floats in [0, 1], e.g. to_float(task.train_x[:n])")
    task = Task("samples", 0, pixels.to(torch.uint8), y, pixels[:0].to(torch.uint8), y[:0], ())
    return diagonal_fisher(model, task, n_samples=len(y))


def ewc_penalty(model: nn.Module, anchor: Tensors, fisher: Tensors, lam: float) -> torch.Tensor:
    """lam / 2 * sum_i F_i (w_i - anchor_i)^2: the package's EWC penalty for one remembered task."""
    return lam / 2 * quadratic_penalty(model, anchor, fisher)


# --- shared helpers -------------------------------------------------------------------------------

def _small_model(hidden: tuple[int, ...], seed: int, in_features: int = 784, out_features: int = 10) -> MLP:
    """A small MLP with weights fixed by `seed`, built without touching the global random state."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MLP(in_features, hidden, out_features)


def _as_tensors(got) -> Tensors | None:
    """A learner's dict of tensors, detached; None when it is not a dict of tensors."""
    if not isinstance(got, dict) or not all(isinstance(v, torch.Tensor) for v in got.values()):
        return None
    return {name: v.detach() for name, v in got.items()}


def _same(got: Tensors, want: Tensors, rtol: float = 1e-4) -> bool:
    """Every tensor equal within `rtol` of the largest value of its parameter."""
    return all(got[n].shape == w.shape and torch.allclose(got[n].float(), w, rtol=rtol,
                                                          atol=rtol * float(w.abs().max()) + 1e-12)
               for n, w in want.items())


# --- exercise 1: the diagonal Fisher --------------------------------------------------------------

def _fisher_cases() -> list[tuple[str, tuple[nn.Module, torch.Tensor, torch.Tensor]]]:
    """Small networks and real MNIST test digits with their labels."""
    mnist = load_mnist()
    x = to_float(mnist.test_images[:12].reshape(-1, 784))  # (12, 784)
    y = mnist.test_labels[:12]  # (12,)
    cases = [(_small_model((16,), seed=0), x[:1], y[:1]),
             (_small_model((16,), seed=1), x, y),
             (_small_model((8, 8), seed=2), x[3:10], y[3:10])]
    return [(f"{len(y)} digit(s) with a {_describe(model)}", (model, x, y)) for model, x, y in cases]


def _per_sample(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> list[Tensors]:
    """For each sample, the gradient of objective(logits (1, classes), y (1,)) with respect to every weight."""
    params = trainable(model)
    grads = []
    for i in range(len(y)):
        g = torch.autograd.grad(objective(model(x[i:i + 1]), y[i:i + 1]), list(params.values()))
        grads.append(dict(zip(params, g)))
    return grads


def _log_lik(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(logits, y)


def _mean_of(grads: list[Tensors], fn: Callable[[torch.Tensor], torch.Tensor]) -> Tensors:
    return {n: torch.stack([fn(g[n]) for g in grads]).mean(0) for n in grads[0]}


def _squared_mean_gradient(model, x, y):
    params = trainable(model)
    g = torch.autograd.grad(_log_lik(model(x), y), list(params.values()))  # one gradient of the mean
    return {n: t.square() for n, t in zip(params, g)}


def _summed(model, x, y):
    return {n: f * len(y) for n, f in fisher_diagonal(model, x, y).items()}


def _squared_summed_gradient(model, x, y):
    params = trainable(model)
    g = torch.autograd.grad(_log_lik(model(x), y) * len(y), list(params.values()))  # one gradient of the sum
    return {n: t.square() for n, t in zip(params, g)}


def _gradients_piled_up(model, x, y):
    grads, fisher, total = _per_sample(model, x, y, _log_lik), {}, {}
    for g in grads:  # what p.grad holds after each backward when it is never zeroed: a running sum
        for n, t in g.items():
            total[n] = total.get(n, 0) + t
            fisher[n] = fisher.get(n, 0) + total[n].square() / len(grads)
    return fisher


def _probability(model, x, y):
    def prob(logits, y):
        return logits.softmax(1)[0, y[0]]
    return _mean_of(_per_sample(model, x, y, prob), torch.square)


FISHER_MISTAKES = [
    (named("squared_the_mean_gradient", _squared_mean_gradient),
     "it looks like you squared the gradient of the log-likelihood averaged over all samples; the Fisher squares "
     "each sample's own gradient first, then averages the squares (one backward pass per sample)"),
    (named("did_not_square", lambda model, x, y: _mean_of(_per_sample(model, x, y, _log_lik), lambda g: g)),
     "it looks like you averaged the gradients without squaring them; the Fisher is the mean of the squared "
     "gradients (so it is never negative)"),
    (named("summed_instead_of_mean", _summed),
     "it looks like a sum over the samples; divide by the number of samples to get the mean"),
    (named("gradient_of_the_probability", _probability),
     "it looks like you took the gradient of the probability p(y|x); take the gradient of its logarithm, "
     "log p(y|x) = -F.cross_entropy(logits, y)"),
    (named("first_sample_only", lambda model, x, y: fisher_diagonal(model, x[:1], y[:1])),
     "it looks like only the first sample counted; loop over every sample in x"),
    (named("squared_the_summed_gradient", _squared_summed_gradient),
     "it looks like you squared the gradient of the log-likelihood summed over all samples; the Fisher squares "
     "each sample's own gradient first, then averages the squares (one backward pass per sample)"),
    (named("gradients_piled_up", _gradients_piled_up),
     "it looks like the gradients piled up from sample to sample: loss.backward() adds to p.grad, so each "
     "square included the earlier samples' gradients. Set p.grad to None (or zero it) before each backward, "
     "or use torch.autograd.grad"),
    (named("absolute_value_not_square", lambda model, x, y: _mean_of(_per_sample(model, x, y, _log_lik), torch.abs)),
     "it looks like the absolute value of the gradients; the Fisher is the mean of their squares"),
    (named("predicted_labels_not_true_ones", lambda model, x, y: fisher_diagonal(model, x, model(x).argmax(1))),
     "it looks like the log-likelihood of the model's own predictions, model(x).argmax(1); use the true labels y"),
]


def fisher_without_return(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """The Fisher is computed and never returned."""
    fisher_diagonal(model, x, y)


def fisher_as_a_list(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The right tensors in a list, without the parameter names."""
    return list(fisher_diagonal(model, x, y).values())


def _grads_cleared(fn: Callable) -> Callable:
    """fn, after which the model's .grad are cleared: a learner's loss.backward() must not leak into the next case."""
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        got = fn(model, x, y)
        for p in model.parameters():
            p.grad = None
        return got
    return run


def _same_fisher(got, want: Tensors) -> bool:
    """A dict of tensors with the Fisher's names and shapes, and its values."""
    got = _as_tensors(got)
    return got is not None and set(got) == set(want) and _same(got, want)


def _fisher_form(what: str, got, want: Tensors) -> str | None:
    """What is wrong with the answer's type, names or shapes, or None."""
    got_tensors = _as_tensors(got)
    if got_tensors is None:
        return ("fisher_diagonal should return a dict {parameter name: tensor of its shape}, "
                f"like dict(model.named_parameters()); got {type(got).__name__}")
    if set(got_tensors) != set(want):
        return f"the dict's keys should be the parameter names {sorted(want)}, got {sorted(got_tensors)}"
    wrong = [n for n in want if got_tensors[n].shape != want[n].shape]
    if wrong:
        n = wrong[0]
        return f"{n} should have the shape of the parameter, {tuple(want[n].shape)}, got {tuple(got_tensors[n].shape)}"
    return None


def _fisher_shown(what: str, got, want: Tensors) -> str:
    got = _as_tensors(got)
    worst = max(want, key=lambda n: float((got[n] - want[n]).abs().max()))
    return (f"on {what} the values differ from the Fisher (largest difference in {worst}: your "
            f"{float(got[worst].abs().max()):.3g} at most, expected {float(want[worst].abs().max()):.3g} at most)")


def _describe(model: nn.Module) -> str:
    sizes = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    return "network 784-" + "-".join(map(str, sizes))


# --- exercise 2: the EWC penalty ------------------------------------------------------------------

def _penalty_cases() -> list[tuple[str, tuple[nn.Module, Tensors, Tensors, float]]]:
    """Small networks, anchors near their weights, random non-negative Fishers (some zeros) and strengths."""
    cases = []
    for seed, hidden, lam in ((0, (4,), 1.0), (1, (5, 3), 100.0), (2, (3,), 0.37)):
        model = _small_model(hidden, seed, in_features=6, out_features=3)
        gen = torch.Generator().manual_seed(seed)
        anchor = {n: p.detach() + 0.3 * torch.randn(p.shape, generator=gen) for n, p in trainable(model).items()}
        fisher = {n: torch.rand(p.shape, generator=gen) * (torch.rand(p.shape, generator=gen) > 0.2)
                  for n, p in trainable(model).items()}
        cases.append((model, anchor, fisher, lam))
    model, _, fisher, _ = cases[0]
    at_anchor = {n: p.detach().clone() for n, p in trainable(model).items()}
    cases.append((model, at_anchor, fisher, 5.0))  # at the anchor the penalty is exactly zero
    return [(f"lam = {case[3]:g} on a small network", case) for case in cases]


def _plain_sum(model: nn.Module, anchor: Tensors, fisher: Tensors, term: Callable) -> torch.Tensor:
    """sum over every weight of term(F_i, w_i - anchor_i)."""
    return sum(term(fisher[n], p - anchor[n]).sum() for n, p in trainable(model).items())


def _first_parameter_only(model: nn.Module, anchor: Tensors, fisher: Tensors, lam: float) -> torch.Tensor:
    for name, p in trainable(model).items():
        return lam / 2 * (fisher[name] * (p - anchor[name]) ** 2).sum()  # returns inside the loop


DETACHED = ("the value is right, but {what}, so loss.backward() could not pull the weights back; keep it a torch "
            "tensor computed from model.named_parameters() (no .item(), float(), .detach(), model.state_dict() or "
            "torch.no_grad())")
PLAIN_NUMBER = "it is a plain number, not a tensor connected to the weights"

PENALTY_MISTAKES = [
    (named("forgot_the_half", lambda m, a, f, lam: lam * quadratic_penalty(m, a, f)),
     "it looks like you left out the 1/2: the penalty is lam / 2 * sum F (w - w*)^2"),
    (named("no_fisher", lambda m, a, f, lam: lam / 2 * quadratic_penalty(m, a)),
     "it looks like every weight counts alike (plain L2 to the old weights); weight each squared distance by "
     "its Fisher value F_i"),
    (named("distance_not_squared",
            lambda m, a, f, lam: lam / 2 * _plain_sum(m, a, f, lambda fi, d: fi * d)),
     "it looks like the distance (w - w*) is not squared; without the square, moving a weight down would "
     "lower the penalty"),
    (named("mean_instead_of_sum",
            lambda m, a, f, lam: lam / 2 * sum((f[n] * (p - a[n]) ** 2).mean() for n, p in trainable(m).items())),
     "it looks like you took the mean over each parameter's entries; the penalty sums over every weight"),
    (named("fisher_squared",
            lambda m, a, f, lam: lam / 2 * _plain_sum(m, a, f, lambda fi, d: (fi * d) ** 2)),
     "it looks like the Fisher is squared too; only the distance is: F_i * (w_i - w*_i)^2"),
    (named("norm_not_squared", lambda m, a, f, lam: lam / 2 * quadratic_penalty(m, a, f).sqrt()),
     "it looks like the square root of the weighted sum (a norm, as torch.norm gives); the penalty is the sum "
     "itself, lam / 2 * sum F (w - w*)^2, without a root"),
    (named("sum_not_difference",
            lambda m, a, f, lam: lam / 2 * sum((f[n] * (p + a[n]) ** 2).sum() for n, p in trainable(m).items())),
     "it looks like w + w* where the distance w - w* belongs: the penalty must be 0 when the weights are at the "
     "anchor"),
    (named("first_parameter_only", _first_parameter_only),
     "it looks like only the first parameter counted (is the `return` inside the loop?); add up the terms of "
     "every parameter in model.named_parameters(), then return"),
    (named("detached_number", lambda m, a, f, lam: ewc_penalty(m, a, f, lam).item()),
     DETACHED.format(what=PLAIN_NUMBER)),
]

IN_PLACE = ("the value is right, but your function changed the {what} it was given; training calls the penalty at "
            "every step, so the change would pile up. Build new tensors, f * (p - a) ** 2, instead of changing them "
            "in place (*=, -=, .mul_())")


def penalty_without_return(model: nn.Module, anchor: Tensors, fisher: Tensors, lam: float) -> None:
    """The penalty is computed and never returned."""
    ewc_penalty(model, anchor, fisher, lam)


def weights_from_the_state_dict(model: nn.Module, anchor: Tensors, fisher: Tensors, lam: float) -> torch.Tensor:
    """The weights taken from model.state_dict(), which holds detached copies: the right value, no gradient."""
    weights = model.state_dict()
    return lam / 2 * sum((fisher[n] * (weights[n] - anchor[n]) ** 2).sum() for n in anchor)


def rewrapped_as_a_new_tensor(model: nn.Module, anchor: Tensors, fisher: Tensors, lam: float) -> torch.Tensor:
    """A number wrapped in a new tensor that requires grad: a tensor, but not connected to the weights."""
    return torch.tensor(ewc_penalty(model, anchor, fisher, lam).item(), requires_grad=True)


def fisher_scaled_in_place(model: nn.Module, anchor: Tensors, fisher: Tensors, lam: float) -> torch.Tensor:
    """The right value, but the caller's Fisher is multiplied by lam / 2 in place: it grows at every call."""
    total = 0
    for name, p in trainable(model).items():
        f = fisher[name]
        f *= lam / 2
        total = total + (f * (p - anchor[name]) ** 2).sum()
    return total


def _number(x) -> float:
    """A one-element tensor or a number, as a float (detached first)."""
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def _same_value(got, want) -> bool:
    """One number each, equal within a relative 1e-5."""
    return abs(_number(got) - _number(want)) <= 1e-5 * max(1.0, abs(_number(want)))


def _one_number(what: str, got, want) -> str | None:
    """Asks for one number when the answer is something else."""
    if isinstance(got, (int, float, torch.Tensor)) and torch.as_tensor(got).numel() == 1:
        return None
    return f"ewc_penalty should return one number (a tensor of shape ()), got {got!r:.80}"


def _penalty_shown(what: str, got, want) -> str:
    return f"with {what} it returned {_number(got):.6g}, expected {_number(want):.6g}"


def _gradient_problem(fn: Callable, args: tuple, got, want: torch.Tensor) -> str | None:
    """None if the penalty's gradient is the reference's, else what is wrong (a right value can still be cut off)."""
    if _number(want) == 0.0:
        return None  # at the anchor the gradient is zero too: nothing more to compare
    if not isinstance(got, torch.Tensor):
        return DETACHED.format(what=PLAIN_NUMBER)
    if not got.requires_grad:
        return DETACHED.format(what="the tensor is cut off from the weights (it has no gradient)")
    params = list(trainable(args[0]).values())
    grads = torch.autograd.grad(got.reshape(()), params, allow_unused=True)
    if all(g is None for g in grads):
        return DETACHED.format(what="it is a new tensor made from the value, not from the weights")
    if any(g is None for g in grads):
        return ("the penalty does not depend on every weight: loop over all of model.named_parameters() (every name "
                "in anchor)")
    want_grads = torch.autograd.grad(want, params)
    if not all(torch.allclose(g, w, rtol=1e-4, atol=1e-6) for g, w in zip(grads, want_grads)):
        return ("the value is right but its gradient is not: compute it from the model's own parameters (p from "
                "model.named_parameters()), not from copies")
    return None


check.register(Exercise(
    name="fisher_diagonal",
    reference=fisher_diagonal,
    hint="each digit needs its own backward pass: square that digit's gradient of log p(y | x) before you add it "
         "to the other digits' squares; average at the end",
    verify_fn=Comparison("fisher_diagonal", fisher_diagonal, _fisher_cases, FISHER_MISTAKES, wrap=_grads_cleared,
                         same=_same_fisher, form=_fisher_form, shown=_fisher_shown),
    wrong_answers=[mistake for mistake, _ in FISHER_MISTAKES] + [fisher_without_return, fisher_as_a_list],
))

check.register(Exercise(
    name="ewc_penalty",
    reference=ewc_penalty,
    hint="weight each squared distance from the anchor by its Fisher value, add them up over every parameter, "
         "scale by lam / 2, and keep the result a tensor built from the model's own parameters",
    verify_fn=Comparison("ewc_penalty", ewc_penalty, _penalty_cases, PENALTY_MISTAKES, same=_same_value,
                         form=_one_number, shown=_penalty_shown, unchanged={1: "anchor", 2: "fisher"},
                         in_place=IN_PLACE, per_case=_gradient_problem),
    wrong_answers=[mistake for mistake, _ in PENALTY_MISTAKES] + [penalty_without_return, weights_from_the_state_dict,
                                                                  rewrapped_as_a_new_tensor, fisher_scaled_in_place],
))


# --- exercise 3: SI's importance from the path integral ----------------------------------------------

def si_omega(weights: torch.Tensor, grads: torch.Tensor, xi: float) -> torch.Tensor:
    """SI's importance from a recorded trajectory: weights (steps + 1, n), grads (steps, n) -> omega (n,).

    The path integral sum_k -grad_k * (w_{k+1} - w_k), then the package's `si_importance`, which the SI
    strategy uses at the end of every task.
    """
    path = -(grads * weights.diff(dim=0)).sum(0)  # (n,) each weight's share of the loss decrease
    return si_importance(path, weights[0], weights[-1], xi)


def _gd_on_a_quadratic() -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient descent (lr 0.1) on L = 1/2 sum_i a_i w_i^2 from w = 1, for a = (1, 4, 0): 20 steps."""
    a, w, lr = torch.tensor([1.0, 4.0, 0.0]), torch.ones(3), 0.1
    weights, grads = [w.clone()], []
    for _ in range(20):
        g = a * w
        w = w - lr * g
        grads.append(g)
        weights.append(w.clone())
    return torch.stack(weights), torch.stack(grads)  # (21, 3), (20, 3)


def _si_cases() -> list[tuple[str, tuple]]:
    gen = torch.Generator().manual_seed(4)
    steps = torch.randn(6, 8, generator=gen) * 0.3
    steps[:, 7] = 0  # a weight that never moved: its importance is 0 / (0 + xi) = 0
    weights = torch.cat([torch.randn(1, 8, generator=gen), steps]).cumsum(0)  # (7, 8)
    grads = torch.randn(6, 8, generator=gen)  # (6, 8), some paths positive, some negative
    one = torch.tensor([[0.0], [0.5]]), torch.tensor([[-2.0]])  # one step: path 1.0, displacement 0.5
    return [("one weight, one step of +0.5 against a gradient of -2, xi = 0.1 (omega = 1 / (0.25 + 0.1))",
             (*one, 0.1)),
            ("gradient descent on a quadratic: the stiffer weight did more work, the flat one none",
             (*_gd_on_a_quadratic(), 0.1)),
            ("a random trajectory of 8 weights over 6 steps, one that never moved, xi = 0.1",
             (weights, grads, 0.1)),
            ("the same trajectory with xi = 1.0", (weights, grads, 1.0))]


def _denominator(weights, xi, fn):
    return fn(weights) + xi


SI_MISTAKES = [
    (named("moved_not_squared",
            lambda w, g, xi: (-(g * w.diff(dim=0)).sum(0) / ((w[-1] - w[0]).abs() + xi)).clamp(min=0)),
     "it looks like you divided by how far each weight moved, |w_end - w_start|; SI divides by the squared total "
     "displacement, (w_end - w_start)^2 + xi"),
    (named("no_damping", lambda w, g, xi: (-(g * w.diff(dim=0)).sum(0) / (w[-1] - w[0]).pow(2)).clamp(min=0)),
     "it looks like xi is missing from the denominator: a weight that barely moved then gets an enormous (or "
     "undefined) importance; add xi to the squared displacement"),
    (named("damping_inside_the_square",
            lambda w, g, xi: (-(g * w.diff(dim=0)).sum(0) / (w[-1] - w[0] + xi).pow(2)).clamp(min=0)),
     "it looks like xi went inside the square; it is added after squaring: (w_end - w_start)^2 + xi"),
    (named("path_sign_flipped",
            lambda w, g, xi: ((g * w.diff(dim=0)).sum(0) / ((w[-1] - w[0]).pow(2) + xi)).clamp(min=0)),
     "it looks like the sign of the path integral is flipped: a step against the gradient lowers the loss, so "
     "each step's share of the loss decrease is -grad * step"),
    (named("no_clamp_at_zero", lambda w, g, xi: -(g * w.diff(dim=0)).sum(0) / ((w[-1] - w[0]).pow(2) + xi)),
     "it looks like negative importances were kept; a weight whose moves raised the loss counts as unimportant "
     "(importance 0), not as negatively important"),
    (named("sum_of_squared_steps",
            lambda w, g, xi: (-(g * w.diff(dim=0)).sum(0) / (w.diff(dim=0).pow(2).sum(0) + xi)).clamp(min=0)),
     "it looks like you divided by the sum of the squared steps; SI divides by the square of the total "
     "displacement over the task, (w_end - w_start)^2"),
    (named("total_displacement_times_summed_gradient",
            lambda w, g, xi: (-(g.sum(0) * (w[-1] - w[0])) / ((w[-1] - w[0]).pow(2) + xi)).clamp(min=0)),
     "it looks like the summed gradient times the total displacement; the path integral multiplies each step's "
     "gradient by that same step, then adds them up"),
    (named("absolute_value_not_clamp",
            lambda w, g, xi: (-(g * w.diff(dim=0)).sum(0)).abs() / ((w[-1] - w[0]).pow(2) + xi)),
     "it looks like the absolute value of the path; a weight whose moves raised the loss gets importance 0"),
    (named("end_weights_not_displacement",
            lambda w, g, xi: (-(g * w.diff(dim=0)).sum(0) / (w[-1].pow(2) + xi)).clamp(min=0)),
     "it looks like you divided by the final weight squared; SI divides by the squared displacement over the "
     "task, (w_end - w_start)^2"),
]

check.register(Exercise(
    name="si_omega",
    reference=si_omega,
    hint="the path integral adds up, step by step, how much each weight's move lowered the loss (to first order); "
         "SI then normalises it by how far the weight went over the whole task, with xi keeping the division safe",
    verify_fn=Comparison("si_omega", si_omega, _si_cases, SI_MISTAKES, tol=1e-5),
    wrong_answers=[mistake for mistake, _ in SI_MISTAKES],
))
