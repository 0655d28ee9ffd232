"""Exercise of lesson 10: one number for what a fine-tuning job forgot.

The old domains' rise: the geometric mean, over every domain except the new
one, of the ratio of tuned to base perplexity, minus one. Checked against
`cfcourse.lm.cures.tradeoff_point` (its "rise"), which the trade-off plot of
lesson 09 uses, on hand-made perplexities.
"""
from __future__ import annotations

import math
import statistics

from ..lm.cures import tradeoff_point
from . import Comparison, Exercise, check, close, named

TOL = 1e-6


def old_domain_rise(base: dict[str, float], tuned: dict[str, float], new_domain: str) -> float:
    """The reference: the geometric mean of tuned/base perplexity over the old domains, minus one."""
    return tradeoff_point(base, tuned, new_domain)["rise"]


def _cases() -> list[tuple[str, tuple[dict, dict, str]]]:
    """(what, (base, tuned, new_domain)): hand-made perplexities with answers known or derived."""
    return [
        ("nothing changed: 0", ({"legal": 30.0, "code": 12.0}, {"legal": 30.0, "code": 12.0}, "legal")),
        ("code doubled, docs halved: geometric mean of 2 and 1/2 is 1, so 0",
         ({"legal": 30.0, "code": 10.0, "docs": 20.0}, {"legal": 20.0, "code": 20.0, "docs": 10.0}, "legal")),
        ("old domains x1.2 and x1.5: sqrt(1.8) - 1 = 0.3416",
         ({"legal": 30.0, "code": 10.0, "docs": 20.0}, {"legal": 21.0, "code": 12.0, "docs": 30.0}, "legal")),
        ("four old domains, the new one is code",
         ({"code": 12.2, "docs": 26.0, "legal": 29.0, "literature": 62.9, "medical": 5.1},
          {"code": 9.0, "docs": 41.4, "legal": 35.2, "literature": 101.9, "medical": 7.3}, "code")),
        ("the same, with tuned listing the domains in another order",
         ({"code": 12.2, "docs": 26.0, "legal": 29.0, "literature": 62.9, "medical": 5.1},
          {"medical": 7.3, "literature": 101.9, "legal": 35.2, "docs": 41.4, "code": 9.0}, "code")),
    ]


def _ratios(base, tuned, new, keep_new=False):
    return [tuned[d] / base[d] for d in base if keep_new or d != new]


def _paired_by_position(base, tuned, new):
    logs = [math.log(t / b) for d, b, t in zip(base, base.values(), tuned.values()) if d != new]
    return math.exp(statistics.fmean(logs)) - 1


MISTAKES = [
    (named("arithmetic_mean", lambda b, t, n: statistics.fmean(_ratios(b, t, n)) - 1),
     "it looks like the arithmetic mean of the ratios; use the geometric mean (exp of the mean log-ratio), so "
     "that doubling one domain and halving another cancel out"),
    (named("new_domain_included", lambda b, t, n: math.exp(statistics.fmean(map(math.log, _ratios(b, t, n, True))))
            - 1),
     "it looks like the new domain is included; leave it out: its perplexity is meant to fall"),
    (named("ratio_of_means", lambda b, t, n: statistics.fmean(t[d] for d in b if d != n)
            / statistics.fmean(b[d] for d in b if d != n) - 1),
     "it looks like the ratio of the mean perplexities; a domain with a high perplexity (literature) then "
     "outweighs the others. Take each domain's own ratio first"),
    (named("no_minus_one", lambda b, t, n: math.exp(statistics.fmean(map(math.log, _ratios(b, t, n))))),
     "it looks like the ratio itself; subtract 1, so that no change gives 0 and +0.3 means 30% higher"),
    (named("base_over_tuned", lambda b, t, n: math.exp(statistics.fmean(math.log(b[d] / t[d]) for d in b
                                                                          if d != n)) - 1),
     "it looks like base over tuned; the rise is tuned / base: a higher perplexity after fine-tuning is a "
     "positive rise"),
    (named("no_exp", lambda b, t, n: statistics.fmean(map(math.log, _ratios(b, t, n)))),
     "it looks like the mean log-ratio itself; take math.exp of it, then subtract 1"),
    (named("product_not_mean", lambda b, t, n: math.prod(_ratios(b, t, n)) - 1),
     "it looks like the product of the ratios; the geometric mean is its n-th root, the exp of the mean "
     "log-ratio"),
    (named("new_domain_only", lambda b, t, n: t[n] / b[n] - 1),
     "it looks like the change of the new domain itself; the rise is over every OTHER domain, the old ones"),
    (named("differences_not_ratios", lambda b, t, n: statistics.fmean(t[d] - b[d] for d in b if d != n)),
     "it looks like differences of perplexities; take each domain's ratio, tuned / base, so that a domain with a "
     "high perplexity does not outweigh the others"),
    (named("paired_by_position", _paired_by_position),
     "it looks like base and tuned were paired by position (zip of their .values()); the two dicts may list the "
     "domains in different orders, so look each one up by name: tuned[d] / base[d]"),
]


def _one_number(what: str, got, want) -> str | None:
    """Asks for one number when the answer is not one."""
    try:
        float(got)
    except (TypeError, ValueError):
        return f"case '{what}': return one number, got {repr(got)[:80]}"
    return None


def _shown(what: str, got, want) -> str:
    return f"case '{what}': your function returned {float(got):.4f}, expected {want:.4f}"


check.register(Exercise(
    name="old_domain_rise",
    reference=old_domain_rise,
    hint="for every domain d except new_domain, math.log(tuned[d] / base[d]); take the mean of those logs, "
         "math.exp of it, and subtract 1",
    verify_fn=Comparison("old_domain_rise", old_domain_rise, _cases, MISTAKES, tol=TOL,
                         same=lambda got, want: close(float(got), want, TOL), form=_one_number, shown=_shown),
    wrong_answers=[mistake for mistake, _ in MISTAKES],
))
