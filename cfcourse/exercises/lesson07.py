"""Exercises of lesson 07: does our result agree with a published number, and how to choose a hyperparameter
without peeking at the test set.

The references are the package's own `cfcourse.reproduce.agrees` (the rule the reproduce table uses) and
`cfcourse.reproduce.choose_on_validation` (what `reproduce.tune` uses), so the learner's rule and the package's can
never disagree.
"""
from __future__ import annotations

import math
import statistics

from ..reproduce import agrees, choose_on_validation, t_quantile
from . import Comparison, Exercise, check, named


# --- exercise 1: agreement with a published number, with the standard error of our mean -------------------------

def _agree_cases() -> list[tuple[str, tuple]]:
    """(what, (our accuracies over seeds, the published accuracy)): inside and outside each of the two bounds."""
    return [
        ("three seeds within 3 points", ([21.0, 22.0, 20.5], 19.71)),
        ("three tight seeds 10.3 points off", ([30.0, 30.2, 29.9], 19.71)),
        ("three seeds spread over 20 points, 10.3 points off (half-width 24.8)", ([20.0, 40.0, 30.0], 19.71)),
        ("three tight seeds 3.54 points off", ([97.0, 97.1, 96.9], 93.46)),
        ("three seeds 2.97 points off", ([96.4, 96.5, 96.4], 93.46)),
        ("one seed exactly 3 points off", ([50.0], 53.0)),
        ("one seed 3.5 points off", ([50.0], 53.5)),
        ("five seeds with standard deviation 3.16, 5 points off (half-width 3.93)", ([86.0, 90.0, 88.0, 84.0, 92.0],
                                                                                     93.0)),
        ("five seeds 3.9 points above the paper (half-width 3.93)", ([86.0, 90.0, 88.0, 84.0, 92.0], 84.1)),
        ("two seeds 6 apart, 20 points off (half-width 38.1)", ([70.0, 76.0], 53.0)),
        ("two seeds 6 apart, 10 points off (half-width 38.1)", ([70.0, 76.0], 63.0)),
        ("three seeds 4 apart, 4.5 points off (half-width 4.97)", ([60.0, 62.0, 64.0], 66.5)),
        ("three seeds 4 apart, 3.8 points off (half-width 4.97)", ([60.0, 62.0, 64.0], 58.2)),
        ("four seeds, mean 20, one of them 4 points off the paper's 20", ([16.0, 24.0, 20.0, 20.0], 20.0)),
        ("three seeds 4 apart, 4.4 points off (half-width 4.97)", ([60.0, 62.0, 64.0], 66.4)),
        ("three seeds 4 apart, 5.5 points off (half-width 4.97)", ([60.0, 62.0, 64.0], 67.5)),
        ("ten seeds with standard deviation 3.03, 3.5 points off (half-width 2.17)", (
            [80.0, 84.0, 86.0, 78.0, 82.0, 85.0, 79.0, 83.0, 81.0, 87.0], 86.0)),
        ("twelve seeds 6 points off (half-width 4.97, standard deviation 7.83)", (
            [60.0, 70.0, 80.0, 65.0, 75.0, 62.0, 78.0, 68.0, 72.0, 58.0, 82.0, 70.0], 76.0)),
    ]


def _mean(ours):
    return statistics.fmean(ours)


def _sem(ours):
    return statistics.stdev(ours) / math.sqrt(len(ours)) if len(ours) > 1 else 0.0


def _t(ours):
    return t_quantile(len(ours) - 1) if len(ours) > 1 else 0.0


AGREE_MISTAKES = [
    (named("spread_of_seeds_not_standard_error",
            lambda ours, pub: abs(_mean(ours) - pub) <= max(3.0, 2 * (statistics.stdev(ours) if len(ours) > 1
                                                                      else 0.0))),
     "it looks like two standard deviations of the seeds; that is how far one seed falls from the mean, not how "
     "uncertain the mean is: use the standard error, stdev / sqrt(n), times t"),
    (named("two_standard_errors_not_t",
            lambda ours, pub: abs(_mean(ours) - pub) <= max(3.0, 2 * _sem(ours))),
     "it looks like two standard errors; with a handful of seeds the standard deviation is itself uncertain, and "
     "the multiplier is Student's t for n - 1 degrees of freedom (12.7 for two seeds, 4.3 for three), not 2"),
    (named("t_with_n_degrees_of_freedom",
            lambda ours, pub: abs(_mean(ours) - pub) <= max(3.0, (t_quantile(len(ours)) if len(ours) > 1 else 0.0)
                                                            * _sem(ours))),
     "it looks like t with n degrees of freedom; the standard deviation used up one, so it is t_quantile(n - 1)"),
    (named("divided_by_n_not_sqrt_n",
            lambda ours, pub: abs(_mean(ours) - pub) <= max(3.0, _t(ours) * (statistics.stdev(ours) / len(ours)
                                                                             if len(ours) > 1 else 0.0))),
     "it looks like the standard deviation divided by n; the standard error divides by the square root of n"),
    (named("t_times_standard_deviation",
            lambda ours, pub: abs(_mean(ours) - pub) <= max(3.0, _t(ours) * (statistics.stdev(ours) if len(ours) > 1
                                                                             else 0.0))),
     "it looks like t times the standard deviation; the interval for the mean is t times the standard error, "
     "stdev / sqrt(n)"),
    (named("population_standard_deviation",
            lambda ours, pub: abs(_mean(ours) - pub) <= max(3.0, _t(ours) * statistics.pstdev(ours)
                                                            / math.sqrt(len(ours)))),
     "it looks like statistics.pstdev, which divides by n; the standard error is built on the sample standard "
     "deviation (statistics.stdev, n - 1)"),
    (named("ignores_the_floor",
            lambda ours, pub: abs(_mean(ours) - pub) <= _t(ours) * _sem(ours)),
     "it looks like the 3-point floor is missing: a single seed (no interval) then never agrees, and the noise of "
     "the paper's own seeds is not allowed for"),
    (named("ignores_the_interval", lambda ours, pub: abs(_mean(ours) - pub) <= 3.0),
     "it looks like only the 3-point bound; when our own seeds are uncertain, a mean inside its 95% interval "
     "cannot be said to disagree"),
    (named("the_narrower_bound",
            lambda ours, pub: abs(_mean(ours) - pub) <= (min(3.0, _t(ours) * _sem(ours)) if len(ours) > 1
                                                         else 3.0)),
     "it looks like the narrower of the two bounds; the rule takes the wider one (max)"),
    (named("strictly_inside", lambda ours, pub: abs(_mean(ours) - pub) < max(3.0, _t(ours) * _sem(ours))),
     "it looks like < where <= belongs: a mean exactly 3 points off agrees"),
    (named("no_absolute_value", lambda ours, pub: _mean(ours) - pub <= max(3.0, _t(ours) * _sem(ours))),
     "it looks like the absolute value is missing: a mean far below the published number then agrees"),
    (named("every_seed_within_3", lambda ours, pub: all(abs(a - pub) <= 3.0 for a in ours)),
     "it looks like each seed compared with the paper; the rule compares the mean of the seeds"),
]

check.register(Exercise(
    name="agrees",
    reference=agrees,
    hint="the uncertainty of a mean shrinks as seeds are added, while their spread does not: build the interval "
         "from the standard error and Student's t for the number of seeds, then take the wider of it and the "
         "3-point floor",
    verify_fn=Comparison("agrees", agrees, _agree_cases, AGREE_MISTAKES,
                         same=lambda a, b: isinstance(a, bool) and a == b),
    wrong_answers=[mistake for mistake, _ in AGREE_MISTAKES],
))


# --- exercise 2: choose on validation, report the test number once ---------------------------------------------

def _choose_cases() -> list[tuple[str, tuple]]:
    """(what, (validation accuracy per setting, test accuracy per setting)), accuracies in percent."""
    return [
        ("four settings where validation and test disagree on the best",
         ({0.0: 60.0, 10.0: 64.0, 100.0: 62.0, 1000.0: 55.0}, {0.0: 61.0, 10.0: 62.0, 100.0: 65.0, 1000.0: 54.0})),
        ("a tie on validation between 10 and 100",
         ({1.0: 70.0, 10.0: 72.0, 100.0: 72.0, 1000.0: 50.0}, {1.0: 69.0, 10.0: 70.0, 100.0: 73.0, 1000.0: 52.0})),
        ("three settings where validation plus test favours a third",
         ({1.0: 80.0, 10.0: 76.0, 100.0: 70.0}, {1.0: 70.0, 10.0: 78.0, 100.0: 79.0})),
        ("the best on validation is also the best on test",
         ({5.0: 90.0, 50.0: 91.0, 500.0: 89.0}, {5.0: 88.0, 50.0: 90.0, 500.0: 87.0})),
    ]


CHOOSE_MISTAKES = [
    (named("picked_on_test", lambda val, test: (max(test, key=test.get), max(test.values()))),
     "it looks like the setting was picked on the test accuracies; the test set must not help choose, or the "
     "number reported is the best of several tries on it: pick on validation"),
    (named("reports_the_best_test_number", lambda val, test: (max(val, key=val.get), max(test.values()))),
     "it looks like the right setting but the best test accuracy of any setting; report the test accuracy of the "
     "setting you chose, whatever it is"),
    (named("reports_the_validation_number", lambda val, test: (max(val, key=val.get), val[max(val, key=val.get)])),
     "it looks like the validation accuracy was reported; it helped choose, so it is optimistic: report the chosen "
     "setting's test accuracy"),
    (named("picked_the_worst", lambda val, test: (min(val, key=val.get), test[min(val, key=val.get)])),
     "it looks like the lowest validation accuracy was picked (min where max belongs)"),
    (named("picked_on_validation_plus_test",
            lambda val, test: (max(val, key=lambda k: val[k] + test[k]), test[max(val, key=lambda k: val[k] + test[k])])),
     "it looks like validation and test were combined to choose; the test set must play no part in the choice"),
    (named("the_last_of_a_tie",
            lambda val, test: (max(reversed(list(val)), key=val.get), test[max(reversed(list(val)), key=val.get)])),
     "it looks like a tie on validation went to the later setting; the rule, fixed before looking, takes the first "
     "in the sweep's order"),
    (named("position_not_setting",
            lambda val, test: (list(val).index(max(val, key=val.get)), test[max(val, key=val.get)])),
     "it looks like the position of the best setting in the sweep was returned; return the setting itself (the "
     "dictionary key)"),
    (named("reports_the_mean_test_number",
            lambda val, test: (max(val, key=val.get), statistics.fmean(test.values()))),
     "it looks like the average test accuracy over all settings was reported; report the chosen setting's"),
]

check.register(Exercise(
    name="choose_on_validation",
    reference=choose_on_validation,
    hint="the test numbers are read only after the choice is made, and only one of them: the chosen setting's. "
         "Decide ties by a rule fixed in advance (the first in the sweep)",
    verify_fn=Comparison("choose_on_validation", choose_on_validation, _choose_cases, CHOOSE_MISTAKES),
    wrong_answers=[mistake for mistake, _ in CHOOSE_MISTAKES],
))
