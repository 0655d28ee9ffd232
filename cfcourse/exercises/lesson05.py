"""Exercises of lesson 05: reservoir sampling, the replay batch and A-GEM's step.

Reservoir sampling is checked by what it must guarantee rather than by one answer.

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
    hint="until the buffer is full every item gets in; after that the seen-th item must get in with probability "
         "size/seen, and when it does it takes the place of a held item chosen at random (all draws from rng)",
    verify_fn=verify_reservoir_update,
    wrong_answers=WRONG_ANSWERS,
))


# --- exercise 2: the replay batch -------------------------------------------------------------------

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ..models import MLP  # noqa: E402
from ..strategies.rehearsal import agem_correct, replay_batch  # noqa: E402
from . import Comparison, named  # noqa: E402


def _replay_cases() -> list[tuple[str, tuple]]:
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(4, 784, generator=gen)  # the new batch: floats in [0, 1]
    y = torch.tensor([7, 3, 3, 1])
    x_mem = torch.randint(0, 256, (3, 784), generator=gen, dtype=torch.uint8)  # remembered digits, as stored
    y_mem, ids_mem = torch.tensor([0, 9, 4]), torch.tensor([0, 1, 0])
    return [("a batch of 4 new digits of task 3 and 3 remembered ones of tasks 1 and 2",
             (x, y, 2, x_mem, y_mem, ids_mem)),
            ("one new digit of task 2 and 2 remembered ones of task 1", (x[:1], y[:1], 1, x_mem[:2],
                                                                         y_mem[:2], torch.zeros(2, dtype=torch.long)))]


def _same_batch(got, want) -> bool:
    """Three tensors equal to the reference's, new samples first or remembered ones first."""
    if not isinstance(got, tuple) or len(got) != 3 or not all(isinstance(t, torch.Tensor) for t in got):
        return False

    def swapped(batch, n_new):
        return tuple(torch.cat([t[n_new:], t[:n_new]]) for t in batch)
    n_new = len(want[1]) - len(_REPLAYED[0]) if _REPLAYED else 0
    options = [want] + ([swapped(want, n_new)] if n_new else [])
    return any(all(g.shape == w.shape and torch.allclose(g.float(), w.float(), atol=1e-6) for g, w in zip(got, o))
               for o in options)


_REPLAYED: list = []  # the remembered labels of the case being compared (to know where the new samples end)


def _replay_reference(x, y, task_id, x_mem, y_mem, ids_mem):
    _REPLAYED[:] = [y_mem]
    return replay_batch(x, y, task_id, x_mem, y_mem, ids_mem)


def _floats(x_mem):
    return x_mem.float() / 255


REPLAY_MISTAKES = [
    (named("memory_pixels_not_scaled",
            lambda x, y, t, xm, ym, im: (torch.cat([x, xm.float()]), torch.cat([y, ym]), torch.cat([torch.full_like(y, t), im]))),
     "the remembered digits are still pixel values 0-255, while the new ones are floats in [0, 1]; scale them the "
     "same way (to_float) before joining"),
    (named("current_task_id_for_memory",
            lambda x, y, t, xm, ym, im: (torch.cat([x, _floats(xm)]), torch.cat([y, ym]),
                                         torch.full((len(y) + len(ym),), t))),
     "every sample got the current task's id; a remembered sample keeps the id of the task it came from (a "
     "multi-head model uses it to pick the head)"),
    (named("current_labels_for_memory",
            lambda x, y, t, xm, ym, im: (torch.cat([x, _floats(xm)]), torch.cat([y, y[torch.arange(len(ym)) % len(y)]]),
                                         torch.cat([torch.full_like(y, t), im]))),
     "the remembered digits were given labels from the new batch; each keeps its own remembered label"),
    (named("memory_only",
            lambda x, y, t, xm, ym, im: (_floats(xm), ym, im)),
     "only the remembered samples came back; replay adds them to the new batch, which must stay"),
    (named("new_batch_only",
            lambda x, y, t, xm, ym, im: (x, y, torch.full_like(y, t))),
     "the remembered samples are missing; append them to the new batch"),
    (named("labels_and_task_ids_swapped",
            lambda x, y, t, xm, ym, im: (torch.cat([x, _floats(xm)]), torch.cat([y, im]),
                                         torch.cat([torch.full_like(y, t), ym]))),
     "the remembered labels and task ids are swapped"),
    (named("task_ids_counted_from_one",
            lambda x, y, t, xm, ym, im: (torch.cat([x, _floats(xm)]), torch.cat([y, ym]),
                                         torch.cat([torch.full_like(y, t), im + 1]))),
     "the remembered task ids are one too high; keep them as stored (the first task is 0)"),
    (named("memory_labels_in_the_wrong_order",
            lambda x, y, t, xm, ym, im: (torch.cat([x, _floats(xm)]), torch.cat([y, ym.flip(0)]),
                                         torch.cat([torch.full_like(y, t), im.flip(0)]))),
     "the remembered labels no longer sit next to their own digits; keep x_mem, y_mem and ids_mem in one order"),
]

check.register(Exercise(
    name="replay_batch",
    reference=_replay_reference,
    hint="the new batch stays as it is; the remembered samples join it, each with its own label and the id of "
         "its own task, and in the same form as the new inputs",
    verify_fn=Comparison("replay_batch", _replay_reference, _replay_cases, REPLAY_MISTAKES, same=_same_batch),
    wrong_answers=[mistake for mistake, _ in REPLAY_MISTAKES],
))


# --- exercise 3: A-GEM's step -----------------------------------------------------------------------

def agem_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
              x_mem: torch.Tensor, y_mem: torch.Tensor) -> None:
    """One A-GEM training step on a single-head model: the new batch's gradient, projected when it points
    against the memory's gradient (the package's `agem_correct`, which the A-GEM strategy calls), then a step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()  # p.grad: the new batch's gradient
    g_ref = torch.autograd.grad(F.cross_entropy(model(x_mem), y_mem), params)  # leaves p.grad alone
    agem_correct(params, torch.cat([g.reshape(-1) for g in g_ref]))
    optimizer.step()


def _agem_cases() -> list[tuple[str, tuple]]:
    gen = torch.Generator().manual_seed(7)
    x, x_mem = torch.rand(16, 20, generator=gen), torch.rand(8, 20, generator=gen)
    ones, zeros = torch.ones(16, dtype=torch.long), torch.zeros(8, dtype=torch.long)
    return [("a new batch all of class 1 and a memory all of class 0 (their gradients disagree: the step must be "
             "projected)", (x, ones, x_mem, zeros)),
            ("a memory of class 1 too (the gradients agree: the step is taken as it is)", (x, ones, x_mem, ones[:8]))]


def _run_step(fn: Callable, x, y, x_mem, y_mem) -> torch.Tensor:
    """The weights (flat) of a small fixed network after fn's step with SGD, lr 0.5."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = MLP(20, (8,), 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    fn(model, optimizer, x.clone(), y.clone(), x_mem.clone(), y_mem.clone())
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _step_mistake(direction: Callable) -> Callable:
    """A wrong step: the weights move along direction(g, g_ref) instead of A-GEM's projected gradient."""
    def step(model, optimizer, x, y, x_mem, y_mem):
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer.zero_grad(set_to_none=True)
        g = torch.autograd.grad(F.cross_entropy(model(x), y), params)
        g_ref = torch.autograd.grad(F.cross_entropy(model(x_mem), y_mem), params)
        flat, flat_ref = torch.cat([t.reshape(-1) for t in g]), torch.cat([t.reshape(-1) for t in g_ref])
        new, offset = direction(flat, flat_ref), 0
        for p in params:
            p.grad = new[offset: offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        optimizer.step()
    return step


def _proj(g, r, scale=lambda r: r.dot(r)):
    return g - g.dot(r) / scale(r) * r


AGEM_MISTAKES = [
    (named("never_projects", _step_mistake(lambda g, r: g)),
     "the weights moved by the plain gradient of the new batch: when it points against the memory's gradient "
     "(g · g_ref < 0), remove its component along g_ref before the step"),
    (named("always_projects", _step_mistake(_proj)),
     "the step was projected although g · g_ref >= 0; A-GEM changes the gradient only when it would raise the "
     "memory's loss"),
    (named("projected_the_memory_gradient",
            _step_mistake(lambda g, r: g if g.dot(r) >= 0 else r - g.dot(r) / g.dot(g) * g)),
     "it looks like the memory's gradient was projected on the new one; keep the new gradient and remove from it "
     "its component along g_ref"),
    (named("added_the_memory_gradient", _step_mistake(lambda g, r: g + r)),
     "the step followed the new and the memory gradient added together (that is replay's step, not A-GEM's); "
     "A-GEM uses the memory only to correct the new gradient's direction"),
    (named("divided_by_the_norm_not_its_square",
            _step_mistake(lambda g, r: g if g.dot(r) >= 0 else _proj(g, r, lambda r: r.norm()))),
     "the projection divides by |g_ref|^2 (g_ref · g_ref), not by |g_ref|"),
    (named("projection_sign_flipped",
            _step_mistake(lambda g, r: g if g.dot(r) >= 0 else g + g.dot(r) / r.dot(r) * r)),
     "the component along g_ref was added instead of removed: g - (g · g_ref) / (g_ref · g_ref) g_ref"),
    (named("kept_only_the_component_along_the_memory_gradient",
            _step_mistake(lambda g, r: g if g.dot(r) >= 0 else g.dot(r) / r.dot(r) * r)),
     "it looks like the step kept only the component of g along g_ref; A-GEM removes that component and keeps "
     "the rest: g - (g · g_ref) / (g_ref · g_ref) g_ref"),
]

check.register(Exercise(
    name="agem_step",
    reference=agem_step,
    hint="compare the direction of the new batch's gradient with the memory's; only when they disagree, take out "
         "of the new gradient the part that points against the memory's, then let the optimiser step",
    verify_fn=Comparison(
        "agem_step", agem_step, _agem_cases, AGEM_MISTAKES, tol=1e-5,
        wrap=lambda fn: lambda *a: _run_step(fn, *a),
        shown=lambda what, got, want: f"on {what}, the weights after your step differ from A-GEM's by up to "
                                      f"{float((got - want).abs().max()):.3g}"),
    wrong_answers=[mistake for mistake, _ in AGEM_MISTAKES],
))
