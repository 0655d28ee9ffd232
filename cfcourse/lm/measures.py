"""Perplexity in bounded memory, the perplexity matrix, probes and side-by-side generations; see lesson 08.

Perplexity is exp(mean negative log-likelihood of each next token). With a
49,152-token vocabulary the logits of one batch of 4 x 128 positions already
take 100 MB in float32, so the loss is computed from the hidden states a chunk
of positions at a time: the output head runs on `chunk_size` positions, the
loss of that chunk is added up, and its logits are dropped (when training,
recomputed in the backward pass) before the next chunk.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

IGNORE = -100  # target id that is not scored (padding)


# --- perplexity --------------------------------------------------------------------------------------------------

def perplexity_from_logits(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """exp(mean over positions of -log softmax(logits)[target]); logits (..., vocab), targets (...)."""
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE)
    return math.exp(nll.item())


def _chunk_nll(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()  # (batch, chunk, vocab): the only place logits exist
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")


def nll_from_hidden(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor,
                    chunk_size: int = 128) -> tuple[torch.Tensor, int]:
    """(summed NLL, number of scored tokens) of `targets` (batch, T) from `hidden` (batch, T, d), chunk by chunk."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    total = hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, hidden.shape[1], chunk_size):
        h, t = hidden[:, s:s + chunk_size], targets[:, s:s + chunk_size]
        if torch.is_grad_enabled() and h.requires_grad:  # keep only h; logits are recomputed in backward
            total = total + checkpoint(_chunk_nll, head, h, t, use_reentrant=False)
        else:
            total = total + _chunk_nll(head, h, t)
    return total, int((targets != IGNORE).sum())


def lm_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
            chunk_size: int = 128) -> tuple[torch.Tensor, int]:
    """(summed next-token NLL, tokens scored) of a batch (batch, T), never holding all logits at once."""
    hidden, targets = _hidden_and_targets(model, input_ids, attention_mask)
    return nll_from_hidden(hidden, model.get_output_embeddings(), targets, chunk_size)


def _hidden_and_targets(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
    """The decoder's hidden states at every position but the last (batch, T-1, d) and the tokens they predict."""
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    targets = input_ids[:, 1:].clone()
    if attention_mask is not None:
        targets[attention_mask[:, 1:] == 0] = IGNORE
    return hidden[:, :-1], targets


@torch.no_grad()
def block_nll(model, blocks: torch.Tensor, batch_size: int = 2, chunk_size: int = 128,
              progress: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Summed next-token NLL and tokens scored, per block: perplexity's numbers, kept apart for a bootstrap.

    `blocks` is (n_blocks, block_len); `progress`, if given, is the label of a tqdm progress bar over the blocks.
    Returns two arrays of shape (n_blocks,): NLL in nats (float64) and token counts (int64).
    """
    if blocks.ndim != 2 or blocks.shape[1] < 2:
        raise ValueError(f"blocks must have shape (n_blocks, block_len >= 2), got {tuple(blocks.shape)}")
    was_training = model.training
    model.eval()
    device, head = next(model.parameters()).device, model.get_output_embeddings()
    nll, tokens = np.zeros(blocks.shape[0]), np.zeros(blocks.shape[0], dtype=np.int64)
    bar = tqdm(total=blocks.shape[0], desc=progress, unit="block", leave=False) if progress else None
    for s in range(0, blocks.shape[0], batch_size):
        hidden, targets = _hidden_and_targets(model, blocks[s:s + batch_size].to(device))
        for i in range(hidden.shape[0]):  # one block at a time through the output head: a sum per block
            total, n = nll_from_hidden(hidden[i:i + 1], head, targets[i:i + 1], chunk_size)
            nll[s + i], tokens[s + i] = total.item(), n
        if bar is not None:
            bar.update(hidden.shape[0])
    if bar is not None:
        bar.close()
    model.train(was_training)
    return nll, tokens


def perplexity(model, blocks: torch.Tensor, batch_size: int = 2, chunk_size: int = 128) -> float:
    """Perplexity of `model` on token blocks (n_blocks, block_len), in batches of `batch_size` blocks."""
    nll, tokens = block_nll(model, blocks, batch_size, chunk_size)
    return math.exp(nll.sum() / tokens.sum())


def domain_perplexities(model, domain_blocks: dict[str, torch.Tensor], batch_size: int = 2) -> dict[str, float]:
    """Perplexity on each domain's blocks, as {domain: perplexity}."""
    return {name: perplexity(model, b, batch_size) for name, b in domain_blocks.items()}


# --- the perplexity matrix ---------------------------------------------------------------------------------------

class PerplexityMatrix:
    """P[i][j]: perplexity on domain j after training stage i (stage 0: the pretrained model); see lesson 08.

    The LM twin of cfcourse.metrics.AccuracyMatrix, with the same measures read
    off one matrix. Two differences: lower is better and perplexity has no upper
    bound, so every measure works on log-perplexity (the mean loss per token)
    and a change is a ratio (+0.30 = 30% higher perplexity); and the matrix is
    stages x domains, not square, because a language model is measured on
    domains it was never trained on (the old knowledge it should keep). A stage
    named after a domain trained that domain.
    """

    def __init__(self, domains: list[str], stages: list[str]):
        if not domains or not stages:
            raise ValueError("need at least one domain and one stage (stage 0 is the model before training)")
        if len(set(domains)) != len(domains):
            raise ValueError(f"domain names must be unique, got {domains}")
        self.domains, self.stages = list(domains), list(stages)
        self.P = np.full((len(stages), len(domains)), np.nan)

    def _row(self, stage: int | str) -> int:
        i = self.stages.index(stage) if isinstance(stage, str) else stage
        if not 0 <= i < len(self.stages):
            raise IndexError(f"stage must be in 0..{len(self.stages) - 1} or a stage name, got {stage!r}")
        return i

    def record_row(self, stage: int | str, ppls) -> None:
        """Record the perplexity of every domain after `stage`: a list in domain order or a {domain: ppl} dict."""
        if isinstance(ppls, dict):
            missing = set(self.domains) - set(ppls)
            if missing:
                raise ValueError(f"missing perplexities for {sorted(missing)}")
            ppls = [ppls[d] for d in self.domains]
        if len(ppls) != len(self.domains):
            raise ValueError(f"expected {len(self.domains)} perplexities, got {len(ppls)}")
        values = np.asarray(ppls, dtype=float)
        if not np.all(np.isfinite(values) & (values >= 1.0)):
            raise ValueError(f"perplexities must be finite and at least 1, got {values.tolist()}")
        self.P[self._row(stage)] = values

    @property
    def stage(self) -> int:
        """Index of the last fully recorded stage; -1 before any."""
        done = [i for i in range(len(self.stages)) if not np.isnan(self.P[i]).any()]
        return max(done) if done else -1

    def _last(self) -> int:
        if self.stage < 0:
            raise ValueError("no complete row yet: record the pretrained model's perplexities first")
        return self.stage

    def trained_at(self, domain: str) -> int | None:
        """The stage that trained `domain`, or None if no stage did (stage 0 trains nothing)."""
        return next((i for i in range(1, len(self.stages)) if self.stages[i] == domain), None)

    def change(self, stage: int | str | None = None) -> dict[str, float]:
        """Relative change of each domain's perplexity from the pretrained model to `stage` (default: last)."""
        k = self._last() if stage is None else self._row(stage)
        return {d: float(self.P[k, j] / self.P[0, j] - 1) for j, d in enumerate(self.domains)}

    @property
    def avg_log_ppl(self) -> float:
        """Mean log-perplexity over all domains at the last stage (exp of it is their geometric mean)."""
        return float(np.log(self.P[self._last()]).mean())

    @property
    def forgetting(self) -> dict[str, float]:
        """Per domain: perplexity now over the best (lowest) it had at any earlier stage, minus 1."""
        k = self._last()
        if k == 0:
            return {d: math.nan for d in self.domains}
        return {d: float(self.P[k, j] / np.nanmin(self.P[:k, j]) - 1) for j, d in enumerate(self.domains)}

    @property
    def bwt(self) -> float:
        """Backward transfer: mean of log P[t][j] - log P[k][j] over domains j trained at t < k (negative: forgot)."""
        k = self._last()
        pairs = [(self.trained_at(d), j) for j, d in enumerate(self.domains)]
        diffs = [math.log(self.P[t, j] / self.P[k, j]) for t, j in pairs if t is not None and t < k]
        return float(np.mean(diffs)) if diffs else math.nan

    @property
    def fwt(self) -> float:
        """Forward transfer: mean of log P[0][j] - log P[t-1][j] over trained domains: did earlier stages help?"""
        k = self._last()
        pairs = [(self.trained_at(d), j) for j, d in enumerate(self.domains)]
        diffs = [math.log(self.P[0, j] / self.P[t - 1, j]) for t, j in pairs if t is not None and 1 < t <= k]
        return float(np.mean(diffs)) if diffs else math.nan

    def to_dict(self) -> dict:
        """Every number, JSON-ready (NaN becomes None)."""
        def clean(v):
            if isinstance(v, dict):
                return {a: clean(b) for a, b in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return None if isinstance(v, float) and math.isnan(v) else round(float(v), 6)
        out = {"domains": self.domains, "stages": self.stages, "ppl_matrix": clean(self.P.tolist())}
        if self.stage >= 0:
            out.update(change=clean(self.change()), forgetting=clean(self.forgetting), bwt=clean(self.bwt),
                       fwt=clean(self.fwt), avg_log_ppl=clean(self.avg_log_ppl))
        return out

    def __repr__(self) -> str:
        width = max(len(s) for s in self.stages)
        head = " " * width + "  " + "  ".join(f"{d:>10}" for d in self.domains)
        rows = [f"{s:>{width}}  " + "  ".join("         -" if np.isnan(v) else f"{v:10.2f}" for v in row)
                for s, row in zip(self.stages, self.P)]
        return "PerplexityMatrix(\n  " + "\n  ".join([head, *rows]) + "\n)"


# --- generations, side by side ----------------------------------------------------------------------------------

def _prompt_texts(tokenizer, prompts: list[str], chat: bool) -> list[str]:
    if not chat:
        return list(prompts)
    if tokenizer.chat_template is None:
        raise ValueError("this tokenizer has no chat template; call with chat=False for plain text completion")
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts]


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 60, chat: bool = True,
             batch_size: int = 16) -> list[str]:
    """Greedy (deterministic) continuations of `prompts`, as chat answers or plain text completions."""
    texts = _prompt_texts(tokenizer, prompts, chat)
    device = next(model.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # new tokens follow every prompt directly
    out: list[str] = []
    try:
        for s in range(0, len(texts), batch_size):
            enc = tokenizer(texts[s:s + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            out += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return [o.strip() for o in out]


def side_by_side(prompts: list[str], columns: dict[str, list[str]], width: int = 300) -> str:
    """A Markdown table: one row per prompt, one column per model (e.g. before and after fine-tuning)."""
    for name, texts in columns.items():
        if len(texts) != len(prompts):
            raise ValueError(f"column {name!r} has {len(texts)} texts for {len(prompts)} prompts")

    def cell(text: str) -> str:
        text = " ".join(text.split()).replace("|", "\\|")
        return text if len(text) <= width else text[:width - 1] + "…"
    lines = ["| prompt | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for i, p in enumerate(prompts):
        lines.append(f"| {cell(p)} | " + " | ".join(cell(c[i]) for c in columns.values()) + " |")
    return "\n".join(lines)
