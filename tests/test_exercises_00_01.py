"""The exercises of lessons 00 and 01: each check passes the reference, fails known mistakes and the stub."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cfcourse import toy
from cfcourse.exercises import check

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
EXERCISES = {"accuracy": "00_welcome.ipynb", "train_step": "01_forgetting_in_2d.ipynb"}


def stub(*args):
    raise NotImplementedError("Exercise: not written yet")


@pytest.mark.parametrize("name", EXERCISES)
def test_the_solution_shown_in_the_lesson_passes_and_its_stub_is_committed(name):
    cells = json.loads((LESSONS / EXERCISES[name]).read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert f"def {name}(" in code and 'raise NotImplementedError("Exercise' in code
    assert f"{name} = check.{name}({name})" in code
    solution = next("".join(c["source"]) for c in cells if "solution" in c.get("metadata", {}).get("tags", []))
    assert "<details><summary>Show solution</summary>" in solution
    namespace = {"torch": torch, "F": F}
    exec(re.search(r"```python\n(.*?)```", solution, re.S).group(1), namespace)  # noqa: S102 - our own notebook
    verdict = getattr(check, name).verify(namespace[name])
    assert verdict.ok, verdict.message


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
