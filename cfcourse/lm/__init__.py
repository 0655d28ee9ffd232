"""Language models forget too: a real pretrained LM offline, text domains, perplexity and fine-tuning; lessons 08-10.

- model: load_model(name_or_path) for the course's SmolLM2-135M-Instruct (offline, sha256-checked), a folder or a
  hub id
- domains: medical, legal, code, docs and literature text (and the model's own answers) with fixed splits
- measures: perplexity in bounded memory, the perplexity matrix, side-by-side generations
- probes: short facts scored by the log-likelihood of their reference answer
- finetune: fine-tuning in a memory-lean form, with the cures of lesson 09 as options (cures)
- lab, views: the experiment lessons 08-10 share, its figures and widgets
- report: the forgetting report of a base model and its fine-tuned version (python -m cfcourse report)

Importing this package is cheap; transformers is imported only when a model is loaded or trained.
"""
from .domains import DOMAINS, documents, domain_blocks, own_answers
from .measures import PerplexityMatrix, domain_perplexities, generate, perplexity, side_by_side
from .model import DEFAULT_MODEL, HUB_ID, ModelError, ensure_default_model, load_model
from .probes import load_probes, score_probes
from .report import ReportError, forgetting_report

__all__ = ["DEFAULT_MODEL", "DOMAINS", "HUB_ID", "ModelError", "PerplexityMatrix", "ReportError", "documents", "domain_blocks",
           "domain_perplexities", "ensure_default_model", "forgetting_report", "generate", "load_model", "load_probes",
           "own_answers", "perplexity", "score_probes", "side_by_side"]
