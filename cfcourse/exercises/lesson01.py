"""Exercises of lesson 01: one training step."""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from .. import toy
from . import Exercise, Verdict, check, close

N_STEPS = 20


def _fresh_pair(seed: int = 1):
    """Two identical tiny models with their own SGD optimisers, and a small task to train them on."""
    model = toy.make_model(seed=seed)
    twin = copy.deepcopy(model)
    task = toy.make_tasks(n_per_class=20, seed=seed)[1]
    sgd = torch.optim.SGD
    return (model, sgd(model.parameters(), lr=0.2)), (twin, sgd(twin.parameters(), lr=0.2)), task


def verify_train_step(fn: Callable) -> Verdict:
    """Run `fn` and the reference side by side on twin models: same losses, same weights, and the loss falls."""
    (model, opt), (twin, twin_opt), task = _fresh_pair()
    losses = []
    for step in range(1, N_STEPS + 1):
        got = fn(model, opt, task.x, task.y)
        want = toy.train_step(twin, twin_opt, task.x, task.y)
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return Verdict(False, f"it returned {type(got).__name__}, not a Python number; return loss.item()")
        if not close(got, want, tol=1e-4):
            return Verdict(False, f"at step {step} it returned loss {got:.4f}, but one correct step after another "
                                  f"gives {want:.4f}")
        losses.append(got)
    if not close(toy.flat_params(model), toy.flat_params(twin), tol=1e-4):
        return Verdict(False, "the losses match but the weights do not: check every step changes the weights once")
    if not losses[-1] < 0.5 * losses[0]:
        return Verdict(False, f"the loss did not fall ({losses[0]:.3f} -> {losses[-1]:.3f})")
    return Verdict(True, f"the loss fell from {losses[0]:.3f} to {losses[-1]:.3f} in {N_STEPS} steps")


def _no_zero_grad(model, optimizer, x, y):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()  # gradients pile up from step to step
    optimizer.step()
    return loss.item()


def _no_step(model, optimizer, x, y):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    return loss.item()  # the weights never change


def _zero_grad_after_backward(model, optimizer, x, y):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.zero_grad()  # throws the fresh gradients away before they are used
    optimizer.step()
    return loss.item()


def _returns_tensor(model, optimizer, x, y):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss  # a tensor still tied to the graph, not a number


def _loss_after_step(model, optimizer, x, y):
    toy.train_step(model, optimizer, x, y)
    return torch.nn.functional.cross_entropy(model(x), y).item()  # the loss after the step, not before


def _summed_loss(model, optimizer, x, y):
    loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")  # the sum over the batch, not the mean
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _gradient_ascent(model, optimizer, x, y):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    (-loss).backward()  # the sign flipped: every step climbs the loss
    optimizer.step()
    return loss.item()


def _nll_on_raw_logits(model, optimizer, x, y):
    loss = torch.nn.functional.nll_loss(model(x), y)  # nll_loss wants log-probabilities, not raw logits
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _two_steps(model, optimizer, x, y):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    optimizer.step()  # one step too many: the weights move twice per call
    return loss.item()


def _detached_logits(model, optimizer, x, y):
    loss = torch.nn.functional.cross_entropy(model(x).detach(), y)  # cut from the weights: no gradient reaches them
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _no_return(model, optimizer, x, y):
    toy.train_step(model, optimizer, x, y)  # the step is right, but the loss is never returned


check.register(Exercise(
    name="train_step",
    reference=toy.train_step,
    hint="four lines in this order: loss = F.cross_entropy(model(x), y); optimizer.zero_grad(); loss.backward(); "
         "optimizer.step(); then return loss.item() (the loss before the step)",
    verify_fn=verify_train_step,
    wrong_answers=[_no_zero_grad, _no_step, _zero_grad_after_backward, _returns_tensor, _loss_after_step, _summed_loss,
                   _gradient_ascent, _nll_on_raw_logits, _two_steps, _detached_logits, _no_return],
))
