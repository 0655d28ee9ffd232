"""Language models forget too: a real pretrained LM offline, text domains, perplexity and fine-tuning; lessons 08-10.

- model: load_model(name_or_path) for the course's SmolLM2-135M-Instruct (offline, sha256-checked), a folder or a
  hub id
- domains: code, docs, legal, literature and medical text with fixed train and held-out splits
- measures: perplexity in bounded memory, the perplexity matrix, side-by-side generations
- probes: short facts scored by the log-likelihood of their reference answer
- finetune: full fine-tuning in a memory-lean form

Importing this package is cheap; transformers is imported only when a model is loaded or trained.
"""
from .domains import DOMAINS, documents, domain_blocks, medical_documents
from .measures import PerplexityMatrix, domain_perplexities, generate, perplexity, side_by_side
from .model import DEFAULT_MODEL, HUB_ID, ModelError, ensure_default_model, load_model
from .probes import load_probes, score_probes

__all__ = ["DEFAULT_MODEL", "DOMAINS", "HUB_ID", "ModelError", "PerplexityMatrix", "documents", "domain_blocks",
           "domain_perplexities", "ensure_default_model", "generate", "load_model", "load_probes",
           "medical_documents", "perplexity", "score_probes", "side_by_side"]
