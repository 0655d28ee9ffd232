"""Exercise of lesson 08: perplexity from a language model's logits.

Checked against `cfcourse.lm.measures.perplexity_from_logits` on hand-made
distributions whose perplexity is known (a uniform guess over V tokens has
perplexity V), with padding targets (-100) that must not be scored; a wrong
answer is matched against the common mistakes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..lm.measures import IGNORE, perplexity_from_logits
from . import Comparison, Exercise, check, close, named

TOL = 1e-3  # relative: perplexities of a few tokens, float32


def _cases() -> list[tuple[str, tuple[torch.Tensor, torch.Tensor]]]:
    """(what, (logits (batch, positions, vocab), targets (batch, positions))), with answers known or derived."""
    gen = torch.Generator().manual_seed(8)
    sure = torch.full((1, 3, 5), -30.0)
    sure[0, torch.arange(3), torch.tensor([1, 4, 2])] = 30.0
    half = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]]))
    padded_t = torch.randint(0, 50, (2, 6), generator=gen)
    padded_t[1, 3:] = IGNORE
    return [
        ("a uniform guess over 7 tokens: perplexity 7", (torch.zeros(2, 4, 7), torch.randint(0, 7, (2, 4)))),
        ("always sure and right: perplexity 1", (sure, torch.tensor([[1, 4, 2]]))),
        ("p = 1/2 then 1/4 for the targets: exp(-(ln 1/2 + ln 1/4)/2) = 2·√2 = 2.828",
         (half, torch.tensor([[0, 1]]))),
        ("2 texts x 5 positions, vocabulary 50", (torch.randn(2, 5, 50, generator=gen) * 2,
                                                 torch.randint(0, 50, (2, 5), generator=gen))),
        ("padding (-100) in the second text is not scored", (torch.randn(2, 6, 50, generator=gen) * 2, padded_t)),
    ]


def _flat(logits, targets):
    return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)


def _nll(logits, targets, **kw):
    lg, t = _flat(logits, targets)
    return F.cross_entropy(lg, t, ignore_index=IGNORE, **kw)


def _softmax_over_positions(logits, targets):
    log_p = F.log_softmax(logits, dim=1)  # (batch, positions, vocab), normalised over the wrong axis
    lg, t = _flat(log_p, targets)
    return math.exp(F.nll_loss(lg, t, ignore_index=IGNORE).item())


def _mean_of_text_perplexities(logits, targets):
    return sum(math.exp(_nll(logits[i:i + 1], targets[i:i + 1]).item()) for i in range(len(logits))) / len(logits)


def _padding_in_the_denominator(logits, targets):
    return math.exp(_nll(logits, targets, reduction="sum").item() / targets.numel())


MISTAKES = [
    (named("sum_not_mean", lambda lg, t: math.exp(_nll(lg, t, reduction="sum").item())),
     "it looks like exp of the summed loss: perplexity is exp of the MEAN negative log-likelihood per token"),
    (named("no_exp", lambda lg, t: _nll(lg, t).item()),
     "it looks like the mean negative log-likelihood itself (the loss); perplexity is its exponential"),
    (named("base_two", lambda lg, t: 2 ** _nll(lg, t).item()),
     "it looks like 2 to the power of a loss in nats; cross_entropy uses the natural log, so take exp()"),
    (named("mean_of_token_perplexities",
            lambda lg, t: _nll(lg, t, reduction="none")[_flat(lg, t)[1] != IGNORE].exp().mean().item()),
     "it looks like the mean of each token's exp(loss); perplexity is exp of the mean loss (a geometric mean "
     "of 1/p), so one very surprising token does not dominate"),
    (named("padding_scored",
            lambda lg, t: math.exp(F.cross_entropy(_flat(lg, t)[0], _flat(lg, t)[1].clamp(min=0)).item())),
     "it looks like padding positions (target -100) were scored; pass ignore_index=-100 to cross_entropy, or "
     "drop those positions before averaging"),
    (named("no_softmax", lambda lg, t: math.exp(-lg.reshape(-1, lg.shape[-1])[
        torch.arange(t.numel()), t.reshape(-1).clamp(min=0)][t.reshape(-1) != IGNORE].mean().item())),
     "it looks like the raw logits were used as log-probabilities; take log_softmax over the vocabulary first "
     "(F.cross_entropy does that for you)"),
    (named("targets_shifted_again", lambda lg, t: math.exp(_nll(lg[:, :-1], t[:, 1:]).item())),
     "it looks like the targets were shifted by one more position; they already hold the next token of each "
     "position (the caller shifted them), so score logits[:, i] against targets[:, i]"),
    (named("softmax_over_positions", _softmax_over_positions),
     "it looks like the softmax ran over the positions (dim=1); the probabilities at each position sum to 1 over "
     "the vocabulary, the last dimension: flatten to (positions, vocab) before F.cross_entropy"),
    (named("mean_of_text_perplexities", _mean_of_text_perplexities),
     "it looks like the mean of each text's perplexity; perplexity is exp of the mean loss over every scored token "
     "of every text"),
    (named("padding_in_the_denominator", _padding_in_the_denominator),
     "it looks like padding positions were left out of the sum but counted in the mean; divide by the number of "
     "scored positions (targets != -100) only, as ignore_index=-100 does"),
]


def _same_perplexity(got, want) -> bool:
    """Equal within a relative TOL."""
    return close(float(got) / float(want), 1.0, TOL)


def _one_number(what: str, got, want) -> str | None:
    """Asks for one number when the answer is not one."""
    try:
        float(got)
    except (TypeError, ValueError, RuntimeError):
        return f"case '{what}': return one number (a float), got {repr(got)[:80]}"
    return None


def _shown(what: str, got, want) -> str:
    return f"case '{what}': your function returned {float(got):.4f}, expected {want:.4f}"


check.register(Exercise(
    name="perplexity_from_logits",
    reference=perplexity_from_logits,
    hint="flatten to (positions, vocab) and (positions,); F.cross_entropy(logits, targets, ignore_index=-100) is "
         "the mean negative log-likelihood of the targets; perplexity is math.exp of it",
    verify_fn=Comparison("perplexity_from_logits", perplexity_from_logits, _cases, MISTAKES,
                         same=_same_perplexity, form=_one_number, shown=_shown),
    wrong_answers=[mistake for mistake, _ in MISTAKES],
))
