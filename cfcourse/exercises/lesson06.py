"""Exercises of lesson 06: the distillation loss and the loss of one LwF step, and a LoRA linear layer.

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
from . import Comparison, Exercise, check, close, named

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


def _soft(logits: torch.Tensor, T: float) -> torch.Tensor:
    return F.log_softmax(logits / T, dim=1)


def _kl_div_given_probabilities(new: torch.Tensor, old: torch.Tensor, T: float) -> torch.Tensor:
    """What F.kl_div(softmax(new / T), softmax(old / T), reduction="batchmean") * T² computes: it takes its first
    argument for log-probabilities."""
    log_p_old = _soft(old, T)
    return (log_p_old.exp() * (log_p_old - _soft(new, T).exp())).sum(1).mean() * T ** 2


MISTAKES = [
    (named("no_t_squared", lambda new, old, T: _kl(_soft(old, T), _soft(new, T)).mean()),
     "it looks like the T² factor is missing: softening by T shrinks the gradients by about 1/T², so LwF "
     "multiplies the KL by T² to keep the distillation term as strong at any temperature"),
    (named("kl_wrong_direction", lambda new, old, T: _kl(_soft(new, T), _soft(old, T)).mean() * T ** 2),
     "it looks like the KL runs the wrong way: KL(p_new || p_old). The old model's outputs are the targets, "
     "so weigh by them: sum over classes of p_old · (log p_old − log p_new)"),
    (named("no_temperature", lambda new, old, T: _kl(_soft(old, 1.0), _soft(new, 1.0)).mean()),
     "it looks like the temperature is not used: divide both sets of logits by T before the softmax, "
     "and multiply the result by T²"),
    (named("temperature_not_squared", lambda new, old, T: _kl(_soft(old, T), _soft(new, T)).mean() * T),
     "it looks like you multiplied by T, not by T²"),
    (named("soft_cross_entropy", lambda new, old, T: -(_soft(old, T).exp() * _soft(new, T)).sum(1).mean() * T ** 2),
     "it looks like the cross-entropy with soft targets (Hinton's form). It has the same gradient as KL, but it "
     "is not 0 when nothing has changed: it includes the entropy of the old outputs. Use the KL divergence: "
     "subtract p_old · log p_old"),
    (named("summed_over_samples", lambda new, old, T: _kl(_soft(old, T), _soft(new, T)).sum() * T ** 2),
     "it looks like a sum over the samples; take the mean over the batch, so the loss does not grow with the "
     "batch size"),
    (named("softmax_over_the_batch",
            lambda new, old, T: _kl(F.log_softmax(old / T, dim=0), F.log_softmax(new / T, dim=0)).mean() * T ** 2),
     "it looks like the softmax runs over the batch (dim=0); each sample's outputs over the classes must sum "
     "to 1: softmax along dim=1 (or dim=-1)"),
    (named("temperature_on_the_old_only", lambda new, old, T: _kl(_soft(old, T), _soft(new, 1.0)).mean() * T ** 2),
     "it looks like only the old logits were divided by T; soften both, new_logits / T and old_logits / T"),
    (named("divided_by_t_squared", lambda new, old, T: _kl(_soft(old, T), _soft(new, T)).mean() / T ** 2),
     "it looks like you divided by T²; multiply by it, to make up for the gradients that softening shrinks"),
    (named("kl_div_given_probabilities", _kl_div_given_probabilities),
     "it looks like F.kl_div was given probabilities; its first argument must be log-probabilities: "
     "F.kl_div(F.log_softmax(new_logits / T, dim=1), F.softmax(old_logits / T, dim=1), reduction='batchmean')"),
    (named("mean_over_classes_too",
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


def _described_cases() -> list[tuple[str, tuple[torch.Tensor, torch.Tensor, float]]]:
    return [(what, (new, old, T)) for what, new, old, T in _cases()]


def _loss_shown(what: str, got, want: torch.Tensor) -> str:
    return f"case '{what}': your function returned {_value(got)}, expected {want.item():.4f}"


def _value(x) -> str:
    try:
        return f"{float(x):.4f}"
    except (TypeError, ValueError, RuntimeError):
        return repr(x)[:80]


check.register(Exercise(
    name="distillation_loss",
    reference=distillation_loss,
    hint="soften both sets of logits with the same temperature first; the loss measures how far the new "
         "distribution is from the old one (the old one is the target), averaged over the batch, and the T² keeps "
         "its gradient the same size at any temperature",
    verify_fn=Comparison("distillation_loss", distillation_loss, _described_cases, MISTAKES, tol=TOL,
                         shown=_loss_shown, at_end=_gradient_problem),
    wrong_answers=[mistake for mistake, _ in MISTAKES] + [detached_new_logits, returned_a_number],
))


# --- exercise 2: the loss of one LwF step ------------------------------------------------------------

from torch import nn  # noqa: E402

from ..models import MLP  # noqa: E402
from ..strategies.distillation import frozen_copy  # noqa: E402
from ..strategies.isolation import lora_linear  # noqa: E402


def lwf_loss(model: nn.Module, old_model: nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float,
             temperature: float) -> torch.Tensor:
    """The loss of one LwF step on a single-head model: the new task's cross-entropy plus alpha times the
    distillation from the frozen old model's outputs on the same new inputs (as the LwF strategy adds it)."""
    new = model(x)  # (batch, classes)
    with torch.no_grad():
        old = old_model(x)
    return F.cross_entropy(new, y) + alpha * distillation_loss(new, old, temperature)


def _lwf_models() -> tuple[nn.Module, nn.Module]:
    """A frozen 'old' network and a 'new' one a little further along, fixed by seeds."""
    with torch.random.fork_rng():
        torch.manual_seed(60)
        old = MLP(12, (10,), 5)
        model = MLP(12, (10,), 5)
        model.load_state_dict(old.state_dict())
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.3 * torch.randn_like(p))
    return model, frozen_copy(old)


def _lwf_cases() -> list[tuple[str, tuple]]:
    gen = torch.Generator().manual_seed(61)
    x, y = torch.randn(9, 12, generator=gen), torch.randint(0, 5, (9,), generator=gen)
    model, old = _lwf_models()
    return [("9 new inputs, alpha = 1, T = 2", (model, old, x, y, 1.0, 2.0)),
            ("the same inputs, alpha = 3, T = 1", (model, old, x, y, 3.0, 1.0)),
            ("alpha = 0.5, T = 4", (model, old, x[:4], y[:4], 0.5, 4.0))]


def _value_and_grads(fn: Callable) -> Callable:
    """fn's loss and its gradient in every weight of the new model; a loss without a gradient gives None."""
    def run(model, old_model, x, y, alpha, T):
        out = fn(model, old_model, x, y, alpha, T)
        if not isinstance(out, torch.Tensor) or out.numel() != 1 or out.grad_fn is None:
            return ("no gradient", out)
        if any(p.grad is not None for p in old_model.parameters()):
            return ("old model trained", out)
        grads = torch.autograd.grad(out.reshape(()), list(model.parameters()), allow_unused=True)
        return torch.cat([out.detach().reshape(1)] + [(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                                      for g, p in zip(grads, model.parameters())])
    return run


def _same_loss(got, want) -> bool:
    return isinstance(got, torch.Tensor) and close(got, want, TOL)


def _lwf_shown(what, got, want) -> str:
    if isinstance(got, tuple) and got[0] == "no gradient":
        return (f"on {what}, your lwf_loss returned {_value(got[1])}, which training cannot follow back to the "
                "weights: return one tensor built from model(x)")
    if isinstance(got, tuple):
        return f"on {what}, your lwf_loss let gradients reach the old model, which must stay frozen"
    if abs(float(got[0]) - float(want[0])) <= TOL * max(1.0, abs(float(want[0]))):
        return f"on {what}, your lwf_loss has the right value ({float(want[0]):.4f}) but not the right gradient"
    return f"on {what}, your lwf_loss returned {float(got[0]):.4f}, expected {float(want[0]):.4f}"


def _lwf_mistake(combine: Callable) -> Callable:
    def loss(model, old_model, x, y, alpha, T):
        new = model(x)
        with torch.no_grad():
            old = old_model(x)
        return combine(new, old, y, alpha, T)
    return loss


LWF_MISTAKES = [
    (named("forgot_the_new_task_loss", _lwf_mistake(lambda n, o, y, a, T: a * distillation_loss(n, o, T))),
     "it looks like only the distillation term: the new task must still be learned, so add the cross-entropy of "
     "the new outputs with the labels y"),
    (named("forgot_the_distillation", _lwf_mistake(lambda n, o, y, a, T: F.cross_entropy(n, y))),
     "it looks like only the new task's loss counted (that is naive fine-tuning): the distillation term is "
     "missing, or always 0 because its targets came from the model being trained; add alpha times the "
     "distillation from old_model's outputs"),
    (named("alpha_on_the_new_task_loss",
            _lwf_mistake(lambda n, o, y, a, T: a * F.cross_entropy(n, y) + distillation_loss(n, o, T))),
     "it looks like alpha multiplies the new task's loss; it weighs the distillation term"),
    (named("old_and_new_swapped",
            _lwf_mistake(lambda n, o, y, a, T: F.cross_entropy(n, y) + a * distillation_loss(o, n.detach(), T))),
     "it looks like the old and new outputs were swapped in the distillation; the old model's outputs are the "
     "target (the second argument), the new model's the prediction, and the gradient flows into the new ones"),
    (named("hard_labels_from_the_old_model",
            _lwf_mistake(lambda n, o, y, a, T: F.cross_entropy(n, y) + a * F.cross_entropy(n, o.argmax(1)))),
     "it looks like the old model's top class was used as a hard label; LwF matches its whole softened "
     "distribution (distillation_loss with the temperature)"),
    (named("temperature_ignored",
            _lwf_mistake(lambda n, o, y, a, T: F.cross_entropy(n, y) + a * distillation_loss(n, o, 1.0))),
     "it looks like the temperature was left out (T = 1 whatever T was given); pass it to the distillation"),
    (named("distillation_cut_off_from_the_weights",
            _lwf_mistake(lambda n, o, y, a, T: F.cross_entropy(n, y) + a * distillation_loss(n.detach(), o, T))),
     "the value is right, but the distillation term carries no gradient back to the weights (the new outputs were "
     "detached), so it cannot hold them; use model(x) itself"),
]

check.register(Exercise(
    name="lwf_loss",
    reference=lwf_loss,
    hint="two terms on the same new inputs: one says how well the new task is learned, the other how far the "
         "outputs have moved from what the frozen old model answers; only one of them is weighted by alpha",
    verify_fn=Comparison("lwf_loss", lwf_loss, _lwf_cases, LWF_MISTAKES, wrap=_value_and_grads, same=_same_loss,
                         shown=_lwf_shown),
    wrong_answers=[mistake for mistake, _ in LWF_MISTAKES],
))


# --- exercise 3: a LoRA linear layer -----------------------------------------------------------------

def lora_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 alpha: float) -> torch.Tensor:
    """LoRA's layer (Hu et al. 2021): W x + b + (alpha / r) B A x, x (batch, in), A (r, in), B (out, r).

    The package's `lora_linear` with LoRA's scale alpha / r."""
    return lora_linear(x, weight, bias, A, B, alpha / A.shape[0])


def _lora_cases() -> list[tuple[str, tuple]]:
    gen = torch.Generator().manual_seed(62)
    W, b, x = torch.randn(5, 7, generator=gen), torch.randn(5, generator=gen), torch.randn(3, 7, generator=gen)
    A4, B4 = torch.randn(4, 7, generator=gen), torch.randn(5, 4, generator=gen)
    A1 = torch.zeros(1, 7)
    A1[0, 0] = 1.0  # A x picks the first input
    B1 = torch.zeros(5, 1)
    B1[2, 0] = 1.0  # B puts it on the third output
    x1 = torch.zeros(1, 7)
    x1[0, 0] = 2.0
    return [("B = 0, as LoRA starts: the output must equal W x + b", (x, W, b, A4, torch.zeros(5, 4), 8.0)),
            ("rank 1, A picks input 1, B writes output 3, alpha = 3: output 3 rises by 3 * x_1 = 6",
             (x1, W, b, A1, B1, 3.0)),
            ("rank 4, alpha = 8 (scale 2)", (x, W, b, A4, B4, 8.0)),
            ("rank 4, alpha = 4 (scale 1)", (x, W, b, A4, B4, 4.0))]


def _lin(x, W, b):
    return x @ W.T + b


LORA_MISTAKES = [
    (named("scale_alpha_over_sqrt_r", lambda x, W, b, A, B, a: _lin(x, W, b) + a / A.shape[0] ** 0.5 * x @ A.T @ B.T),
     "it looks like the scale alpha / sqrt(r) (rank-stabilised LoRA, which the package's adapters use); LoRA's "
     "own scale, asked for here, is alpha / r"),
    (named("no_scale", lambda x, W, b, A, B, a: _lin(x, W, b) + x @ A.T @ B.T),
     "it looks like the low-rank update is not scaled; multiply B A x by alpha / r"),
    (named("forgot_the_frozen_weight", lambda x, W, b, A, B, a: b + a / A.shape[0] * x @ A.T @ B.T),
     "the frozen weight's part W x is missing: LoRA adds the update to the frozen layer's output"),
    (named("forgot_the_bias", lambda x, W, b, A, B, a: x @ W.T + a / A.shape[0] * x @ A.T @ B.T),
     "the bias b is missing"),
    (named("scaled_the_whole_output", lambda x, W, b, A, B, a: a / A.shape[0] * (_lin(x, W, b) + x @ A.T @ B.T)),
     "the scale multiplies the whole output; only the low-rank update B A x is scaled, W x + b stays as it is"),
    (named("rank_from_the_wrong_side", lambda x, W, b, A, B, a: _lin(x, W, b) + a / A.shape[1] * x @ A.T @ B.T),
     "the rank r is A's number of rows (A has shape (r, in)), not its number of columns"),
    (named("update_subtracted", lambda x, W, b, A, B, a: _lin(x, W, b) - a / A.shape[0] * x @ A.T @ B.T),
     "the update was subtracted; LoRA adds (alpha / r) B A x"),
]

check.register(Exercise(
    name="lora_forward",
    reference=lora_forward,
    hint="the frozen layer's output stays as it is; a second path goes through A (down to r numbers) and then B "
         "(back up to the output size), is scaled by alpha / r, and is added",
    verify_fn=Comparison(
        "lora_forward", lora_forward, _lora_cases, LORA_MISTAKES, tol=1e-4,
        shown=lambda what, got, want: (f"on {what}, your output differs from LoRA's by up to "
                                       f"{float((torch.as_tensor(got) - want).abs().max()):.3g}"
                                       if torch.as_tensor(got).shape == want.shape else
                                       f"on {what}, your output has shape {tuple(torch.as_tensor(got).shape)}, "
                                       f"expected {tuple(want.shape)}")),
    wrong_answers=[mistake for mistake, _ in LORA_MISTAKES],
))
