"""Cures for forgetting when a language model is fine-tuned on a new domain; see lesson 09.

Each cure is one knob of `finetune.FinetuneConfig`, which builds the list of strategies (cfcourse.strategies,
the same objects the MNIST lessons use) that `finetune` runs; they combine:

- a lower learning rate (`lr`): the simplest cure, and often the strongest;
- replay mixing (`replay_ratio`): a share of every batch is old-domain text (`old_blocks`), so the model keeps
  practising what it knew; the `mixed-replay` strategy, whose `replay_schedule` spreads the replayed blocks
  so the share is exact over the run;
- L2 to the start (`l2`): a penalty l2/2 * sum (w - w_start)^2 on the trained weights (the `l2` strategy,
  anchored at the weights fine-tuning starts from);
- EWC (`ewc`): the same pull, weighted per weight by a diagonal Fisher estimated on a sample of old-domain
  text (the `ewc` strategy, its Fisher normalised to mean 1), so weights the old text relies on move least;
- LoRA (`lora_rank`, `lora_targets`): train low-rank adapters beside frozen weights, through `peft`
  (`add_lora`, the `LoRA` strategy); the adapters are merged into the weights after training;
- self-generated replay: when the old data is gone, sample text from the model before fine-tuning
  (`self_generated_blocks`) and replay that instead.

The learning-forgetting trade-off (`tradeoff_point`) puts each setting on one plane: how much of the new
domain it learned against how much of the old domains it lost.
"""
from __future__ import annotations

import math

import torch

from ..strategies import HParam, Strategy
from ..strategies.rehearsal import replay_schedule  # noqa: F401  (lesson 09 reads it here)
from ..strategies.regularization import quadratic_sum
from .model import decoder_layers

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


# --- the L2 pull, as lesson 09 writes it --------------------------------------------------------------------------

def l2_penalty(params, start, strength: float) -> torch.Tensor:
    """strength/2 · Σ (p − p_start)² over every weight of `params` (lists of tensors): the pull back to the
    starting weights that lesson 09's learner writes. The strategies' pull (cfcourse.strategies.regularization,
    `L2` and `EWC`) is this sum over a model's named weights, weighted per weight by EWC's Fisher."""
    return 0.5 * strength * quadratic_sum(params, start)


# --- LoRA through peft -------------------------------------------------------------------------------------------

def add_lora(model, rank: int, targets=DEFAULT_LORA_TARGETS, alpha: float | None = None, dropout: float = 0.0,
             top_layers: int | None = None):
    """Wrap `model` with LoRA adapters of `rank` on the modules named in `targets`; only the adapters train.

    Returns peft's model; its base weights are the original tensors, untouched by training. `alpha` defaults to
    2·rank (the scale alpha/rank is then 2 at every rank, so ranks compare at the same learning rate).
    `top_layers` puts adapters only in the top decoder layers (None: every layer); the backward pass then stops
    there, which on a CPU is most of the time saved.
    """
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    unknown = sorted(set(targets) - names)
    if unknown:
        raise ValueError(f"LoRA targets {unknown} are not Linear modules of this model; choose from {sorted(names)}")
    where = {}
    if top_layers is not None:
        n = len(decoder_layers(model))
        if not 1 <= top_layers <= n:
            raise ValueError(f"top_layers must be in 1..{n}, got {top_layers}")
        where = dict(layers_to_transform=list(range(n - top_layers, n)), layers_pattern="layers")
    config = LoraConfig(r=rank, lora_alpha=2 * rank if alpha is None else alpha, lora_dropout=dropout,
                        target_modules=list(targets), bias="none", task_type="CAUSAL_LM", **where)
    return get_peft_model(model, config)


def merge_lora(peft_model):
    """Fold the adapters into the weights and return the plain model (the object that was wrapped)."""
    return peft_model.merge_and_unload()


class LoRA(Strategy):
    """Train low-rank adapters beside the frozen weights of a causal LM (Hu et al. 2021), through peft: `setup`
    wraps the model, `teardown` folds the adapters into the weights (or, with merge False, keeps peft's model,
    whose adapter `with model.disable_adapter():` switches off)."""

    name = "lora"
    hparams = (HParam("lora_rank", int, 8, low=1, help="rank of each adapter"),)

    def __init__(self, targets=DEFAULT_LORA_TARGETS, top_layers: int | None = None, merge: bool = True,
                 seed: int = 0, **hparams):
        super().__init__(**hparams)
        self.targets, self.top_layers, self.merge, self.seed = tuple(targets), top_layers, bool(merge), seed

    def setup(self, model):
        """Freeze the model and wrap it with adapters, initialised from `seed` (not from torch's global stream,
        so that a run is the same whatever ran before it)."""
        model.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return add_lora(model, self.lora_rank, self.targets, top_layers=self.top_layers)

    def teardown(self, model):
        return merge_lora(model) if self.merge else model


# --- self-generated replay ---------------------------------------------------------------------------------------

SELF_REPLAY_PROMPTS = ("", "The", "In", "def", "Question:", "It is", "A", "When")
MEDICAL_PROMPTS = ("", "The", "In", "We", "A", "Patients", "Of the", "This")  # openings of abstracts


@torch.no_grad()
def self_generated_blocks(model, tokenizer, n_blocks: int, block_len: int = 128, seed: int = 0,
                          temperature: float = 1.0, top_k: int = 50, prompts=SELF_REPLAY_PROMPTS,
                          batch_size: int = 8) -> torch.Tensor:
    """Text sampled from `model` itself, as (n_blocks, block_len) token blocks: replay for when the old data is gone.

    Each block starts from the end-of-text token (the separator between documents) and one of `prompts`, then the model writes the rest
    (sampling with `temperature` and `top_k`, seeded). Sampled before fine-tuning, these blocks carry what the
    model knew in its own words; replaying them pulls the fine-tuned model back towards its old distribution.
    """
    if n_blocks < 1 or block_len < 4:
        raise ValueError(f"need n_blocks >= 1 and block_len >= 4, got {n_blocks} and {block_len}")
    device = next(model.parameters()).device
    bos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    torch.manual_seed(seed)  # generate() samples from the global generator
    out = []
    for s in range(0, n_blocks, batch_size):
        starts = [[bos] + tokenizer(prompts[(s + i) % len(prompts)], add_special_tokens=False)["input_ids"]
                  for i in range(min(batch_size, n_blocks - s))]
        width = min(len(x) for x in starts)  # same-length prompts: no padding inside a block
        ids = torch.tensor([x[:width] for x in starts], device=device)
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                             temperature=temperature, top_k=top_k, max_new_tokens=block_len - width,
                             min_new_tokens=block_len - width, pad_token_id=tokenizer.eos_token_id)
        out.append(gen[:, :block_len].cpu())
    return torch.cat(out)


# --- weight interpolation (WiSE-FT) ------------------------------------------------------------------------------

@torch.no_grad()
def interpolate(model, start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], a: float):
    """Set `model`'s weights to (1 − a)·start + a·tuned (Wortsman et al. 2022): a = 0 is the start, 1 the tuned
    model, anything between a model that was never trained; `start` and `tuned` are state dicts. Returns `model`."""
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"the interpolation weight a must be in [0, 1], got {a}")
    if start.keys() != tuned.keys():
        raise ValueError("start and tuned must have the same weights (the same architecture)")
    params = dict(model.named_parameters())
    for name, w0 in start.items():
        if name in params:
            params[name].copy_(torch.lerp(w0, tuned[name], a))
    return model


def top_layer_weights(model, layers: int) -> dict[str, torch.Tensor]:
    """Copies of the weights of `model`'s top `layers` decoder layers, by name: all that the course's
    fine-tuning changes, so all that interpolation needs."""
    top = {id(p) for layer in decoder_layers(model)[-layers:] for p in layer.parameters()}
    return {n: p.detach().clone() for n, p in model.named_parameters() if id(p) in top}


# --- the trade-off -----------------------------------------------------------------------------------------------

def tradeoff_point(before: dict[str, float], after: dict[str, float], new_domain: str) -> dict[str, float]:
    """Where one setting lands: the new domain's perplexity gain and the old domains' mean perplexity rise.

    gain = 1 − ppl_after/ppl_before on the new domain (0.3: 30% lower perplexity);
    rise = the geometric mean over the old domains of ppl_after/ppl_before, minus 1 (0.3: 30% higher).
    """
    if new_domain not in before or new_domain not in after:
        raise ValueError(f"the new domain {new_domain!r} must be measured before and after")
    old = [d for d in before if d != new_domain and d in after]
    if not old:
        raise ValueError("measure at least one old domain besides the new one")
    rise = math.exp(sum(math.log(after[d] / before[d]) for d in old) / len(old)) - 1
    return {"gain": 1 - after[new_domain] / before[new_domain], "rise": rise,
            "old_rise": {d: after[d] / before[d] - 1 for d in old}}


def rise_at_gain(points: list[dict], gain: float) -> dict[str, float | None]:
    """Each family's lowest old-domain rise at a matched new-domain `gain`, read off the lines between its
    consecutive points (in the order given: a family is a path, e.g. rising learning rates or interpolation
    weights); None where the family's path does not reach that gain. Compare cures here, not at one arbitrary
    setting each: a cure that learns less also forgets less."""
    out: dict[str, float | None] = {}
    for kind in dict.fromkeys(p.get("kind", "setting") for p in points):
        path = [(p["gain"], p["rise"]) for p in points if p.get("kind", "setting") == kind]
        found = [r for g, r in path if abs(g - gain) < 1e-9]
        found += [r0 + (r1 - r0) * (gain - g0) / (g1 - g0)
                  for (g0, r0), (g1, r1) in zip(path, path[1:]) if min(g0, g1) < gain < max(g0, g1)]
        out[kind] = min(found) if found else None
    return out
