"""Serving a sequence-to-sequence run: each instance is a source text, each prediction the
generated text (``{"text": "..."}``), with the run's decoding settings (beam size, length
penalty, maximum length).

The same interface as ``ServedModel``, so both routes take it unchanged: on
``/v1/models/{name}/predict`` an instance is ``{"<source column>": "text"}`` (or the string
itself); on the Open Inference Protocol's ``/v2/models/{name}/infer`` the input is one BYTES
tensor named after the source column, shape [N], and the output one BYTES tensor ``text``,
shape [N]. Every source is checked before it joins a batch (HTTP 422 naming
``instances[i]``: not a string, empty, or longer than the model takes, with both numbers),
so one bad request never fails the others it is batched with.

``backend="onnx"`` (a from-scratch Transformer run) predicts through the same
``Seq2Seq.predict``, its search loops running over the exported encoder and decoder graphs
(``export_seq2seq.OnnxDecoding``; exported and verified first when ``RUN.onnx`` or
``RUN.encoder.onnx`` is missing or older than the run): the same texts as the torch backend.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from dlforge.errors import ConfigError
from dlforge.estimators.seq2seq import Seq2Seq
from dlforge.serve import check_backend

__all__ = ["ServedSeq2Seq"]


class ServedSeq2Seq:
    def __init__(self, run_dir: str | Path, name: str | None = None, backend: str = "torch"):
        self.path = Path(run_dir)
        self.name = name or self.path.resolve().name
        self.backend = check_backend(backend)
        # onnx: the tokenizer and settings from the run, the decoding through its graphs
        # (on the CPU, where onnxruntime hands the logits back).
        self.clf = Seq2Seq.load(self.path, device="cpu" if backend == "onnx" else None)
        self.decoding: Any = None  # torch: the model's own Decoding
        if backend == "onnx":
            if self.clf.backend_.kind != "transformer":
                raise ConfigError(f"{self.path}: a fine-tuned pretrained model, which has no "
                                  "dlforge ONNX graphs; serve it with --backend torch")
            from dlforge.serve.export_seq2seq import OnnxDecoding, onnx_sessions

            self.decoding = partial(OnnxDecoding, *onnx_sessions(self.path))
        self.source = self.clf.config_.source
        self.inputs = [(self.source, "text")]
        self.sensitive: list[str] = []
        self.optional: list[str] = []

    def check(self, instances: list[Any], where: str = "instances") -> list[str]:
        """Each instance's source text, or HTTP 422 naming the first bad one."""
        texts = []
        for i, inst in enumerate(instances):
            at = f"{where}[{i}]"
            if isinstance(inst, dict):
                extra = sorted(set(inst) - {self.source})
                if extra:
                    raise HTTPException(422, f"{at}.{extra[0]}: unknown field; the field is "
                                             f"{self.source}")
                if self.source not in inst:
                    raise HTTPException(422, f"{at}.{self.source}: missing (the source text)")
                at, inst = f"{at}.{self.source}", inst[self.source]
            if not isinstance(inst, str):
                raise HTTPException(422, f"{at}: expected a string (the source text), got "
                                         f"{type(inst).__name__}")
            texts.append((at, inst))
        b = self.clf.backend_
        for (at, _), ids in zip(texts, b.encode_sources([t for _, t in texts]), strict=True):
            if not ids:
                raise HTTPException(422, f"{at}: empty; give text to transform")
            if len(ids) > b.max_source:
                raise HTTPException(422, f"{at}: {len(ids)} tokens, longer than the "
                                         f"{b.max_source} this model takes; shorten or split it")
        return [t for _, t in texts]

    def predict(self, rows: list[str]) -> list[dict[str, Any]]:
        return [{"text": t} for t in self.clf.predict(rows, decoding=self.decoding)]

    def infer_outputs(self, preds: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
        """Open Inference Protocol v2: one BYTES tensor of the generated texts."""
        return [{"name": "text", "datatype": "BYTES", "shape": [n],
                 "data": [p["text"] for p in preds]}]

    def metadata(self) -> dict[str, Any]:
        cfg = self.clf.config_
        return {"name": self.name, "versions": ["1"], "platform": "dlforge",
                "inputs": [{"name": self.source, "datatype": "BYTES", "shape": [-1],
                            "kind": "text"}],
                "outputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
                "parameters": {"task": "seq2seq", "model": self.clf.backend_.kind,
                               "backend": self.backend,
                               "target": cfg.target, "beam_size": cfg.beam_size,
                               "length_penalty": cfg.length_penalty,
                               "max_source_tokens": self.clf.backend_.max_source}}
