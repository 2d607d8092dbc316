"""The simple baseline's scikit-learn parts that skl2onnx does not convert faithfully, as ONNX
nodes (used by :mod:`dlforge.serve.export_simple`, which says who converts what and why):
each TF-IDF (a skl2onnx conversion function), the linear model's decision function and the
gradient-boosted trees in double precision, and ``SimpleModel.logits`` from their output;
:func:`unexportable` says what none of this can reproduce.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from dlforge.errors import DlforgeError
from dlforge.models.simple import SimpleModel

__all__ = ["Nodes", "linear_raw", "simple_logits", "string_locale", "tfidf_converter",
           "trees_raw", "unexportable"]

# scikit-learn's word token patterns -> the same tokens in re2 (onnxruntime's Tokenizer), whose
# \w is ASCII only; Python's Unicode \w is exactly letters, digits (category N) and '_'.
TOKEN_PATTERNS = {r"(?u)\b\w+\b": r"[\p{L}\p{N}_]+", r"(?u)\b\w\w+\b": r"[\p{L}\p{N}_]{2,}"}
# What str.split() splits on (str.isspace): Unicode separators and these controls.
NOT_SPACE = r"[^\p{Z}\t\n\x{0B}\f\r\x{1C}-\x{1F}\x{85}]+"


# ---------------------------------------------------------------------------- what is refused
def unexportable(simple: SimpleModel) -> str | None:
    """Why this fitted baseline has no faithful ONNX graph (None when it has one)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    encode, last = simple.pipeline.steps[0][1], simple.pipeline.steps[-1][1]
    for name, part, _ in encode.transformers_:
        if isinstance(part, TfidfVectorizer):
            problem = _tfidf_problem(part)
            if problem:
                return f"its TF-IDF {name!r} {problem}"
    loss = getattr(last, "loss", None)
    if loss not in (None, "squared_error", "log_loss"):
        return f"its gradient boosting's loss is {loss!r}"
    inner = getattr(last, "_preprocessor", None)  # the trees' own encoding of categories
    if inner is not None and not (
            np.array_equal(last._is_categorical_remapped, last.is_categorical_)
            and all(np.array_equal(c, np.arange(len(c)))
                    for c in inner.named_transformers_["encoder"].categories_)):
        return "its gradient boosting re-encodes the category codes"
    return None


def _tfidf_problem(v: Any) -> str | None:
    if callable(v.analyzer) or v.preprocessor is not None or v.tokenizer is not None:
        return "has a custom analyzer, preprocessor or tokenizer"
    if v.analyzer not in ("word", "char_wb"):
        return f"uses analyzer={v.analyzer!r} (word and char_wb export)"
    if v.analyzer == "word" and v.token_pattern not in TOKEN_PATTERNS:
        return f"uses token_pattern={v.token_pattern!r}"
    if v.analyzer == "char_wb" and v.ngram_range[0] not in (2, 3):
        # A word shorter than the smallest n counts whole; from n=2 or 3 none is that short.
        return f"counts character n-grams from {v.ngram_range[0]} (2 or 3 export)"
    if v.strip_accents is not None:
        return f"strips accents ({v.strip_accents!r})"
    if v.stop_words is not None:
        return "drops stop words"
    if v.binary or v.norm not in ("l2", None):
        return f"counts binary={v.binary}, norm={v.norm!r}"
    return None


# ---------------------------------------------------------------------------- graph building
class Nodes:
    """Adds nodes and constants with unique names: ``nodes("Add", a, b)`` returns the output's
    name. Into a skl2onnx container (inside a converter) or a finished graph (the head)."""

    def __init__(self, unique: Callable[[str], str], add_node: Callable[..., None],
                 add_const: Callable[[str, np.ndarray], None]):
        self.unique, self.add_node, self.add_const = unique, add_node, add_const

    @classmethod
    def of_container(cls, scope: Any, container: Any) -> Nodes:
        from onnx import helper

        def add_node(op: str, inputs: list[str], out: str, domain: str, attrs: dict) -> None:
            container.add_node(op, inputs, out, op_domain=domain,
                               name=scope.get_unique_operator_name(op), **attrs)

        def add_const(name: str, arr: np.ndarray) -> None:
            container.add_initializer(name, helper.np_dtype_to_tensor_dtype(arr.dtype),
                                      list(arr.shape), arr.ravel().tolist())

        return cls(scope.get_unique_variable_name, add_node, add_const)

    @classmethod
    def of_graph(cls, graph: Any) -> Nodes:
        from onnx import helper, numpy_helper

        taken = {n for node in graph.node for n in [*node.input, *node.output, node.name]}
        taken |= {i.name for i in [*graph.initializer, *graph.input]}

        def unique(name: str) -> str:
            i = 0
            while f"{name}_{i}" in taken:
                i += 1
            taken.add(f"{name}_{i}")
            return f"{name}_{i}"

        def add_node(op: str, inputs: list[str], out: str, domain: str, attrs: dict) -> None:
            graph.node.append(helper.make_node(op, inputs, [out], name=unique(op),
                                               domain=domain, **attrs))

        def add_const(name: str, arr: np.ndarray) -> None:
            graph.initializer.append(numpy_helper.from_array(arr, name))

        return cls(unique, add_node, add_const)

    def const(self, values: Any, dtype: Any = np.float32) -> str:
        name = self.unique("const")
        self.add_const(name, np.asarray(values, dtype=dtype))
        return name

    def __call__(self, op: str, *inputs: str, domain: str = "", out: str | None = None,
                 **attrs: Any) -> str:
        out = out or self.unique(op.lower())
        self.add_node(op, list(inputs), out, domain, attrs)
        return out


def tfidf_converter(locale: str) -> Callable[[Any, Any, Any], None]:
    """A skl2onnx conversion function for scikit-learn's TfidfVectorizer (word or char_wb):
    counts, sublinear tf, idf and the L2 norm as scikit-learn computes them."""

    def convert(scope: Any, operator: Any, container: Any) -> None:
        v, nodes = operator.raw_operator, Nodes.of_container(scope, container)
        docs = nodes("Reshape", operator.inputs[0].full_name, nodes.const([-1], np.int64))
        if v.lowercase:
            docs = nodes("StringNormalizer", docs, case_change_action="LOWER",
                         is_case_sensitive=0, locale=locale)
        counts = (_word_counts if v.analyzer == "word" else _char_counts)(nodes, v, docs)
        if v.sublinear_tf:  # 1 + log(tf) where tf > 0, else 0 (tf is a whole number)
            one = nodes.const([1.0])
            counts = nodes("Add", nodes("Log", nodes("Max", counts, one)),
                           nodes("Min", counts, one))
        if v.use_idf:
            counts = nodes("Mul", counts, nodes.const(v.idf_))
        if v.norm == "l2":
            norm = nodes("Sqrt", nodes("ReduceSum", nodes("Mul", counts, counts),
                                       nodes.const([1], np.int64), keepdims=1))
            counts = nodes("Div", counts, nodes("Max", norm, nodes.const([1e-30])))
        nodes("Identity", counts, out=operator.outputs[0].full_name)

    return convert


def _ngrams(v: Any, docs_tokens: str, nodes: Nodes) -> str:
    """TfIdfVectorizer counting the vocabulary's n-grams (as lists of tokens) in each row."""
    grams = sorted(((k.split(" ") if v.analyzer == "word" else list(k)), i)
                   for k, i in v.vocabulary_.items())
    grams.sort(key=lambda g: len(g[0]))  # ONNX wants the pool by n, then its start offsets
    lo, hi = v.ngram_range
    return nodes("TfIdfVectorizer", docs_tokens, mode="TF", min_gram_length=lo,
                 max_gram_length=hi, max_skip_count=0,
                 pool_strings=[t for g, _ in grams for t in g],
                 ngram_counts=[sum(len(g) for g, _ in grams if len(g) < n)
                               for n in range(1, hi + 1)],
                 ngram_indexes=[i for _, i in grams])


def _with_pad_column(nodes: Nodes, tokens: str, docs: str) -> str:
    """``tokens`` [N, T] with one more column of ' ', so T is never 0 (rows without tokens)."""
    shape = nodes("Concat", nodes("Shape", docs), nodes.const([1], np.int64), axis=0)
    return nodes("Concat", tokens,
                 nodes("Expand", nodes.const([[" "]], object), shape), axis=1)


def _word_counts(nodes: Nodes, v: Any, docs: str) -> str:
    """scikit-learn's word analyzer: tokens by the pattern, then 1..n-grams of them. The pad
    token ' ' never matches a word."""
    tokens = nodes("Tokenizer", docs, domain="com.microsoft", mark=0, mincharnum=1,
                   pad_value=" ", tokenexp=TOKEN_PATTERNS[v.token_pattern])
    return _ngrams(v, _with_pad_column(nodes, tokens, docs), nodes)


def _char_counts(nodes: Nodes, v: Any, docs: str) -> str:
    """scikit-learn's char_wb analyzer splits a text on white space and counts the character
    n-grams of each word padded with one space each side (' word '). Here: words [N, W] (pad
    ' '), their characters [N, W, L] (pad ' '), one ' ' added each side, the n-grams counted
    per word and summed over the words. A pad only adds n-grams holding two spaces in a row,
    which no padded word holds, so none is in the vocabulary."""
    words = nodes("Tokenizer", docs, domain="com.microsoft", mark=0, mincharnum=1,
                  pad_value=" ", tokenexp=NOT_SPACE)
    words = _with_pad_column(nodes, words, docs)  # [N, W]
    chars = nodes("Tokenizer", words, domain="com.microsoft", mark=0, mincharnum=1,
                  pad_value=" ", tokenexp=".")  # [N, W, L]
    n_w = nodes("Shape", words)
    edge = nodes("Expand", nodes.const([[[" "]]], object),
                 nodes("Concat", n_w, nodes.const([1], np.int64), axis=0))
    chars = nodes("Concat", edge, chars, edge, axis=2)  # [N, W, L + 2]
    length = nodes("Slice", nodes("Shape", chars), nodes.const([2], np.int64),
                   nodes.const([3], np.int64))
    per_word = _ngrams(v, nodes("Reshape", chars, nodes(
        "Concat", nodes.const([-1], np.int64), length, axis=0)), nodes)  # [N * W, F]
    per_word = nodes("Reshape", per_word, nodes(
        "Concat", n_w, nodes.const([len(v.vocabulary_)], np.int64), axis=0))  # [N, W, F]
    return nodes("ReduceSum", per_word, nodes.const([1], np.int64), keepdims=0)


def linear_raw(nodes: Nodes, last: Any, x: str) -> str:
    """The decision function X @ coef.T + intercept, in double: [N, 1] or [N, classes]."""
    coef = np.atleast_2d(np.asarray(last.coef_, dtype=np.float64))
    return nodes("Add", nodes("MatMul", x, nodes.const(coef.T, np.float64)),
                 nodes.const(np.atleast_1d(last.intercept_), np.float64))


def trees_raw(nodes: Nodes, last: Any, x: str, n_codes: list[int]) -> str:
    """Histogram gradient boosting's raw prediction (baseline + the sum of its trees' leaves),
    [N, trees per iteration], as one TreeEnsemble. A categorical split sends the codes in its
    bitset left, other known codes right, and unknown ones (like NaN) where missing values
    go; ``n_codes``: the codes each categorical feature can hold (the ordinal encoder's). The
    trees' own ordinal encoder maps those codes to themselves (:func:`unexportable` checks)."""
    from onnx import numpy_helper

    known, f_map = last._bin_mapper.make_known_categories_bitsets()

    def in_bitset(bits: np.ndarray, v: int) -> bool:
        return bool((int(bits[v // 32]) >> (v % 32)) & 1)

    a: dict[str, list] = {k: [] for k in (
        "modes", "features", "splits", "true", "true_leaf", "false", "false_leaf", "missing",
        "roots", "leaf_targets", "leaf_weights", "members")}

    def add_tree(tree: Any, target: int) -> None:
        nodes_ = tree.nodes
        inner = [i for i in range(len(nodes_)) if not nodes_[i]["is_leaf"]]
        leaves = [i for i in range(len(nodes_)) if nodes_[i]["is_leaf"]]
        at_inner = {i: len(a["modes"]) + k for k, i in enumerate(inner)}
        at_leaf = {i: len(a["leaf_weights"]) + k for k, i in enumerate(leaves)}
        for i in leaves:
            a["leaf_targets"].append(target)
            a["leaf_weights"].append(float(nodes_[i]["value"]))
        if not inner:  # one leaf: a split whose two sides are that leaf
            a["roots"].append(len(a["modes"]))
            for key, value in (("modes", 0), ("features", 0), ("splits", 0.0), ("missing", 0),
                               ("true", at_leaf[0]), ("true_leaf", 1), ("false", at_leaf[0]),
                               ("false_leaf", 1)):
                a[key].append(value)
            return
        a["roots"].append(at_inner[0])
        for i in inner:
            node = nodes_[i]
            f, left, right = int(node["feature_idx"]), int(node["left"]), int(node["right"])
            a["features"].append(f)
            a["missing"].append(int(node["missing_go_to_left"]))
            for side, child in (("true", left), ("false", right)):
                a[side].append(at_leaf[child] if nodes_[child]["is_leaf"] else at_inner[child])
                a[f"{side}_leaf"].append(int(bool(nodes_[child]["is_leaf"])))
            if node["is_categorical"]:
                bits, seen = tree.raw_left_cat_bitsets[node["bitset_idx"]], known[f_map[f]]
                a["modes"].append(6)  # SET_MEMBER: x in the set goes to the true (left) side
                a["splits"].append(np.nan)
                a["members"] += [float(c) for c in range(n_codes[f]) if in_bitset(bits, c) or (
                    node["missing_go_to_left"] and not in_bitset(seen, c))] + [np.nan]
            else:
                a["modes"].append(0)  # BRANCH_LEQ: x <= threshold goes left
                a["splits"].append(float(node["num_threshold"]))

    for iteration in last._predictors:
        for k, tree in enumerate(iteration):
            add_tree(tree, k)
    k = int(last.n_trees_per_iteration_)
    attrs = dict(
        n_targets=k, aggregate_function=1, post_transform=0, tree_roots=a["roots"],
        nodes_modes=numpy_helper.from_array(np.asarray(a["modes"], dtype=np.uint8)),
        nodes_featureids=a["features"],
        nodes_splits=numpy_helper.from_array(np.asarray(a["splits"], dtype=np.float64)),
        nodes_truenodeids=a["true"], nodes_trueleafs=a["true_leaf"],
        nodes_falsenodeids=a["false"], nodes_falseleafs=a["false_leaf"],
        nodes_missing_value_tracks_true=a["missing"], leaf_targetids=a["leaf_targets"],
        leaf_weights=numpy_helper.from_array(np.asarray(a["leaf_weights"], dtype=np.float64)))
    if a["members"]:
        attrs["membership_values"] = numpy_helper.from_array(
            np.asarray(a["members"], dtype=np.float64))
    raw = nodes("TreeEnsemble", x, domain="ai.onnx.ml", **attrs)
    return nodes("Add", raw, nodes.const(np.asarray(last._baseline_prediction,
                                                    dtype=np.float64).reshape(1, k),
                                         np.float64))


def simple_logits(nodes: Nodes, simple: SimpleModel, raw: str) -> str:
    """``SimpleModel.logits`` from the model's raw output (double): the number itself, or the
    probabilities (sigmoid: [1 - p, p]; softmax), placed among all classes (1e-7 for classes
    absent from training), renormalised, clipped to [1e-7, 1] and logged; binary: log-odds."""
    import onnx

    if simple.kind == "numeric":
        return nodes("Cast", nodes("Reshape", raw, nodes.const([-1, 1], np.int64)),
                     to=onnx.TensorProto.FLOAT)
    classes = np.asarray(simple.pipeline.classes_, dtype=np.int64)
    if len(classes) == 2:  # one raw column: p = sigmoid
        p1 = nodes("Sigmoid", raw)
        proba = nodes("Concat", nodes("Sub", nodes.const([[1.0]], np.float64), p1), p1, axis=1)
    else:
        proba = nodes("Softmax", raw, axis=1)
    width = max(simple.n_outputs, 2)
    place = np.zeros((len(classes), width))
    place[np.arange(len(classes)), classes] = 1.0
    absent = np.full(width, 1e-7)
    absent[classes] = 0.0
    full = nodes("Add", nodes("MatMul", proba, nodes.const(place, np.float64)),
                 nodes.const(absent, np.float64))
    full = nodes("Div", full, nodes("ReduceSum", full, nodes.const([1], np.int64), keepdims=1))
    logs = nodes("Log", nodes("Clip", full, nodes.const(1e-7, np.float64),
                              nodes.const(1.0, np.float64)))
    if simple.kind == "binary":
        def column(j: int) -> str:
            return nodes("Slice", logs, nodes.const([j], np.int64),
                         nodes.const([j + 1], np.int64), nodes.const([1], np.int64))
        logs = nodes("Sub", column(1), column(0))
    return nodes("Cast", logs, to=onnx.TensorProto.FLOAT)


@functools.cache
def string_locale() -> str:
    """A locale onnxruntime here can lowercase text in (its StringNormalizer needs one that is
    installed; C.UTF-8 is on most systems, en_US.UTF-8 its default)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    quiet = ort.SessionOptions()
    quiet.log_severity_level = 4  # the probe's failure is an answer, not an error to log
    for locale in ("C.UTF-8", "en_US.UTF-8"):
        graph = helper.make_graph(
            [helper.make_node("StringNormalizer", ["x"], ["y"], case_change_action="LOWER",
                              locale=locale)], "probe",
            [helper.make_tensor_value_info("x", TensorProto.STRING, [None])],
            [helper.make_tensor_value_info("y", TensorProto.STRING, [None])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        try:
            ort.InferenceSession(model.SerializeToString(), quiet,
                                 providers=["CPUExecutionProvider"])
        except Fail:  # the locale is not installed here
            continue
        return locale
    raise DlforgeError("onnxruntime on this machine finds no UTF-8 locale (C.UTF-8 or "
                       "en_US.UTF-8) to lowercase text with; install one (the locales package) "
                       "to export the simple baseline")
