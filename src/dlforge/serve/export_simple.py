"""ONNX export of the strong simple baseline (:mod:`dlforge.models.simple`): a ``model:
baseline`` run, or the baseline's share of a network run that blends it in. Verified on the
spot with onnxruntime against ``SimpleModel.logits``.

The graph takes the input columns as the baseline reads them (:func:`onnx_feeds`: the run's
text cleaning, then ``SimpleModel.frame``), one input per column, [batch, 1]: a text or a
category as a string (a missing category is ``"<missing>"``), a number as a double (NaN when
missing). Its output ``logits`` [batch, outputs] is what ``SimpleModel.logits`` returns:
log-odds (binary), log-probabilities (multi-class), the standardised number (numeric).

Who converts what:
- the column encoders (one-hot, ordinal, median imputer, scaler): skl2onnx;
- each TF-IDF and the model: :mod:`~dlforge.serve.export_simple_ops`. skl2onnx 1.20's
  TfidfVectorizer converter takes sublinear tf as log(1 + tf) (scikit-learn: 1 + log(tf); up
  to 0.025 apart on our pipelines), has no ``char_wb`` analyzer, and tokenizes with re2's
  ASCII ``\\w``; ours counts as scikit-learn does, with the same ONNX text ops. The linear
  model's decision function is computed in double precision (from float32 probabilities the
  log-odds of a confident row are lost), the gradient-boosted trees as one ai.onnx.ml
  TreeEnsemble (skl2onnx 1.20 reads categorical splits as thresholds, and its tree node fails
  to build under onnx 1.23).
Lowercasing is onnxruntime's, one code point at a time: it differs from Python's only for a
capital sigma ending a word and for 'İ'.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlforge.errors import ConfigError, DlforgeError
from dlforge.models.simple import SimpleModel
from dlforge.serve.export_simple_ops import (
    Nodes,
    linear_raw,
    simple_logits,
    string_locale,
    tfidf_converter,
    trees_raw,
    unexportable,
)

__all__ = ["baseline_onnx", "onnx_feeds", "sample_columns"]

PREPROCESSING = ("the run directory's config.yaml: each text cleaned as data.clean says "
                 "(dlforge.data.clean.clean_frame); a missing text is '', a missing category "
                 "'<missing>', a missing number NaN; a category as its one spelling "
                 "(dlforge.data.inputs.category_key: 2, 2.0 and '2' are '2')")


# ---------------------------------------------------------------------------- the graph
def _graph(simple: SimpleModel, opset: int) -> Any:
    """The baseline as an ONNX model: skl2onnx converts the column encoders (with our TF-IDF),
    then the model and the logits are appended."""
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType
    from sklearn.feature_extraction.text import TfidfVectorizer

    encode, last = simple.pipeline.steps[0][1], simple.pipeline.steps[-1][1]
    trees = not hasattr(last, "coef_")
    # The trees compare numbers in double; the linear path's encoders (skl2onnx's Imputer has
    # no double kernel in onnxruntime) take float, cast from the double input.
    number = DoubleTensorType if trees else FloatTensorType
    types = [(name, number([None, 1]) if kind == "numeric" else StringTensorType([None, 1]))
             for name, kind in simple.inputs.items()]
    model = convert_sklearn(
        encode, initial_types=types, target_opset={"": opset, "ai.onnx.ml": 5},
        custom_conversion_functions={TfidfVectorizer: tfidf_converter(string_locale())})
    graph = model.graph
    features = graph.output[0].name
    nodes = Nodes.of_graph(graph)
    x = nodes("Cast", features, to=onnx.TensorProto.DOUBLE)
    if trees:
        n_codes = [len(c) for c in getattr(encode.named_transformers_.get("category"),
                                           "categories_", [])]
        raw = trees_raw(nodes, last, x, n_codes)
    else:
        raw = linear_raw(nodes, last, x)
    logits = simple_logits(nodes, simple, raw)
    nodes("Identity", logits, out="logits")
    del graph.output[:]
    graph.output.append(onnx.helper.make_tensor_value_info(
        "logits", onnx.TensorProto.FLOAT, [None, simple.n_outputs]))
    if not trees:  # numbers come in as double, like the trees', cast to float here
        casts = []
        for inp in graph.input:
            if inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
                inner = nodes.unique(f"{inp.name}_float")
                for node in graph.node:
                    node.input[:] = [inner if i == inp.name else i for i in node.input]
                casts.append(onnx.helper.make_node("Cast", [inp.name], [inner],
                                                   to=onnx.TensorProto.FLOAT,
                                                   name=nodes.unique("Cast")))
                inp.type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
        for i, node in enumerate(casts):
            graph.node.insert(i, node)
    # skl2onnx imports the lowest opsets its own nodes need; ours need ``opset`` and (the
    # trees' TreeEnsemble) ai.onnx.ml 5.
    versions = {o.domain: o.version for o in model.opset_import}
    versions[""] = opset
    if trees:
        versions["ai.onnx.ml"] = 5
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in versions.items())
    onnx.checker.check_model(model)
    return model


# ---------------------------------------------------------------------------- feeds, samples
def onnx_feeds(simple: SimpleModel, columns: dict[str, Any]) -> dict[str, np.ndarray]:
    """The baseline graph's inputs for loaded columns (``DeepModel._load_frame``)."""
    frame = simple.frame(columns)
    return {name: frame[name].to_numpy(np.float64 if kind == "numeric" else object)
            .reshape(-1, 1) for name, kind in simple.inputs.items()}


UNSEEN_WORDS = ["zqxj", "Ünseen", "naïve", "ÉTÉ", "42", "x_y", "e-mail", "Übermaß", "日本語"]
SEPARATORS = [" ", " ", " ", " ", "  ", "\t", "\n", ", ", ". ", "!", "\u00a0", " - ", "'"]


def _one_at_a_time(text: str) -> bool:
    """Whether Python lowercases ``text`` one code point at a time, as onnxruntime does (not
    so for a capital sigma ending a word, or for 'İ')."""
    return text.lower() == "".join(c.lower() for c in text)


def sample_columns(simple: SimpleModel, n: int, seed: int = 0) -> dict[str, Any]:
    """Loaded input columns that exercise the fitted baseline: texts of its vocabulary's words
    (any case) and unseen ones, its categories, unseen ones and missing, numbers around its
    thresholds or its training distribution, and missing."""
    rng = np.random.default_rng(seed)
    encode, last = simple.pipeline.steps[0][1], simple.pipeline.steps[-1][1]
    parts = encode.named_transformers_
    names = list(encode.get_feature_names_out())
    out: dict[str, Any] = {}
    numeric = [c for c, k in simple.inputs.items() if k == "numeric"]
    category = [c for c, k in simple.inputs.items() if k == "category"]
    for col, kind in simple.inputs.items():
        if kind == "text":
            vocab = sorted(k for k in parts[f"{col}_words"].vocabulary_ if " " not in k)
            pool = np.array(vocab + UNSEEN_WORDS, dtype=object)
            texts: list[str] = []
            while len(texts) < n:
                words = [str(w) for w in rng.choice(pool, int(rng.integers(1, 12)))]
                cased = [[w, w.upper(), w.title()][int(rng.integers(3))] for w in words]
                seps = [str(s) for s in rng.choice(SEPARATORS, len(words))]
                for ws in (cased, words):  # any case, where onnxruntime lowercases it alike
                    text = "".join(w + s for w, s in zip(ws, seps, strict=True)).strip()
                    if _one_at_a_time(text):
                        break
                texts.append(text)
            if n >= 8:  # empty, blank, one word, padded
                texts[-4:] = ["", "   ", vocab[0], f"  {vocab[-1]}\t"]
            out[col] = texts
        elif kind == "category":
            seen = [str(c) for c in parts["category"].categories_[category.index(col)]]
            values = np.array([*seen, "an unseen category", None], dtype=object)
            out[col] = [None if v is None or v == "<missing>" else v
                        for v in rng.choice(values, n)]
        else:
            if hasattr(last, "coef_"):  # median imputer + scaler
                i = numeric.index(col)
                scaler = parts["numeric"].steps[-1][1]
                values = scaler.mean_[i] + scaler.scale_[i] * rng.normal(0, 1.5, n)
            else:  # the trees' thresholds themselves (x <= t), and either side of them
                edges = np.asarray(last._bin_mapper.bin_thresholds_[
                    names.index(f"remainder__{col}")], dtype=np.float64)
                edges = edges if edges.size else np.zeros(1)
                values = rng.choice(edges, n)
                values += rng.choice([0.0, 0.0, -1e-9, 1e-9], n) * (1 + np.abs(values))
                wide = rng.random(n) < 0.3
                values[wide] = rng.uniform(edges.min() - 1, edges.max() + 1, int(wide.sum()))
            values[rng.random(n) < 0.15] = np.nan
            out[col] = values
    return out


def baseline_onnx(simple: SimpleModel, opset: int = 17, tolerance: float = 1e-4
                  ) -> tuple[bytes, dict[str, Any]]:
    """The baseline's ONNX graph (serialised) and its description, after onnxruntime matched
    ``SimpleModel.logits`` within ``tolerance`` on sample rows (:func:`sample_columns`,
    batches of 64 and 1). Raises ConfigError when the baseline has no faithful ONNX form
    (:func:`unexportable`), DlforgeError when the graph disagreed or skl2onnx failed."""
    import onnxruntime as ort

    why = unexportable(simple)
    if why:
        raise ConfigError(f"the simple baseline ({simple.name}) has no faithful ONNX form: "
                          f"{why}")
    try:
        model = _graph(simple, opset)
    except DlforgeError:
        raise
    except Exception as err:  # skl2onnx and onnx say why in their own words
        raise DlforgeError("ONNX export of the simple baseline failed: "
                           f"{str(err).strip().splitlines()[0]}") from None
    data = model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    worst = 0.0
    for n, seed in ((64, 0), (1, 1), (64, 2)):
        columns = sample_columns(simple, n, seed)
        got = session.run(["logits"], onnx_feeds(simple, columns))[0]
        worst = max(worst, float(np.abs(got - simple.logits(columns)).max()))
    if not worst <= tolerance:
        raise DlforgeError(f"the simple baseline's ONNX graph differs from scikit-learn by up "
                           f"to {worst:.2e} (more than {tolerance:g}); not written")
    info = {"name": simple.name, "opset": opset,
            "inputs": [{"name": name, "kind": kind, "shape": ["batch", 1],
                        "dtype": "float64" if kind == "numeric" else "string"}
                       for name, kind in simple.inputs.items()],
            "outputs": [{"name": "logits", "shape": ["batch", simple.n_outputs]}],
            "max_abs_difference": worst, "preprocessing": PREPROCESSING}
    if "text" in simple.inputs.values():  # onnxruntime needs it installed where it runs
        info["lowercase_locale"] = string_locale()
    return data, info
