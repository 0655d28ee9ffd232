"""The exercises of lessons 00 and 01: each check passes the reference, fails known mistakes and the stub."""
from __future__ import annotations

import pytest
import torch

from cfcourse import toy
from cfcourse.exercises import check


def stub(*args):
    raise NotImplementedError("Exercise: not written yet")


def test_accuracy_reference_on_a_hand_made_batch():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [4.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    assert check.accuracy.reference(logits, labels) == pytest.approx(0.5)


def test_train_step_reference_is_the_one_toy_trains_with():
    assert check.train_step.reference is toy.train_step


def test_train_step_check_leaves_the_global_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    check.train_step.verify(toy.train_step)
    assert torch.equal(torch.rand(3), expected)
