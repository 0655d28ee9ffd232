"""Exercise of lesson 05: reservoir sampling, checked by what it must guarantee rather than by one answer.

A correct reservoir can use its random numbers in many ways, so the check does
not compare the learner's buffer with the reference's. It offers a stream of
items to the learner's function and checks the three things reservoir sampling
promises: every item is kept while the buffer fills, the buffer never holds
more than `size`, and over many runs (from a fixed seed) every item of the
stream is held equally often, size/n of the time. The reference is the
package's own `cfcourse.strategies.rehearsal.reservoir_update`.
"""
from __future__ import annotations

import random
from collections.abc import Callable

from ..strategies.rehearsal import reservoir_update
from . import Exercise, Verdict, check

STREAM = 200  # items offered in each run: 0, 1, ..., 199
SIZE = 20  # capacity: each item should be held in size/n = 10% of the runs
RUNS = 1000  # runs behind the frequencies; one Random(0) feeds them all, so the check is repeatable
SIGMAS = 5.0  # how far from the expected frequency an honest reservoir may land by chance


class _Wrong(Exception):
    """A rule of reservoir sampling was broken; the message says which, for the learner."""


def _run(fn: Callable, n: int, size: int, rng: random.Random) -> list:
    """Offer items 0..n-1 to an empty list through `fn`, checking the buffer after every offer."""
    buffer: list = []
    for seen in range(1, n + 1):
        result = fn(buffer, seen - 1, seen, rng, size)
        want = min(seen, size)
        if len(buffer) != want:
            raise _Wrong(_length_message(buffer, result, seen, size, want))
        if len(set(buffer)) != len(buffer) or not set(buffer) <= set(range(seen)):
            raise _Wrong(f"after offering items 0..{seen - 1} the buffer holds {sorted(buffer)}: an item twice, "
                         "or one never offered; each slot must hold one of the items offered, each at most once")
    return buffer


def _length_message(buffer: list, result, seen: int, size: int, want: int) -> str:
    """Why the buffer has the wrong length after the `seen`-th offer."""
    if not buffer and isinstance(result, list) and result:
        return ("the buffer passed in stays empty and your function returns a new list: change `buffer` itself "
                "(append to it, or assign to one of its slots); the caller keeps using the list it passed")
    if len(buffer) > size:
        return (f"after {seen} items (size={size}) the buffer holds {len(buffer)}: it must never hold more than "
                "`size`; once it is full, a new item may only take the place of one already held")
    if seen <= size:
        return (f"after {seen} items (size={size}) the buffer holds {len(buffer)}, expected {want}: while the "
                "buffer is not full, every item offered is kept")
    return f"after {seen} items (size={size}) the buffer holds {len(buffer)}, expected {want}: a full buffer stays full"


def inclusion_counts(fn: Callable, n: int = STREAM, size: int = SIZE, runs: int = RUNS, seed: int = 0) -> list[int]:
    """How many of `runs` runs end with each item 0..n-1 of the stream in the buffer (one seeded Random for all)."""
    rng = random.Random(seed)
    counts = [0] * n
    for _ in range(runs):
        for item in _run(fn, n, size, rng):
            counts[item] += 1
    return counts


def uniformity_problem(counts: list[int], runs: int, size: int) -> str | None:
    """What is wrong with the inclusion counts of a reservoir, or None if they look uniform.

    Each count is Binomial(runs, size/n). Checked: the first and the last tenth of the stream (a bias towards
    old or new items), then a chi-square over all positions, each at about SIGMAS standard deviations.
    """
    n = len(counts)
    p = size / n
    var = runs * p * (1 - p)
    tenth = n // 10
    sd_tenth = (var / tenth) ** 0.5 / runs  # of a tenth's mean frequency
    first, last = sum(counts[:tenth]) / tenth / runs, sum(counts[-tenth:]) / tenth / runs
    where = (f"(first tenth of the stream: each item held in {first:.1%} of {runs} runs; last tenth: {last:.1%}; "
             f"a uniform sample holds each in size/n = {p:.0%})")
    if last - p > SIGMAS * sd_tenth:
        return (f"the newest items are held far too often {where}: once the buffer is full, keep the seen-th item "
                "only with probability size/seen, so that old items keep their share")
    if first - p > SIGMAS * sd_tenth:
        return (f"the oldest items are held far too often {where}: a new item must still get in with probability "
                "size/seen, taking the place of a slot chosen at random, every slot equally likely")
    if p - first > SIGMAS * sd_tenth:
        return (f"the oldest items are held far too rarely {where}: when a new item gets in, the one it replaces "
                "must be chosen at random among those held, not always the oldest")
    if p - last > SIGMAS * sd_tenth:
        return (f"the newest items are held far too rarely {where}: the seen-th item must get in with "
                "probability size/seen")
    chi2 = sum((c - runs * p) ** 2 for c in counts) / var
    df = n - 1
    if chi2 > df + SIGMAS * (2 * df) ** 0.5:
        return (f"the items are not held equally often (chi-square {chi2:.0f} for {df} degrees of freedom, expected "
                f"about {df}): each item must end up in the buffer with the same probability, size/n")
    return None


def verify_reservoir_update(fn: Callable) -> Verdict:
    """Fill, size bound, then uniformity over RUNS runs of a STREAM-item stream into SIZE slots."""
    try:
        _run(fn, SIZE, SIZE, random.Random(0))  # filling only: every item kept
        counts = inclusion_counts(fn)
    except _Wrong as e:
        return Verdict(False, str(e))
    problem = uniformity_problem(counts, RUNS, SIZE)
    if problem:
        return Verdict(False, problem)
    lo, hi = min(counts) / RUNS, max(counts) / RUNS
    return Verdict(True, f"over {RUNS} runs every item was held in {lo:.0%}-{hi:.0%} of them "
                         f"(expected {SIZE / STREAM:.0%})")


# --- known mistakes: each breaks one promise of reservoir sampling, and the tests show the check catches it ---

def always_replace_a_random_slot(buffer, item, seen, rng, size):
    """Every new item gets in: the buffer ends up holding mostly the latest items."""
    if len(buffer) < size:
        buffer.append(item)
    else:
        buffer[rng.randrange(size)] = item


def keep_the_first_n(buffer, item, seen, rng, size):
    """Fill up and then ignore the rest of the stream (in class-incremental learning: only the first task)."""
    if len(buffer) < size:
        buffer.append(item)


def no_size_bound(buffer, item, seen, rng, size):
    """Keep everything: not a fixed-size memory at all."""
    buffer.append(item)


def keep_with_probability_one_over_seen(buffer, item, seen, rng, size):
    """Keeps a new item with probability 1/seen instead of size/seen: old items are held too often."""
    if len(buffer) < size:
        buffer.append(item)
    elif rng.randrange(seen) == 0:
        buffer[rng.randrange(size)] = item


def always_replace_the_last_slot(buffer, item, seen, rng, size):
    """The right probability, but always the same slot: the first size-1 items stay forever."""
    if len(buffer) < size:
        buffer.append(item)
    elif rng.randrange(seen) < size:
        buffer[-1] = item


def replace_the_oldest(buffer, item, seen, rng, size):
    """The right probability, but the oldest item leaves (a queue): held items are not replaced at random."""
    if len(buffer) < size:
        buffer.append(item)
    elif rng.randrange(seen) < size:
        buffer.pop(0)
        buffer.append(item)


def returns_a_new_list(buffer, item, seen, rng, size):
    """Builds a new list instead of changing the one it was given; the caller's buffer never changes."""
    return buffer + [item] if len(buffer) < size else list(buffer)


WRONG_ANSWERS = [always_replace_a_random_slot, keep_the_first_n, no_size_bound, keep_with_probability_one_over_seen,
                 always_replace_the_last_slot, replace_the_oldest, returns_a_new_list]

check.register(Exercise(
    name="reservoir_update",
    reference=reservoir_update,
    hint="while len(buffer) < size, append the item; after that draw a random whole number from 0 to seen-1 "
         "with rng and, when it is below size, put the item in that slot (it then replaces a random held item, and "
         "gets in with probability size/seen)",
    verify_fn=verify_reservoir_update,
    wrong_answers=WRONG_ANSWERS,
))
