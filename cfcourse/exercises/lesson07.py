"""Exercise of lesson 07: does our result agree with a published number, given the spread of our seeds?

The reference is `cfcourse.reproduce.agrees`, the rule the reproduce table uses, so the learner's rule and the
package's can never disagree.
"""
from __future__ import annotations

import statistics

from ..reproduce import agrees
from . import Exercise, check


def _cases() -> list[tuple]:
    """(our accuracies over seeds, the published accuracy): inside and outside each of the two bounds."""
    return [
        ([21.0, 22.0, 20.5], 19.71),   # within 3 points
        ([30.0, 30.2, 29.9], 19.71),   # 10 points off, seeds agree with each other: a miss
        ([20.0, 40.0, 30.0], 19.71),   # 10 points off, but the seeds spread by 10: within 2 std
        ([97.0, 97.1, 96.9], 93.46),   # 3.6 points off, tight seeds: a miss
        ([96.4, 96.5, 96.4], 93.46),   # 2.97 points: in
        ([70.0, 76.0], 65.0),          # mean 73, sample std 4.24 (population 3): 8 <= 8.49 in, 8 > 6 with pstdev
        ([60.0, 66.0], 56.5),          # mean 63, 6.5 off: within 2 sample std (8.49), outside 2 population std (6)
        ([50.0], 53.0),                # one seed: no spread, 3 points exactly is in
        ([50.0], 53.5),                # one seed, 3.5 points: out
        ([88.0, 92.0, 90.0, 91.0], 95.5),  # mean 90.25, std 1.71: 5.25 off is out
    ]


# --- plausible wrong answers: each is the rule with one mistake, and the check must refuse every one ---------

def _std(ours: list[float]) -> float:
    return statistics.stdev(ours) if len(ours) > 1 else 0.0


def ignores_the_spread(ours, published):
    """Only the 3-point bound."""
    return abs(statistics.fmean(ours) - published) <= 3.0


def ignores_the_floor(ours, published):
    """Only the two standard deviations: a single seed (no spread) never agrees."""
    return abs(statistics.fmean(ours) - published) <= 2 * _std(ours)


def population_std(ours, published):
    """statistics.pstdev (divides by n) where the sample standard deviation (n - 1) belongs."""
    return abs(statistics.fmean(ours) - published) <= max(3.0, 2 * statistics.pstdev(ours))


def every_seed_within_3(ours, published):
    """Every seed within 3 points, not their mean."""
    return all(abs(a - published) <= 3.0 for a in ours)


def the_narrower_bound(ours, published):
    """min where max belongs: the narrower of the two bounds."""
    return abs(statistics.fmean(ours) - published) <= (min(3.0, 2 * _std(ours)) if len(ours) > 1 else 3.0)


def strictly_inside(ours, published):
    """< where <= belongs: exactly 3 points off is outside."""
    return abs(statistics.fmean(ours) - published) < max(3.0, 2 * _std(ours))


def no_absolute_value(ours, published):
    """mean - published without abs(): a result far below the published number agrees."""
    return statistics.fmean(ours) - published <= max(3.0, 2 * _std(ours))


def one_standard_deviation(ours, published):
    """One standard deviation where two belong."""
    return abs(statistics.fmean(ours) - published) <= max(3.0, _std(ours))


def variance_not_std(ours, published):
    """Two variances (the square root left out) where two standard deviations belong."""
    return abs(statistics.fmean(ours) - published) <= max(3.0, 2 * (statistics.variance(ours) if len(ours) > 1
                                                                    else 0.0))


def standard_error(ours, published):
    """Two standard errors of the mean (std / sqrt(n)) where two standard deviations belong."""
    return abs(statistics.fmean(ours) - published) <= max(3.0, 2 * _std(ours) / len(ours) ** 0.5)


WRONG_ANSWERS = [ignores_the_spread, ignores_the_floor, population_std, every_seed_within_3, the_narrower_bound,
                 strictly_inside, no_absolute_value, one_standard_deviation, variance_not_std, standard_error]

check.register(Exercise(
    name="agrees",
    reference=agrees,
    hint="take the mean of `ours` (statistics.fmean) and its sample standard deviation (statistics.stdev; 0 for a "
         "single seed); the allowed distance is the wider of 3 points and two standard deviations: "
         "max(3.0, 2 * std); return abs(mean - published) <= that",
    cases=_cases,
    wrong_answers=WRONG_ANSWERS,
))
