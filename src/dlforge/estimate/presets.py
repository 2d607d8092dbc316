"""Published architectures, stored as their shapes only (never as a parameter count or FLOP
figure): the estimator must reproduce the published numbers from these.

Sources: GPT-2 — Radford et al. 2019 and the released hparams.json files; BERT — Devlin et al.
2019; GPT-3 — Brown et al. 2020, Table 2.1; LLaMA-2 — Touvron et al. 2023, Table 1 and the
released params.json (ffn widths); Chinchilla — Hoffmann et al. 2022, Table 4 (Gopher's
architecture: RMSNorm, Transformer-XL relative positions, 32k SentencePiece vocabulary).
"""

from __future__ import annotations

from dlforge.errors import ConfigError
from dlforge.estimate.arch import Arch

__all__ = ["PRESETS", "preset"]

_GPT2 = dict(vocab=50257, context=1024, ffn_kind="gelu", tied=True, norm="layernorm", bias=True,
             positions="learned", source="Radford et al. 2019 (GPT-2), hparams.json")
_BERT = dict(vocab=30522, context=512, type_vocab=2, kind="encoder", tied=True,
             norm="layernorm", bias=True, positions="learned",
             source="Devlin et al. 2019 (BERT); counted as BertModel: encoder + pooler",
             notes=("the masked-LM head (tied to the embeddings) is not counted",))
_LLAMA2 = dict(vocab=32000, context=4096, ffn_kind="swiglu", tied=False, norm="rmsnorm",
               bias=False, positions="rope", source="Touvron et al. 2023 (Llama 2), Table 1")

PRESETS: dict[str, Arch] = {
    "gpt2-small": Arch(name="gpt2-small", layers=12, d_model=768, heads=12, **_GPT2),
    "gpt2-medium": Arch(name="gpt2-medium", layers=24, d_model=1024, heads=16, **_GPT2),
    "gpt2-large": Arch(name="gpt2-large", layers=36, d_model=1280, heads=20, **_GPT2),
    "gpt2-xl": Arch(name="gpt2-xl", layers=48, d_model=1600, heads=25, **_GPT2),
    "bert-base": Arch(name="bert-base", layers=12, d_model=768, heads=12, **_BERT),
    "bert-large": Arch(name="bert-large", layers=24, d_model=1024, heads=16, **_BERT),
    "gpt3-175b": Arch(name="gpt3-175b", layers=96, d_model=12288, heads=96, vocab=50257,
                      context=2048, tied=True, source="Brown et al. 2020 (GPT-3), Table 2.1",
                      notes=("GPT-3 alternates dense and locally banded sparse attention "
                             "layers; counted here as dense",)),
    "llama2-7b": Arch(name="llama2-7b", layers=32, d_model=4096, heads=32, ffn=11008,
                      **_LLAMA2),
    "llama2-13b": Arch(name="llama2-13b", layers=40, d_model=5120, heads=40, ffn=13824,
                       **_LLAMA2),
    "llama2-70b": Arch(name="llama2-70b", layers=80, d_model=8192, heads=64, kv_heads=8,
                       ffn=28672, **_LLAMA2),
    "chinchilla-70b": Arch(name="chinchilla-70b", layers=80, d_model=8192, heads=64,
                           vocab=32000, context=2048, tied=True, norm="rmsnorm", bias=False,
                           positions="relative",
                           source="Hoffmann et al. 2022 (Chinchilla), Table 4; Rae et al. "
                                  "2021 (Gopher) for norm, positions and vocabulary",
                           notes=("tied embeddings and no biases are assumptions (the papers "
                                  "do not say)",)),
}


def preset(name: str) -> Arch:
    """The preset ``name`` (case and ``_`` / ``-`` insensitive)."""
    key = name.strip().lower().replace("_", "-")
    if key not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[key]
