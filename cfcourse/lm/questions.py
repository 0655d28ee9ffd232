"""Multiple-choice questions scored by a language model: the log-likelihood of the right answer; see lesson 08.

Each question is asked as ``Question: ...\\nAnswer:`` and each of its four options is scored as the
continuation `` <option>``: the sum of the log-probabilities of the option's tokens. Two numbers come out:

- the log-likelihood of the right option (nats; higher is better). It moves with what the model knows about
  the subject and with how familiar the subject's words are, so it moves even when the choice does not;
- the right option's share: its log-probability among the four options only (log softmax of their
  log-likelihoods). Whatever makes every option likelier (the question-and-answer format, the subject's
  words) cancels out, so this share moves only when the model prefers the right answer more or less;
- multiple-choice accuracy: the option with the highest log-likelihood per token is the model's choice
  (per token, so that long options are not penalised for their length). A 135M-parameter model is close to
  chance (25%) on MMLU's medical subjects, so accuracy barely moves; the log-likelihood is the measure.

The question is run once and its cached keys and values are shared by the four options.
"""
from __future__ import annotations

import hashlib
import inspect
import math
import statistics

import torch
from tqdm.auto import tqdm

from .corpora import Question


def pick(questions: list[Question], n: int | None) -> list[Question]:
    """A fixed sample of `n` questions (all if None): ordered by a hash of their text, the same everywhere."""
    ranked = sorted(questions, key=lambda q: hashlib.sha256(q.question.encode("utf-8")).hexdigest())
    return ranked if n is None else ranked[:n]


@torch.no_grad()
def option_logprobs(model, tokenizer, q: Question) -> tuple[list[float], list[int]]:
    """(summed log-probability, number of tokens) of each option after the question."""
    device = next(model.parameters()).device
    prompt = tokenizer(f"Question: {q.question}\nAnswer:", add_special_tokens=False)["input_ids"]
    options = [tokenizer(" " + o, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
               for o in q.options]
    out = model(input_ids=torch.tensor([prompt], device=device), use_cache=True)
    first = out.logits[0, -1].float().log_softmax(-1)  # (vocab,): predicts each option's first token
    width = max(len(o) for o in options)
    ids = torch.tensor([o + [tokenizer.eos_token_id] * (width - len(o)) for o in options], device=device)
    mask = torch.ones(len(options), len(prompt) + width, dtype=torch.long, device=device)
    cache = out["cache"] if "cache" in out else out["past_key_values"]  # transformers 5.2x renamed it
    cache.batch_repeat_interleave(len(options))  # the question's keys and values, once per option
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    logp = model(input_ids=ids, attention_mask=mask, **{name: cache}).logits.float().log_softmax(-1)
    sums = []
    for k, o in enumerate(options):  # logp[k, t] predicts token t + 1 of option k
        nxt = torch.tensor(o[1:], dtype=torch.long, device=device)
        rest = logp[k, torch.arange(len(o) - 1, device=device), nxt].sum()
        sums.append(float(first[o[0]] + rest))
    return sums, [len(o) for o in options]


def score_questions(model, tokenizer, questions: list[Question], desc: str = "questions") -> list[dict]:
    """Per question: the right option's log-likelihood, and whether the model's choice is right."""
    was_training = model.training
    model.eval()
    scores = []
    try:
        for q in tqdm(questions, desc=desc, leave=False):
            sums, lengths = option_logprobs(model, tokenizer, q)
            choice = max(range(len(sums)), key=lambda k: sums[k] / lengths[k])
            share = sums[q.answer] - math.log(sum(math.exp(x - max(sums)) for x in sums)) - max(sums)
            scores.append({"subject": q.subject, "logprob": sums[q.answer], "share": share,
                           "correct": choice == q.answer})
    finally:
        model.train(was_training)
    return scores


def summarise(scores: list[dict]) -> dict:
    """Mean log-likelihood of the right answers (nats) and accuracy over the scored questions."""
    if not scores:
        raise ValueError("no questions were scored")
    return {"n": len(scores), "mean_logprob": statistics.fmean(s["logprob"] for s in scores),
            "mean_share": statistics.fmean(s["share"] for s in scores),
            "accuracy": sum(s["correct"] for s in scores) / len(scores)}


def paired_change(before: list[dict], after: list[dict], key: str = "logprob", resamples: int = 2000,
                  seed: int = 0) -> dict:
    """Mean change of a per-question score (`key`: "logprob" or "share"), with a 95% bootstrap interval."""
    import numpy as np

    if len(before) != len(after) or not before:
        raise ValueError(f"need the same questions before and after, got {len(before)} and {len(after)}")
    d = np.array([a[key] - b[key] for b, a in zip(before, after)])
    idx = np.random.default_rng(seed).integers(0, len(d), (resamples, len(d)))
    means = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return {"mean": float(d.mean()), "low": float(lo), "high": float(hi), "n": len(d),
            "better": int((d > 0).sum()), "probability_ratio": math.exp(float(d.mean()))}
