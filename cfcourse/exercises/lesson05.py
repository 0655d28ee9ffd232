"""Exercise of lesson 05: reservoir sampling, checked by what it must guarantee rather than by one answer.

A correct reservoir can use its random numbers in many ways, so the check does
not compare the learner's buffer with the reference's. It offers a stream of
items to the learner's function and checks what reservoir sampling promises:
every item is kept while the buffer fills, the buffer never holds more than
`size`, and over many runs (from a fixed seed) every item of the stream is held
equally often, size/n of the time. A second, short stream offered many times
sees a draw that is off by one (the items that filled the buffer are then held
about 1/n too often or too rarely, too little for the long stream to see), and
two runs from one seed must hold the same items (every draw comes from `rng`).
The reference is the package's own `cfcourse.strategies.rehearsal.reservoir_update`.
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
THOROUGH_RUNS = 20  # runs whose buffer is checked for duplicates after every offer (the others: at the end)

# The short stream: a draw off by one holds the `size` items that filled the buffer with probability
# (size +- 1) / (n +- 1) instead of size / n. On 10 items into 5 slots, 2000 runs put that 12 (one too many
# numbers drawn) or 15 (one too few) standard deviations away, where SIGMAS = 5 is allowed.
SHORT_STREAM, SHORT_SIZE, SHORT_RUNS = 10, 5, 2000


class _Wrong(Exception):
    """A rule of reservoir sampling was broken; the message says which, for the learner."""


def _run(fn: Callable, n: int, size: int, rng: random.Random, thorough: bool = True) -> list:
    """Offer items 0..n-1 to an empty list through `fn`, checking its length after every offer and what it holds
    after every offer (`thorough`) or at the end."""
    buffer: list = []
    for seen in range(1, n + 1):
        result = fn(buffer, seen - 1, seen, rng, size)
        want = min(seen, size)
        if len(buffer) != want:
            raise _Wrong(_length_message(buffer, result, seen, size, want))
        if thorough or seen == n:
            _check_held(buffer, seen)
    return buffer


def _check_held(buffer: list, seen: int) -> None:
    """Each slot holds one of the items 0..seen-1 offered so far, each at most once."""
    held = set(buffer)
    if len(held) != len(buffer) or not all(type(item) is int and 0 <= item < seen for item in held):
        raise _Wrong(f"after offering items 0..{seen - 1} the buffer holds {sorted(buffer, key=repr)}: an item twice, "
                     "or one never offered; each slot must hold one of the items offered, each at most once")


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
    for r in range(runs):
        for item in _run(fn, n, size, rng, thorough=r < THOROUGH_RUNS):
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


def off_by_one_problem(counts: list[int], runs: int, size: int) -> str | None:
    """What is wrong with the inclusion counts of a short stream, or None if the items that filled the buffer are
    held as often as the others.

    Their number in the buffer at the end of a run is hypergeometric for a uniform sample (size of the n items,
    `size` of them marked); a draw from one number too many or too few moves its mean by about size/n.
    """
    n = len(counts)
    p = size / n
    sd = (runs * size * p * (1 - p) * (n - size) / (n - 1)) ** 0.5 / (runs * size)  # of their mean frequency
    first = sum(counts[:size]) / (runs * size)
    where = (f"(offering {n} items to a buffer of {size}, {runs} times: each of the {size} items that filled the "
             f"buffer is held in {first:.1%} of the runs; a uniform sample holds each in size/n = {p:.0%})")
    if first - p > SIGMAS * sd:
        return (f"the items that filled the buffer stay too often {where}: it looks like your draw is off by one. "
                "A new item must get in with probability size/seen, so draw one of `seen` whole numbers, 0 to seen-1: "
                "rng.randrange(seen) (rng.randint(0, seen) includes seen itself, one number too many)")
    if p - first > SIGMAS * sd:
        return (f"the items that filled the buffer stay too rarely {where}: it looks like your draw is off by one. "
                "A new item must get in with probability size/seen, so draw one of `seen` whole numbers, 0 to seen-1, "
                "with rng.randrange(seen) (rng.randrange(seen - 1) draws from one number too few)")
    return None


def _not_repeatable(fn: Callable) -> str | None:
    """None if two runs from one seed hold the same items, else what to do."""
    first, again = (_run(fn, STREAM, SIZE, random.Random(1)) for _ in range(2))
    if first == again:
        return None
    return ("two runs from the same seed ended with different buffers: draw every random number from `rng`, the "
            "random.Random your function is given (rng.randrange, not random.randrange or NumPy), so that a seeded "
            "lesson keeps the same samples every time")


def verify_reservoir_update(fn: Callable) -> Verdict:
    """Fill, size bound, uniformity over RUNS runs of a STREAM-item stream into SIZE slots, then a draw off by one
    on a short stream and the same buffer from the same seed."""
    try:
        _run(fn, SIZE, SIZE, random.Random(0))  # filling only: every item kept
        counts = inclusion_counts(fn)
        problem = uniformity_problem(counts, RUNS, SIZE)
        if problem:
            return Verdict(False, problem)
        short = inclusion_counts(fn, SHORT_STREAM, SHORT_SIZE, SHORT_RUNS)
        problem = off_by_one_problem(short, SHORT_RUNS, SHORT_SIZE) or _not_repeatable(fn)
    except _Wrong as e:
        return Verdict(False, str(e))
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


def draw_one_too_many(buffer, item, seen, rng, size):
    """Draws from seen + 1 numbers, 0..seen: a new item gets in with probability size/(seen+1)."""
    if len(buffer) < size:
        buffer.append(item)
    else:
        j = rng.randrange(seen + 1)
        if j < size:
            buffer[j] = item


def randint_includes_its_end(buffer, item, seen, rng, size):
    """rng.randint(0, seen) includes seen: one number too many, as with randrange(seen + 1)."""
    if len(buffer) < size:
        buffer.append(item)
    else:
        j = rng.randint(0, seen)
        if j < size:
            buffer[j] = item


def draw_one_too_few(buffer, item, seen, rng, size):
    """Draws from seen - 1 numbers: a new item gets in with probability size/(seen-1)."""
    if len(buffer) < size:
        buffer.append(item)
    else:
        j = rng.randrange(seen - 1)
        if j < size:
            buffer[j] = item


def less_or_equal(buffer, item, seen, rng, size):
    """j <= size instead of j < size: one slot too many, the one past the end of the buffer."""
    if len(buffer) < size:
        buffer.append(item)
    else:
        j = rng.randrange(seen)
        if j <= size:
            buffer[j] = item


def last_slot_never_replaced(buffer, item, seen, rng, size):
    """j < size - 1: the last slot is never replaced, and new items get in a little too rarely."""
    if len(buffer) < size:
        buffer.append(item)
    else:
        j = rng.randrange(seen)
        if j < size - 1:
            buffer[j] = item


def fills_by_seen_off_by_one(buffer, item, seen, rng, size):
    """Fills while seen < size (not len(buffer) < size): the size-th item replaces a held one instead of filling."""
    if seen < size:
        buffer.append(item)
    else:
        j = rng.randrange(seen)
        if j < size:
            buffer[j] = item


def fills_one_too_many(buffer, item, seen, rng, size):
    """Appends while len(buffer) <= size: the buffer ends up one item over its size."""
    if len(buffer) <= size:
        buffer.append(item)
    else:
        j = rng.randrange(seen)
        if j < size:
            buffer[j] = item


def uses_the_module_random(buffer, item, seen, rng, size):
    """Right, but draws from the module `random` instead of `rng`: a seeded lesson is not repeatable."""
    if len(buffer) < size:
        buffer.append(item)
    else:
        j = random.randrange(seen)
        if j < size:
            buffer[j] = item


WRONG_ANSWERS = [always_replace_a_random_slot, keep_the_first_n, no_size_bound, keep_with_probability_one_over_seen,
                 always_replace_the_last_slot, replace_the_oldest, returns_a_new_list, draw_one_too_many,
                 randint_includes_its_end, draw_one_too_few, less_or_equal, last_slot_never_replaced,
                 fills_by_seen_off_by_one, fills_one_too_many, uses_the_module_random]

check.register(Exercise(
    name="reservoir_update",
    reference=reservoir_update,
    hint="while len(buffer) < size, append the item; after that draw a random whole number from 0 to seen-1 "
         "with rng and, when it is below size, put the item in that slot (it then replaces a random held item, and "
         "gets in with probability size/seen)",
    verify_fn=verify_reservoir_update,
    wrong_answers=WRONG_ANSWERS,
))
