"""Not a test: how often lesson 05's reservoir check would refuse a correct answer, and how surely it refuses a
draw off by one, measured over many seeds (the check itself uses seed 0 only).

    python tests/reservoir_check_power.py [short-stream seeds, default 1000] [long-stream seeds, default 200]

(from the repository root, with this checkout's cfcourse importable, e.g. PYTHONPATH=.)

Prints, for each answer, the z-score range of the statistic the check compares with SIGMAS, and the expected z
and power of the short stream against a draw from one number too many or too few.
"""
from __future__ import annotations

import math
import sys
from statistics import NormalDist

from cfcourse.exercises import lesson05 as L
from cfcourse.strategies.rehearsal import reservoir_update


def coin_then_slot(buffer, item, seen, rng, size):
    """Correct, with other draws than the reference: a coin for size/seen, then a slot."""
    if len(buffer) < size:
        buffer.append(item)
    elif rng.random() < size / seen:
        buffer[rng.randrange(size)] = item


def short_z(counts: list[int], runs: int, size: int) -> float:
    """How many sd the items that filled the buffer are held above a uniform sample's share."""
    n, p = len(counts), size / len(counts)
    sd = (runs * size * p * (1 - p) * (n - size) / (n - 1)) ** 0.5 / (runs * size)
    return (sum(counts[:size]) / (runs * size) - p) / sd


def long_z(counts: list[int], runs: int, size: int) -> tuple[float, float]:
    """The largest |z| of the first and last tenth, and the chi-square's z, as uniformity_problem computes them."""
    n, p = len(counts), size / len(counts)
    var, tenth = runs * p * (1 - p), len(counts) // 10
    sd = (var / tenth) ** 0.5 / runs
    first, last = sum(counts[:tenth]) / tenth / runs, sum(counts[-tenth:]) / tenth / runs
    chi2 = sum((c - runs * p) ** 2 for c in counts) / var
    return max(abs(first - p), abs(last - p)) / sd, (chi2 - (n - 1)) / (2 * (n - 1)) ** 0.5


def expected_z(n: int, size: int, runs: int, extra: int) -> float:
    """The short stream's expected z for a draw from seen + extra numbers (extra = +1 or -1)."""
    p = size / n
    sd = (size * p * (1 - p) * (n - size) / (n - 1) / runs) ** 0.5 / size
    return ((size + extra) / (n + extra) - p) / sd


def main(short_seeds: int, long_seeds: int) -> None:
    n, size, runs = L.SHORT_STREAM, L.SHORT_SIZE, L.SHORT_RUNS
    p, tenth = L.SIZE / L.STREAM, L.STREAM // 10  # the long stream's first tenth: the items that filled the buffer
    z = ((L.SIZE + 1) / (L.STREAM + 1) - p) / (p * (1 - p) / (L.RUNS * tenth)) ** 0.5
    print(f"long stream alone, a draw from seen+1 numbers: expected z {z:+.1f}, "
          f"power at {L.SIGMAS} sd {NormalDist().cdf(z - L.SIGMAS):.2%}")
    for extra in (1, -1):
        z = expected_z(n, size, runs, extra)
        print(f"short stream ({n} items, {size} slots, {runs} runs), a draw from seen{extra:+d} numbers: expected "
              f"z {z:+.1f}, missed with probability {0.5 * math.erfc((abs(z) - L.SIGMAS) / 2 ** 0.5):.0e}")
    for fn in (reservoir_update, coin_then_slot, L.draw_one_too_many, L.draw_one_too_few):
        zs = [short_z(L.inclusion_counts(fn, n, size, runs, seed=s), runs, size) for s in range(short_seeds)]
        print(f"short stream, {fn.__name__}: z from {min(zs):+.2f} to {max(zs):+.2f} over {short_seeds} seeds "
              f"(seed 0: {zs[0]:+.2f}); beyond {L.SIGMAS} sd in {sum(abs(z) > L.SIGMAS for z in zs)}")
    for fn in (reservoir_update, coin_then_slot):
        tenths, chis = zip(*(long_z(L.inclusion_counts(fn, seed=s), L.RUNS, L.SIZE) for s in range(long_seeds)))
        print(f"long stream, {fn.__name__}: largest tenth |z| {max(tenths):.2f}, largest chi-square z "
              f"{max(chis):.2f} over {long_seeds} seeds (refused beyond {L.SIGMAS})")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]), *(1000, 200)[len(sys.argv[1:3]):])
