"""``LanguageModel``: train a GPT on any text, sample from it, score it, save it as a run.

A language model's run directory::

    runs/shakespeare/
      dlforge.json        manifest (task: language_model, estimator: LanguageModel)
      config.yaml         the LMConfig, every default filled in
      model.safetensors   the best weights by val loss (the head is tied to tok_emb.weight)
      model.json          the GPTConfig (vocab_size, block_size, n_layer, n_head, d_model, ...)
      tokenizer.json      {"kind": "char", "chars": [...]} or a Hugging Face BPE tokenizer
      metrics.json        val loss, perplexity, bits per character, tokens/s, best step, ...
      data.json           corpus size in characters and tokens, split sizes
      history.csv         step, train_loss, val_loss, lr, tokens_per_second per evaluation
"""

from __future__ import annotations

import inspect
import json
import math
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from dlforge._extras import PRIVACY_FEATURE, require
from dlforge.audit.card import write_card
from dlforge.config.lm import LMConfig, dump_lm_config, lm_config, load_lm_config
from dlforge.errors import ConfigError, DataError, DlforgeError, NotFittedError, RunDirError
from dlforge.lm.batch import DecodeBatcher
from dlforge.lm.corpus import (
    BPETokenizer,
    CharTokenizer,
    TokenData,
    load_tokenizer,
    read_corpus,
    save_tokenizer,
    train_tokenizer,
)
from dlforge.lm.generate import check_sampling, sample_tokens, stream_text
from dlforge.lm.train import train_lm
from dlforge.models.gpt import GPT, GPTConfig
from dlforge.run import (
    FINETUNE_TASK,
    LM_TASK,
    MANIFEST,
    check_out,
    check_run,
    history_csv,
    new_run_dir,
    partial_dir,
    read_history,
    read_manifest,
    save_weights,
    seal_run,
    to_json,
)
from dlforge.train.device import autocast, resolve_device, resolve_precision

__all__ = ["LanguageModel"]

Source = str | Path | Sequence[str | Path]


class LanguageModel:
    """A decoder-only Transformer (GPT) trained on a corpus, scikit-learn style.

    >>> lm = LanguageModel(n_layer=4, n_head=4, d_model=128, block_size=64, max_steps=2000)
    >>> lm.fit("shakespeare.txt")                      # or a list of files, or a text
    >>> print(lm.generate("ROMEO:", max_new_tokens=200, temperature=0.8, seed=0))

    Every argument is a setting of :class:`~dlforge.config.lm.LMConfig` (see its defaults);
    ``verbose`` 0 prints nothing, 1 a progress bar on a terminal or a line per evaluation.
    """

    def __init__(self, tokenizer: str = "char", vocab_size: int = 2000, n_layer: int = 4,
                 n_head: int = 4, d_model: int = 128, block_size: int = 64,
                 dropout: float = 0.0, bias: bool = True, batch_size: int = 12,
                 accumulate: int = 1, max_steps: int = 2000, lr: float = 1e-3,
                 min_lr: float = 1e-4, warmup_steps: int = 100, weight_decay: float = 0.1,
                 beta1: float = 0.9, beta2: float = 0.99, grad_clip: float = 1.0,
                 eval_interval: int = 250, eval_iters: int = 20, precision: str = "auto",
                 device: str = "auto", compile: bool = False, num_threads: int | None = None,
                 seed: int = 0, column: str | None = None, privacy: Any = None,
                 verbose: int = 1):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.n_layer = n_layer
        self.n_head = n_head
        self.d_model = d_model
        self.block_size = block_size
        self.dropout = dropout
        self.bias = bias
        self.batch_size = batch_size
        self.accumulate = accumulate
        self.max_steps = max_steps
        self.lr = lr
        self.min_lr = min_lr
        self.warmup_steps = warmup_steps
        self.weight_decay = weight_decay
        self.beta1 = beta1
        self.beta2 = beta2
        self.grad_clip = grad_clip
        self.eval_interval = eval_interval
        self.eval_iters = eval_iters
        self.precision = precision
        self.device = device
        self.compile = compile
        self.num_threads = num_threads
        self.seed = seed
        self.column = column
        self.privacy = privacy  # DP-SGD: {"target_epsilon": 8, ...} (config.PrivacyConfig)
        self.verbose = verbose

    # ------------------------------------------------------------------ sklearn contract
    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> LanguageModel:
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ConfigError(f"LanguageModel: unknown parameter {name!r}; valid ones are: "
                                  f"{', '.join(valid)}")
            setattr(self, name, value)
        return self

    def _config(self) -> LMConfig:
        params = self.get_params()
        params.pop("verbose")
        return lm_config(params)

    # ------------------------------------------------------------------ training
    def fit(self, X: Source, *, out: str | Path | None = None, resume: bool = False,
            overwrite: bool = False) -> LanguageModel:
        """Train on ``X``: a text, a file, or a list of files (UTF-8 text, or tables with
        ``column``). With ``out``, checkpoints go to a hidden ``.NAME.partial`` folder beside
        it while training (``resume=True`` continues from there after an interruption) and the
        run directory is written to ``out`` at the end (an existing run there is replaced only
        with ``overwrite=True``)."""
        cfg = self._config()
        if cfg.privacy is not None:  # before any work: one line if Opacus is missing
            require("opacus", "privacy", PRIVACY_FEATURE)
        if out is not None and not resume:
            check_out(Path(out), overwrite)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        device = resolve_device(cfg.device)
        precision = resolve_precision(cfg.precision, device)
        out = Path(out) if out is not None else None
        work = partial_dir(out) if out is not None else Path(tempfile.mkdtemp(prefix="dlforge-lm-"))
        try:
            if resume:
                if out is None or not (work / "tokens" / "tokens.json").is_file():
                    done = out is not None and (out / MANIFEST).is_file()
                    raise RunDirError(f"{out}: this run is complete; there is nothing to resume"
                                      if done else
                                      f"{out}: nothing to resume (no unfinished run in {work})")
                cfg = _same_config(cfg, load_lm_config(work / "config.yaml"), work)
                tok = load_tokenizer(work / "tokenizer.json")
                report = json.loads((work / "data.json").read_text(encoding="utf-8"))
            else:
                if work.exists() and out is not None:
                    shutil.rmtree(work)
                tok, report = _prepare(X, cfg, work)
            data = TokenData(work / "tokens", cfg.block_size)
            torch.manual_seed(cfg.seed)
            gcfg = GPTConfig(vocab_size=tok.vocab_size, block_size=cfg.block_size,
                             n_layer=cfg.n_layer, n_head=cfg.n_head, d_model=cfg.d_model,
                             dropout=cfg.dropout, bias=cfg.bias)
            model = GPT(gcfg).to(device)
            res = train_lm(model, data, cfg, device, precision,
                           checkpoint_dir=work / "checkpoints" if out is not None else None,
                           resume=resume, verbose=self.verbose)
            model.load_state_dict(res.best_state)
            model.eval()
            best = next(r for r in res.history if r["step"] == res.best_step)
            self.metrics_ = {
                "val_loss": res.best_val_loss,
                "val_perplexity": math.exp(res.best_val_loss),
                "val_bits_per_char": res.best_val_loss / math.log(2) / data.chars_per_token,
                "train_loss": best["train_loss"],
                "best_step": res.best_step,
                "steps": res.steps,
                "tokens_per_second": res.tokens_per_second,
                "seconds": res.seconds,
                "parameters": model.num_params(non_embedding=False),
                "precision": precision,
                "device": str(device),
            }
            del data  # closes the memory maps before their folder goes
        except BaseException as err:
            # An interrupted run keeps its checkpoints for --resume; bad input leaves nothing.
            if out is None or (isinstance(err, DlforgeError) and not resume):
                shutil.rmtree(work, ignore_errors=True)
            raise
        self.config_, self.model_, self.tokenizer_ = cfg, model, tok
        self.history_, self.data_report_ = res.history, report
        self.device_, self.precision_ = device, precision
        self.privacy_ = res.privacy
        if out is not None:
            self.save(out)
        shutil.rmtree(work, ignore_errors=True)
        return self

    # ------------------------------------------------------------------ generation
    def _prompt_ids(self, prompt: str) -> list[int]:
        self._check_fitted()
        if not isinstance(prompt, str):
            raise DataError(f"prompt: expected a string, got {type(prompt).__name__}")
        if not prompt:
            raise DataError("prompt: empty; give at least one character to continue from")
        return [int(i) for i in self.tokenizer_.encode(prompt, source="prompt")]

    def generate_stream(self, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
                        top_k: int | None = None, top_p: float | None = None,
                        repetition_penalty: float = 1.0, stop: str | None = None,
                        seed: int | None = None, use_cache: bool = True,
                        details: dict | None = None,
                        batcher: DecodeBatcher | None = None) -> Iterator[str]:
        """Yield the continuation of ``prompt`` as decoded text pieces, one per token (a piece
        is held back while it might begin ``stop`` or ends inside a UTF-8 character). Bad
        input raises here, before the first piece: DataError for the prompt (empty, or
        characters outside a char vocabulary), ConfigError for a sampling setting.

        ``temperature`` 0 is greedy; ``top_k``/``top_p`` keep the k most likely tokens / the
        smallest set with probability ``top_p``; ``repetition_penalty`` > 1 makes tokens
        already in the text less likely; the text ends before ``stop``. Past the context
        window the context slides (see :mod:`dlforge.lm.generate`). Safe to call from several
        threads; each stream may be advanced from any thread. ``details``, a dict, gets
        ``prompt_tokens`` now and ``generated_tokens`` and ``finish_reason`` ("stop" or
        "length") when the stream ends (nothing, if it is closed early). With ``batcher`` (a
        running :class:`~dlforge.lm.batch.DecodeBatcher` of this model) the tokens are decoded
        there, together with the other generations it runs (the server does this)."""
        ids = self._prompt_ids(prompt)
        if details is not None:
            details["prompt_tokens"] = len(ids)
        check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
        if batcher is not None:
            tokens: Iterator[int] = batcher.submit(ids, max_new_tokens, temperature, top_k,
                                                   top_p, repetition_penalty, seed)
        else:
            tokens = sample_tokens(self.model_, ids, max_new_tokens, temperature, top_k, top_p,
                                   repetition_penalty, seed, use_cache, self._gen_precision())
        return stream_text(self.tokenizer_.decode, tokens, stop, details)

    def decode_batcher(self, max_batch: int = 16) -> DecodeBatcher:
        """A :class:`~dlforge.lm.batch.DecodeBatcher` of this model (not started): many
        generations decoded together (continuous batching)."""
        self._check_fitted()
        return DecodeBatcher(self.model_, max_batch, self._gen_precision())

    def generate_many(self, prompts: Sequence[str], max_new_tokens: int = 200,
                      temperature: float = 0.8, top_k: int | None = None,
                      top_p: float | None = None, repetition_penalty: float = 1.0,
                      stop: str | None = None, seed: int | None = None,
                      max_batch: int = 16) -> list[str]:
        """The continuations of several prompts, decoded together (up to ``max_batch`` at a
        time): each the text :meth:`generate` gives for it with the same settings (``seed``
        seeds every prompt's sampling alike)."""
        if isinstance(prompts, str):
            raise DataError("prompts: expected a list of strings; for one prompt use generate")
        with self.decode_batcher(max_batch) as batcher:
            streams = [self.generate_stream(p, max_new_tokens, temperature, top_k, top_p,
                                            repetition_penalty, stop, seed, batcher=batcher)
                       for p in prompts]
            return ["".join(s) for s in streams]

    def generate(self, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
                 top_k: int | None = None, top_p: float | None = None,
                 repetition_penalty: float = 1.0, stop: str | None = None,
                 seed: int | None = None, use_cache: bool = True) -> str:
        """The continuation of ``prompt`` (without the prompt); see :meth:`generate_stream`."""
        return "".join(self.generate_stream(prompt, max_new_tokens, temperature, top_k, top_p,
                                            repetition_penalty, stop, seed, use_cache))

    def generate_tokens(self, prompt: str, max_new_tokens: int = 200, **sampling: Any
                        ) -> list[int]:
        """Token ids instead of text (``sampling``: as :meth:`generate`, without ``stop``)."""
        ids = self._prompt_ids(prompt)
        return list(sample_tokens(self.model_, ids, max_new_tokens, **sampling,
                                  precision=self._gen_precision()))

    def _gen_precision(self) -> str:
        # bf16 decoding on GPUs; on the CPU single-token steps are dominated by overheads and
        # fp32 keeps cached and uncached decoding bit-identical.
        return self.precision_ if self.device_.type == "cuda" else "fp32"

    # ------------------------------------------------------------------ scoring
    def evaluate(self, X: Source, batch_size: int = 32) -> dict[str, float]:
        """Loss (nats per token), perplexity and bits per character of the text ``X``, every
        token after the first predicted once, from the preceding tokens of its window."""
        self._check_fitted()
        text = read_corpus(X, self.config_.column)
        ids = torch.from_numpy(self.tokenizer_.encode(text, source="text"))
        n = len(ids)
        if n < 2:
            raise DataError(f"text: {n} token(s); scoring needs at least 2")
        T = self.config_.block_size
        starts = list(range(0, n - 1, T))
        total = 0.0
        with torch.no_grad():
            for i in range(0, len(starts), batch_size):
                group = starts[i:i + batch_size]
                for length, part in _by_length(group, n, T):
                    x = torch.stack([ids[s:s + length] for s in part]).to(self.device_)
                    y = torch.stack([ids[s + 1:s + 1 + length] for s in part]).to(self.device_)
                    with autocast(self.device_, self.precision_):
                        _, loss = self.model_(x, y)
                    total += float(loss) * x.numel()
        loss = total / (n - 1)
        return {"loss": loss, "perplexity": math.exp(loss),
                "bits_per_char": loss / math.log(2) * (n - 1) / max(1, len(text) - 1),
                "tokens": n, "characters": len(text)}

    # ------------------------------------------------------------------ persistence
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("LanguageModel: not fitted yet; call fit(text) or "
                                 "dlforge.load(run_dir) first")

    def save(self, path: str | Path) -> Path:
        """Write the run directory (see the module docstring), atomically."""
        self._check_fitted()
        path = Path(path)
        tmp = new_run_dir(path)
        try:
            dump_lm_config(self.config_, tmp / "config.yaml")
            save_weights(self.model_, tmp)
            (tmp / "model.json").write_text(to_json(self.model_.config.to_dict()), encoding="utf-8")
            save_tokenizer(self.tokenizer_, tmp / "tokenizer.json")
            (tmp / "metrics.json").write_text(to_json(self.metrics_), encoding="utf-8")
            (tmp / "data.json").write_text(to_json(self.data_report_), encoding="utf-8")
            (tmp / "history.csv").write_text(history_csv(self.history_), encoding="utf-8")
            if getattr(self, "privacy_", None):  # trained with DP-SGD: the budget spent
                (tmp / "privacy.json").write_text(to_json(self.privacy_), encoding="utf-8")
            seal_run(tmp, path, LM_TASK, type(self).__name__, "gpt", documents=write_card)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @staticmethod
    def finetune(model: str | Path, data: str | Path, out: str | Path, **kwargs: Any) -> Any:
        """Fine-tune a pretrained causal LM (a local Hugging Face folder) on ``data`` into the
        run ``out``: :meth:`dlforge.estimators.pretrained_lm.PretrainedLM.finetune`."""
        from dlforge.estimators.pretrained_lm import PretrainedLM

        return PretrainedLM.finetune(model, data, out, **kwargs)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> Any:
        """The model saved at ``path`` (checked against its manifest), ready to generate: a
        GPT run as a LanguageModel; a pretrained model folder or a fine-tune of one as a
        :class:`~dlforge.estimators.pretrained_lm.PretrainedLM`."""
        from dlforge.lm.hf import is_hf_folder

        if is_hf_folder(Path(path)) or (
                (Path(path) / MANIFEST).is_file()
                and read_manifest(Path(path)).get("task") == FINETUNE_TASK):
            from dlforge.estimators.pretrained_lm import PretrainedLM

            return PretrainedLM.load(path, device=device or "cpu")
        manifest = check_run(Path(path))
        if manifest.get("task") != LM_TASK:
            raise RunDirError(f"{path}: a {manifest.get('task')} run, not a language model")
        return cls._restore(Path(path), device)

    @classmethod
    def _restore(cls, path: Path, device: str | None = None) -> LanguageModel:
        cfg = load_lm_config(path / "config.yaml")
        lm = cls(**cfg.model_dump(), verbose=0)
        if device is not None:
            lm.device = device
        dev = resolve_device(device or cfg.device)
        gcfg = GPTConfig(**json.loads((path / "model.json").read_text(encoding="utf-8")))
        model = GPT(gcfg)
        model.load_state_dict(load_file(path / "model.safetensors"))
        lm.model_ = model.to(dev).eval()
        lm.tokenizer_ = load_tokenizer(path / "tokenizer.json")
        lm.config_ = cfg
        lm.device_ = dev
        lm.precision_ = resolve_precision(cfg.precision, dev)
        lm.metrics_ = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
        data = path / "data.json"
        lm.data_report_ = json.loads(data.read_text(encoding="utf-8")) if data.is_file() else {}
        lm.history_ = read_history(path / "history.csv")
        private = path / "privacy.json"
        lm.privacy_ = json.loads(private.read_text(encoding="utf-8")) if private.is_file() \
            else None
        return lm


def _prepare(X: Source, cfg: LMConfig, work: Path) -> tuple[CharTokenizer | BPETokenizer,
                                                             dict[str, Any]]:
    """Read and tokenise the corpus once into ``work``: tokens/, tokenizer.json, config."""
    text = read_corpus(X, cfg.column)
    tok = train_tokenizer(text, cfg.tokenizer, cfg.vocab_size)
    ids = tok.encode(text, source="corpus")
    work.mkdir(parents=True, exist_ok=True)
    TokenData.write(ids, tok.vocab_size, len(text), work / "tokens", cfg.block_size)
    meta = json.loads((work / "tokens" / "tokens.json").read_text(encoding="utf-8"))
    report = {"characters": len(text), "tokens": meta["tokens"],
              "train_tokens": meta["train_tokens"], "val_tokens": meta["val_tokens"],
              "vocab_size": tok.vocab_size, "tokenizer": tok.kind,
              "chars_per_token": meta["chars_per_token"]}
    save_tokenizer(tok, work / "tokenizer.json")
    dump_lm_config(cfg, work / "config.yaml")
    (work / "data.json").write_text(json.dumps(report), encoding="utf-8")
    return tok, report


def _same_config(given: LMConfig, saved: LMConfig, work: Path) -> LMConfig:
    """Resuming continues the saved run: settings that differ from it are an error."""
    a, b = given.model_dump(), saved.model_dump()
    differ = [k for k in a if a[k] != b[k] and k not in ("device", "num_threads")]
    if differ:
        shown = ", ".join(f"{k} ({b[k]!r} saved, {a[k]!r} given)" for k in differ)
        raise ConfigError(f"resume: settings differ from the unfinished run in {work}: {shown}; "
                          "resume with the same settings, or train afresh without --resume")
    return saved


def _by_length(starts: list[int], n: int, T: int) -> list[tuple[int, list[int]]]:
    """Windows grouped by length: full ones (T) and the last, shorter one."""
    groups: dict[int, list[int]] = {}
    for s in starts:
        groups.setdefault(min(T, n - 1 - s), []).append(s)
    return list(groups.items())

