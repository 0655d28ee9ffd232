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


_WRONG = [
    lambda ours, published: abs(statistics.fmean(ours) - published) <= 3.0,  # ignores the spread
    lambda ours, published: abs(statistics.fmean(ours) - published) <= 2 * statistics.stdev(ours)
    if len(ours) > 1 else False,  # ignores the 3-point floor
    lambda ours, published: abs(statistics.fmean(ours) - published) <= max(3.0, 2 * statistics.pstdev(ours)),
    lambda ours, published: all(abs(a - published) <= 3.0 for a in ours),  # every seed, not the mean
    lambda ours, published: abs(statistics.fmean(ours) - published) <= min(3.0, 2 * statistics.stdev(ours))
    if len(ours) > 1 else True,  # the narrower bound
]

check.register(Exercise(
    name="agrees",
    reference=agrees,
    hint="take the mean of `ours` (statistics.fmean) and its sample standard deviation (statistics.stdev; 0 for a "
         "single seed); the allowed distance is the wider of 3 points and two standard deviations: "
         "max(3.0, 2 * std); return abs(mean - published) <= that",
    cases=_cases,
    wrong_answers=_WRONG,
))
