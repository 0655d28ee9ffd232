"""Every exercise check refuses every plausible wrong answer listed beside its exercise, and names the mistakes it
knows by their own explanation.

Each exercise's `wrong_answers` are its mutants: the reference with one plausible learner mistake each (an index
or a draw off by one, the wrong axis, a missing factor, a sign, an in-place change, a detached tensor, ...). A
check that passes one of them would teach a learner that the mistake is right. The stub (the exercise left as
it is) is added to every exercise's list here. The table of mutants and catches is printed at the end of the run
(see `pytest_terminal_summary` in conftest.py).
"""
from __future__ import annotations

import time

import pytest

from cfcourse.exercises import (check, lesson02, lesson03, lesson04, lesson05, lesson06, lesson07, lesson08, lesson09,
                                lesson10)

MIN_MUTANTS = 6  # written mistakes per exercise, the stub not counted

# The checks that name a mistake when a wrong answer matches it: (mistake, explanation) pairs per exercise.
NAMED_MISTAKES = {
    "backward_transfer": lesson02.BWT_MISTAKES,
    "forgetting_per_task": lesson02.FORGETTING_MISTAKES,
    "predict_within_task": lesson03.MISTAKES,
    "current_task_loss": lesson03.LOSS_MISTAKES,
    "fisher_diagonal": lesson04.FISHER_MISTAKES,
    "ewc_penalty": lesson04.PENALTY_MISTAKES,
    "si_omega": lesson04.SI_MISTAKES,
    "replay_batch": lesson05.REPLAY_MISTAKES,
    "agem_step": lesson05.AGEM_MISTAKES,
    "lwf_loss": lesson06.LWF_MISTAKES,
    "lora_forward": lesson06.LORA_MISTAKES,
    "distillation_loss": lesson06.MISTAKES,
    "agrees": lesson07.AGREE_MISTAKES,
    "choose_on_validation": lesson07.CHOOSE_MISTAKES,
    "perplexity_from_logits": lesson08.MISTAKES,
    "l2_to_start": lesson09.MISTAKES,
    "replay_schedule": lesson09.SCHEDULE_MISTAKES,
    "old_domain_rise": lesson10.MISTAKES,
}


def _stub(*args, **kwargs):
    """The exercise left as it is."""
    raise NotImplementedError("Exercise: not written yet")


@pytest.mark.parametrize("exercise", list(check), ids=lambda e: e.name)
def test_every_mutant_is_refused(exercise, mutant_table):
    assert exercise.verify(exercise.reference).ok, f"{exercise.name}: the reference fails its own check"
    start = time.perf_counter()
    exercise.verify(exercise.reference)  # timed the second time: the first may pay for imports and data loading
    seconds = time.perf_counter() - start
    passed = []
    for mutant in [*exercise.wrong_answers, _stub]:
        verdict = exercise.verify(mutant)
        if verdict.ok:
            passed.append(f"{mutant.__name__} ({verdict.message})")
        elif mutant is not _stub:
            assert not verdict.not_done, f"{exercise.name}: {mutant.__name__} was taken for the stub"
    n = len(exercise.wrong_answers) + 1
    mutant_table(exercise.name, n, n - len(passed), seconds)
    assert not passed, f"{exercise.name}'s check accepts the wrong answers: " + "; ".join(passed)


@pytest.mark.parametrize("exercise", list(check), ids=lambda e: e.name)
def test_every_exercise_has_enough_named_mutants(exercise):
    names = [mutant.__name__ for mutant in exercise.wrong_answers]
    assert len(names) >= MIN_MUTANTS, f"{exercise.name} lists {len(names)} wrong answers, fewer than {MIN_MUTANTS}"
    assert "<lambda>" not in names, f"{exercise.name}: give every wrong answer a name that says its mistake"
    assert len(set(names)) == len(names), f"{exercise.name}: two wrong answers share a name"


def test_every_check_that_names_mistakes_is_listed_here():
    assert set(NAMED_MISTAKES) <= {e.name for e in check}


@pytest.mark.parametrize("name", NAMED_MISTAKES)
def test_each_named_mistake_gets_its_own_explanation(name):
    exercise = getattr(check, name)
    for mistake, why in NAMED_MISTAKES[name]:
        assert mistake in exercise.wrong_answers, f"{name}: {mistake.__name__} is named but not a wrong answer"
        message = exercise.verify(mistake).message
        assert why in message, f"{name}: {mistake.__name__} was told: {message}"
