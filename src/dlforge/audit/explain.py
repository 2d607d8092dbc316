"""Why did the model say that? Integrated Gradients (networks) and baseline Shapley values
(the simple baseline) through Captum.

Integrated Gradients (Sundararajan et al., 2017) integrates the gradient of the explained
output along the straight path from a baseline input to the actual one; the attributions add
up to ``f(x) - f(baseline)`` (completeness), and the gap Captum reports as the convergence
delta says how well ``steps`` approximated the integral.

What is attributed, per input column (the baseline in brackets):
- text: each token, through ``LayerIntegratedGradients`` on the token embedding (every token
  [PAD], the attention mask unchanged), summed over the embedding's width;
- numeric sequences: each step (all zeros: the training mean of every channel);
- images: each pixel, summed over the channels (all zeros: the training mean colour);
- numeric columns: the standardised value (zero: the training mean);
- category columns: the category's embedding (the "unknown" category).
Image, sequence and numeric columns are attributed on the inputs themselves (Captum's
``IntegratedGradients``; in a model with text or categories too, through an identity layer in
front of them, which is the same computation). The explained output is the logit of the
positive class (binary), of the predicted or asked class (multi-class and multi-label), or the
prediction in the output's units (regression).

A run that is the simple baseline (``model: baseline``: TF-IDF + logistic or ridge regression,
or gradient-boosted trees; :mod:`dlforge.models.simple`) has no gradients to integrate: its
attributions are baseline Shapley values, each feature's marginal contribution averaged over
orders of adding the features one by one to the reference, so they too add up to
``f(x) - f(reference)`` (exactly, for every order). The features, and their reference:
- text: each token, a word or a run of punctuation (the token removed from the text);
- numeric columns: the value (the training median the pipeline holds);
- category columns: the category (missing).
Captum's ``ShapleyValues`` averages over every order when there are at most
``EXACT_FEATURES`` features, its ``ShapleyValueSampling`` over ``steps`` (default
``SHAPLEY_SAMPLES``) seeded random orders otherwise; the forward function rebuilds the columns
from each order's 0/1 "kept" flags and computes them a block of orders to one call of the
pipeline. The explained output is the network's: the log-odds of the positive class (binary),
the log-probability of the predicted or asked class (multi-class), or the prediction in the
output's units (regression); ``method`` in the result names the method. A run that blends a
network with the baseline is explained by Integrated Gradients of its network (a note says
what share of the predictions that is).

The explanation runs on a copy of the model, so a server can explain while it predicts.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from dlforge._extras import require
from dlforge.errors import ConfigError, DataError, RunDirError
from dlforge.train.metrics import predict_indices, probabilities
from dlforge.train.trainer import to_device

if TYPE_CHECKING:  # the estimators sit above this layer: they hand us a fitted one
    from dlforge.estimators.base import DeepModel

__all__ = ["explain_instances", "explain_model", "render_html", "render_terminal"]

# Integration steps when none are given: start here, double until the attributions account
# for the output's change to within TOLERANCE, stop at MAX_STEPS (a saturated model can change
# its output over a short stretch of the path, which a few steps miss).
FIRST_STEPS, MAX_STEPS, TOLERANCE = 50, 800, 0.01
EXPLAIN_FEATURE = "dlforge explain"  # Captum, in the audit extra
INTEGRATED_GRADIENTS = "integrated gradients"
# The simple baseline: baseline Shapley values over every permutation of at most
# EXACT_FEATURES features (720 permutations; Captum walks each in Python, about a ms each),
# else over SHAPLEY_SAMPLES sampled permutations, seeded.
SHAPLEY_EXACT = "baseline Shapley values (exact)"
SHAPLEY_SAMPLED = "baseline Shapley values (sampled)"
EXACT_FEATURES, SHAPLEY_SAMPLES, SHAPLEY_SEED = 6, 25, 0
SHAPLEY_REFERENCE = ("each token removed, each number at its training median, each category "
                     "missing")
_TOKEN = re.compile(r"\w+|[^\w\s]+")  # a word or a run of punctuation: the baseline's tokens


def explain_model(model: DeepModel, *, text: str | None = None, image: Any = None,
                  row: dict[str, Any] | None = None, target: Any = None,
                  steps: int | None = None) -> dict[str, Any]:
    """Attributions for one instance of a fitted estimator (``dlforge.explain`` takes a run
    directory too): ``text`` for its text input, ``image`` (a path or an array) for its image
    input, ``row`` for any input column by name (a table row; also the other columns of a
    mixed model). See :func:`explain_instances` for the result."""
    require("captum", "audit", EXPLAIN_FEATURE)
    _check_explainable(model)
    instance = dict(row or {})
    for value, kind, flag in ((text, "text", "--text"), (image, "image", "--image")):
        if value is None:
            continue
        names = [i.name for i in model.config_.inputs if i.type == kind]
        if not names:
            raise ConfigError(f"{flag}: this run has no {kind} input; its inputs are: "
                              f"{_describe_inputs(model)}")
        instance[names[0]] = value
    if not instance:
        raise ConfigError(f"explain: give the instance to explain (--text, --image or --row); "
                          f"this run's inputs are: {_describe_inputs(model)}")
    return explain_instances(model, [instance], target=target, steps=steps)[0]


def explain_instances(model: DeepModel, instances: list[dict[str, Any]], target: Any = None,
                      steps: int | None = None) -> list[dict[str, Any]]:
    """Integrated Gradients for each instance (a dict of the model's input columns), as plain
    JSON: ``{"prediction", "explains", "attributions": {column: [{"token"|"step"|"value",
    "score"}, ...] or (images) {"shape", "scores"}}, "output", "baseline_output",
    "attribution_sum", "convergence_delta", "steps", "method"}``. ``target`` picks the class
    to explain (default: the predicted one; for binary outputs always the positive class's
    logit). ``steps``: the integration steps; None doubles them from 50 until the convergence
    delta is within 1% of the output's change (at most 800). A simple-baseline run is
    explained by baseline Shapley values instead (``"method"`` says which, ``"reference"``
    what a feature is replaced by): ``steps`` is then the number of sampled permutations
    (default 25; every permutation, and ``steps`` ignored, for at most 6 features), and
    ``convergence_delta`` the rounding gap between the attributions and the output's change."""
    require("captum", "audit", EXPLAIN_FEATURE)
    _check_explainable(model)
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool)
                              or not 2 <= steps <= 10_000):
        raise ConfigError(f"steps must be a whole number in [2, 10000], got {steps!r}")
    if not isinstance(instances, list) or not all(isinstance(i, dict) for i in instances):
        raise DataError("instances: expected a list of objects, each mapping the model's input "
                        "columns to values")
    names = [i.name for i in model.config_.inputs]
    for k, inst in enumerate(instances):
        missing = [n for n in names if n not in inst]
        if missing:
            raise DataError(f"instance {k}: column {missing[0]!r} is missing; this model's "
                            f"inputs are: {_describe_inputs(model)}")
    if not instances:
        return []
    frame = pd.DataFrame({n: pd.Series([inst[n] for inst in instances], dtype=object)
                          for n in names})
    encoded = model._encode_frame(frame, "instances")
    if model.model_ is None:  # the simple baseline: loaded columns, no network
        return [_shapley_one(model, {n: _take(encoded[n], k) for n in names}, target, steps)
                for k in range(len(instances))]
    net = copy.deepcopy(model.model_).eval()  # hooks go on the copy, not the serving model
    out = []
    for k in range(len(instances)):
        batch = {n: f.collate([f.item(encoded[n], k)]) for n, f in model.features_.items()}
        out.append(_explain_one(model, net, batch, target, steps))
    share = getattr(model, "simple_", None) and model.config_.train.baseline_weight
    if share:  # the run's predictions blend in the simple baseline, which IG does not see
        for result in out:
            result["note"] = (f"explains the network, {1 - share:g} of this run's predictions; "
                              f"the simple baseline's {share:g} share is not attributed")
    return out


# ------------------------------------------------------------------------------ internals
def _describe_inputs(model: DeepModel) -> str:
    return ", ".join(f"{i.name} ({i.type})" for i in model.config_.inputs)


def _check_explainable(model: Any) -> None:
    cfg = getattr(model, "config_", None)
    if cfg is not None and getattr(cfg, "forecast", None) is not None:
        raise RunDirError("explain: forecasting runs have no supported attribution (a forecast "
                          "depends on a whole window of several series); explain a classifier "
                          "or a regressor")
    if not callable(getattr(model, "_encode_frame", None)):  # not a DeepModel (a GPT)
        raise RunDirError(f"explain: {type(model).__name__} models have no supported "
                          "attribution; explain a classifier or a regressor")
    model._check_fitted()
    if getattr(model, "members_", None):
        from dlforge.config.models import member_folder

        folders = [member_folder(m) for m in model.config_.model.members]
        raise RunDirError(f"explain: an ensemble averages {len(folders)} runs and is not "
                          "explained as one; explain a member: dlforge explain RUN/members/"
                          f"{folders[0]} (members: {', '.join(folders)})")
    if model.model_ is None:  # the simple baseline: explained by baseline Shapley values
        if getattr(model, "simple_", None) is None:
            raise RunDirError(f"explain: this {type(model).__name__} run has neither a network "
                              "nor the simple baseline to explain")
        return
    if not hasattr(model.model_, "encoders"):
        raise RunDirError(f"explain: {type(model).__name__} models have no supported "
                          "attribution; explain a classifier or a regressor")


def _token_layer(encoder: nn.Module) -> tuple[nn.Module, int]:
    """The token-embedding layer of a text encoder, and the id of its baseline token."""
    embed = getattr(encoder, "embed", None)
    tok = getattr(embed, "tok", embed)  # TokenPositionEmbedding, or a plain nn.Embedding
    if isinstance(tok, nn.Embedding):
        return tok, 0  # [PAD]
    hf = getattr(encoder, "model", None)  # a pretrained Hugging Face encoder
    if hf is not None and hasattr(hf, "get_input_embeddings"):
        return hf.get_input_embeddings(), int(getattr(encoder, "pad_token_id", 0))
    raise ConfigError(f"explain: no token embedding found in the {type(encoder).__name__} "
                      "encoder; this model family has no supported attribution")


def _target(model: DeepModel, logits: torch.Tensor, target: Any) -> tuple[int, str, Any]:
    """(output index to explain, what it is, the predicted label or number)."""
    labels = model.labels_
    z = logits[0].detach().float().cpu().numpy()[None, :]
    if labels.kind == "numeric":
        return 0, f"the predicted {model.config_.output.name}", float(labels.decode(z)[0])
    predicted = labels.decode(predict_indices(labels.kind, probabilities(labels.kind, z)))[0]
    if labels.kind == "binary":
        if target is not None and target not in labels.classes:
            raise ConfigError(f"target: {target!r} is not a class of this model; classes are: "
                              f"{', '.join(map(str, labels.classes))}")
        return 0, f"the logit of class {labels.classes[1]!r} (against {labels.classes[0]!r})", \
            _plain(predicted)
    if target is None:
        index = int(np.argmax(z[0]))
    elif target in labels.classes:
        index = labels.classes.index(target)
    else:
        raise ConfigError(f"target: {target!r} is not a class of this model; classes are: "
                          f"{', '.join(map(str, labels.classes))}")
    return index, f"the logit of class {labels.classes[index]!r}", _plain(predicted)


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def _explain_one(model: DeepModel, net: nn.Module, batch: dict[str, Any], target: Any,
                 steps: int) -> dict[str, Any]:
    from captum.attr import IntegratedGradients, LayerIntegratedGradients

    device = model.device_
    batch = to_device(batch, device)
    features = model.features_
    # Each column: what Captum varies (a tensor), its baseline, and (for ids) the layer.
    cols, xs, bases, layers, masks, fronts = [], [], [], [], {}, {}
    encoders = net.encoders
    for name, x in batch.items():
        kind = features[name].kind
        if isinstance(x, dict):  # a padded sequence: ids or values, and its mask
            key = "input_ids" if "input_ids" in x else "values"
            masks[name] = x["attention_mask"]
            x = x[key]
        if kind == "text":
            layer, pad = _token_layer(encoders[name])
            base = torch.full_like(x, pad)
        elif kind == "category":
            layer, base = encoders[name].embed, torch.zeros_like(x)  # 0: the unknown category
        else:  # image, sequence, numeric: the input itself, behind an identity layer
            layer = fronts[name] = nn.Identity()
            base = torch.zeros_like(x)
        cols.append(name)
        xs.append(x)
        bases.append(base)
        layers.append(layer)
    view = _View(encoders, nn.ModuleDict(fronts), net.head, cols, masks).eval()
    with torch.no_grad():
        logits = view(*xs)
        base_logits = view(*bases)
    index, explains, prediction = _target(model, logits, target)
    by_layer = any(features[c].kind in ("text", "category") for c in cols)
    # Through the token and category embeddings (Captum's LayerIntegratedGradients) when the
    # model has ids to explain; otherwise plain Integrated Gradients on the inputs.
    with warnings.catch_warnings():  # Captum's reminder that layers must not feed each other
        warnings.simplefilter("ignore")  # (ours are one per input column: they do not)
        ig = LayerIntegratedGradients(view, layers) if by_layer else IntegratedGradients(view)
    gap = abs(float(logits[0, index]) - float(base_logits[0, index]))
    n = steps or FIRST_STEPS
    # cuDNN's RNN has no backward in eval mode: on CUDA the explanation runs without cuDNN.
    no_cudnn = (torch.backends.cudnn.flags(enabled=False) if device.type == "cuda"
                else contextlib.nullcontext())
    with no_cudnn:
        while True:
            attrs, delta = ig.attribute(tuple(xs), baselines=tuple(bases), target=index,
                                        n_steps=n, internal_batch_size=64,
                                        return_convergence_delta=True)
            if steps is not None or n >= MAX_STEPS or float(delta.abs().max()) <= max(
                    TOLERANCE * gap, 1e-6):
                break
            n *= 2
    attrs = list(attrs) if isinstance(attrs, list | tuple) else [attrs]
    scale = model.labels_.std if model.labels_.kind == "numeric" else 1.0  # output units
    per_column = {}
    total = 0.0
    for name, x, a in zip(cols, xs, attrs, strict=True):
        a = a.detach().float().cpu()[0] * scale
        total += float(a.sum())
        per_column[name] = _describe(features[name], x[0].cpu(), a, masks.get(name))
    f_x = float(logits[0, index]) * scale
    f_b = float(base_logits[0, index]) * scale
    if model.labels_.kind == "numeric":
        f_x, f_b = f_x + model.labels_.mean, f_b + model.labels_.mean
    result = {"prediction": prediction, "explains": explains,
              "attributions": per_column, "output": f_x, "baseline_output": f_b,
              "attribution_sum": total, "convergence_delta": float(delta.abs().max()) * scale,
              "steps": n, "method": INTEGRATED_GRADIENTS}
    if result["convergence_delta"] > 0.05 * max(abs(f_x - f_b), 1e-6):
        result["note"] = (f"the attributions miss {result['convergence_delta']:.3g} of the "
                          f"output's change ({abs(f_x - f_b):.3g}); more steps (--steps) "
                          "approximate the integral better")
    return result


def _describe(feature: Any, x: torch.Tensor, a: torch.Tensor, mask: Any) -> Any:
    """One column's attributions as plain JSON."""
    kind = feature.kind
    if kind == "text":
        scores = a.sum(-1)  # (T,): summed over the embedding's width
        ids = x.tolist()
        return [{"token": t, "score": float(s)}
                for t, s in zip(_tokens(feature, ids), scores.tolist(), strict=True)]
    if kind == "sequence":
        scores = a.sum(-1)  # (T,): summed over the channels
        return [{"step": t, "score": float(s)} for t, s in enumerate(scores.tolist())]
    if kind == "image":
        scores = a.sum(0) if a.dim() == 3 else a  # (H, W): summed over the channels
        return {"shape": list(scores.shape), "scores": scores.tolist(),
                "total": float(scores.sum())}
    if kind == "numeric":  # (value, missing indicator): one score for the column
        return [{"value": float(x[0]) * feature.std + feature.mean if not x[1] else None,
                 "score": float(a.sum())}]
    vocab = ["<unknown>", *feature.vocab]
    return [{"value": vocab[int(x)], "score": float(a.sum())}]


def _tokens(feature: Any, ids: list[int]) -> list[str]:
    tok = feature.tokenizer.tokenizer
    if hasattr(tok, "convert_ids_to_tokens"):  # a Hugging Face tokenizer (pretrained models)
        return [str(t) for t in tok.convert_ids_to_tokens(ids)]
    return [tok.decode([i], skip_special_tokens=False).strip() or str(tok.id_to_token(i))
            for i in ids]


class _View(nn.Module):
    """The model as Captum calls it: one tensor per column, each through its identity
    ``front`` if it has one (what Captum attributes for inputs), the masks held fixed."""

    def __init__(self, encoders: nn.ModuleDict, fronts: nn.ModuleDict, head: nn.Module,
                 cols: list[str], masks: dict[str, torch.Tensor]):
        super().__init__()
        self.encoders = encoders
        self.fronts = fronts
        self.head = head
        self.cols = cols
        self.masks = masks

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        n = xs[0].shape[0]  # Captum runs all the steps as one batch
        parts = []
        for name, x in zip(self.cols, xs, strict=True):
            if name in self.fronts:
                x = self.fronts[name](x)
            enc = self.encoders[name]
            parts.append(enc(x, self.masks[name].expand(n, -1)) if name in self.masks
                         else enc(x))
        return self.head(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))


# ----------------------------------------------------------- the simple baseline: Shapley
def _take(column: Any, k: int) -> Any:
    """Row ``k`` of a loaded column (a list or an array) as a column of one."""
    return column[k:k + 1]


def _text_pieces(text: str) -> list[tuple[str, str]]:
    """(token, piece) for each word or run of punctuation of ``text``. A piece is its token
    with the whitespace before it (the last one also the whitespace after it): the kept pieces
    joined are the text with the other tokens removed; all of them, the text itself; none,
    the empty text."""
    spans = [m.span() for m in _TOKEN.finditer(text)]
    return [(text[start:end], text[spans[i - 1][1] if i else 0:
                                   len(text) if i == len(spans) - 1 else end])
            for i, (start, end) in enumerate(spans)]


class _Coalitions:
    """The simple baseline as Captum calls it: one 0/1 tensor per varied column, a 1 per
    feature (a token, a number, a category) kept as in the instance, a 0 where it is replaced
    by its reference (the token removed, the number at its reference, the category missing).
    Returns the baseline's (N, n_outputs) logits (float64) from a cache that :meth:`fill`
    fills, many coalitions to one call of the pipeline."""

    BATCH = 2048  # rows per call of the pipeline

    def __init__(self, simple: Any, values: dict[str, Any], pieces: dict[str, list[str]],
                 sizes: dict[str, int], references: dict[str, float]):
        self.simple, self.values, self.pieces, self.sizes = simple, values, pieces, sizes
        self.references = references
        self.cache: dict[bytes, np.ndarray] = {}

    def __call__(self, *kept: torch.Tensor) -> torch.Tensor:
        n = kept[0].shape[0]
        rows = np.concatenate([k.detach().cpu().numpy().reshape(n, -1) for k in kept], axis=1)
        rows = rows > 0.5
        self.fill(rows)  # a no-op when the coalitions were filled beforehand
        return torch.from_numpy(np.stack([self.cache[r.tobytes()] for r in rows]))

    def fill(self, rows: np.ndarray) -> None:
        """Compute the logits of each distinct row of kept flags (N, features) not cached."""
        todo = {key: r for r in rows if (key := r.tobytes()) not in self.cache}
        keys, flags = list(todo), list(todo.values())
        for at in range(0, len(keys), self.BATCH):
            logits = self.simple.logits(self._columns(np.stack(flags[at:at + self.BATCH])))
            self.cache.update(zip(keys[at:at + self.BATCH], logits.astype(np.float64),
                                  strict=True))

    def _columns(self, rows: np.ndarray) -> dict[str, Any]:
        columns, at = {}, 0
        for name, kind in self.simple.inputs.items():
            flags = rows[:, at:at + self.sizes[name]]
            at += self.sizes[name]
            value = self.values[name]
            if kind == "text":
                pieces = self.pieces[name]
                columns[name] = (["".join(p for p, keep in zip(pieces, r, strict=True) if keep)
                                  for r in flags] if pieces else [value] * len(rows))
            elif kind == "numeric":
                columns[name] = np.where(flags[:, 0], value, self.references[name])
            else:
                columns[name] = [value if keep else None for keep in flags[:, 0]]
        return columns


def _prefixes(perms: list[list[int]], n: int) -> np.ndarray:
    """The coalitions Captum visits walking each permutation: its first j features kept,
    j = 1..n (and the empty one), as rows of kept flags."""
    rank = np.argsort(np.asarray(perms, dtype=np.int64), axis=1)  # each feature's place
    rows = rank[:, None, :] < np.arange(n + 1)[None, :, None]  # (perms, n + 1, n)
    return rows.reshape(-1, n)


def _shapley_one(model: DeepModel, columns: dict[str, Any], target: Any,
                 samples: int | None) -> dict[str, Any]:
    """Baseline Shapley values of the simple baseline for one instance (its loaded columns):
    exact (Captum's ShapleyValues, every permutation) for at most EXACT_FEATURES features,
    else Captum's ShapleyValueSampling over ``samples`` (default SHAPLEY_SAMPLES) seeded
    permutations. The coalitions each permutation visits are computed beforehand, a block of
    permutations to one call of the pipeline."""
    from captum.attr import ShapleyValues, ShapleyValueSampling

    simple = model.simple_
    kinds = simple.inputs
    values = {n: columns[n][0] for n in kinds}
    references = simple.medians()
    tokens = {n: _text_pieces(values[n]) for n, kind in kinds.items() if kind == "text"}
    pieces = {n: [p for _, p in t] for n, t in tokens.items()}
    sizes = {n: len(tokens[n]) if n in tokens else 1 for n in kinds}
    varied = [n for n in kinds if sizes[n]]  # an empty text has no token to attribute
    n = sum(sizes.values())
    forward = _Coalitions(simple, values, pieces, sizes, references)
    ends = np.array([[True], [False]]).repeat(n, axis=1)  # f(x): all kept; f(reference): none
    forward.fill(ends)
    z = np.stack([forward.cache[r.tobytes()] for r in ends])
    index, explains, prediction = _target(model, torch.from_numpy(z[:1]), target)
    if model.labels_.kind == "category":  # the baseline's multi-class output: log-probabilities
        explains = explains.replace("the logit of", "the log-probability of", 1)
    exact = n <= EXACT_FEATURES
    n_perms = math.factorial(n) if exact else (samples or SHAPLEY_SAMPLES)
    attrs: dict[str, np.ndarray] = {}
    if varied:
        inputs = tuple(torch.ones((1, sizes[c]), dtype=torch.float64) for c in varied)
        bases = tuple(torch.zeros_like(x) for x in inputs)
        starts = np.cumsum([0] + [sizes[c] for c in varied])
        mask = tuple(torch.arange(int(a), int(b)).unsqueeze(0)
                     for a, b in zip(starts[:-1], starts[1:], strict=True))
        per_eval = min(n, 256)  # a permutation's coalitions in one call of the forward
        if exact:  # every coalition: 2**n rows
            forward.fill(((np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1) == 1)
            out = ShapleyValues(forward).attribute(inputs, baselines=bases, target=index,
                                                   feature_mask=mask,
                                                   perturbations_per_eval=per_eval)
            attrs = {c: a[0].double().cpu().numpy() for c, a in zip(varied, out, strict=True)}
        else:
            generator = torch.Generator().manual_seed(SHAPLEY_SEED)
            perms = [torch.randperm(n, generator=generator).tolist() for _ in range(n_perms)]
            block = max(1, forward.BATCH // (n + 1))
            totals = {c: np.zeros(sizes[c]) for c in varied}
            for at in range(0, n_perms, block):  # a block's mean, weighted by its size
                these = perms[at:at + block]
                forward.cache.clear()
                forward.fill(_prefixes(these, n))
                svs = ShapleyValueSampling(forward)
                # Captum walks these (prefilled) permutations, not its own (global RNG).
                svs.permutation_generator = lambda _n, _k, these=these: iter(these)
                out = svs.attribute(inputs, baselines=bases, target=index, feature_mask=mask,
                                    n_samples=len(these), perturbations_per_eval=per_eval)
                for c, a in zip(varied, out, strict=True):
                    totals[c] += a[0].double().cpu().numpy() * len(these)
            attrs = {c: t / n_perms for c, t in totals.items()}
    numeric = model.labels_.kind == "numeric"
    scale = model.labels_.std if numeric else 1.0  # output units
    per_column: dict[str, Any] = {}
    total = 0.0
    for name, kind in kinds.items():
        a = attrs.get(name, np.zeros(0)) * scale
        total += float(a.sum())
        v = values[name]
        if kind == "text":
            per_column[name] = [{"token": tok, "score": float(s)}
                                for (tok, _), s in zip(tokens[name], a, strict=True)]
        elif kind == "numeric":
            ref = references[name]
            per_column[name] = [{"value": None if np.isnan(v) else float(v),
                                 "score": float(a.sum()),
                                 "reference": None if np.isnan(ref) else ref}]
        else:
            per_column[name] = [{"value": "<missing>" if v is None else v,
                                 "score": float(a.sum())}]
    f_x, f_b = float(z[0, index]) * scale, float(z[1, index]) * scale
    if numeric:
        f_x, f_b = f_x + model.labels_.mean, f_b + model.labels_.mean
    return {"prediction": prediction, "explains": explains, "attributions": per_column,
            "output": f_x, "baseline_output": f_b, "attribution_sum": total,
            "convergence_delta": abs(total - (f_x - f_b)), "steps": n_perms,
            "method": SHAPLEY_EXACT if exact else SHAPLEY_SAMPLED,
            "reference": SHAPLEY_REFERENCE}


# ------------------------------------------------------------------------------- rendering
def _colour(score: float, top: float) -> tuple[int, int, int, float]:
    """Green for evidence for the explained output, red against; opacity by strength."""
    alpha = min(1.0, abs(score) / top) if top > 0 else 0.0
    return (22, 163, 74, alpha) if score >= 0 else (220, 38, 38, alpha)


def _summary(result: dict[str, Any]) -> str:
    """The completeness line: output = baseline + attributions, and how they were computed."""
    line = (f"output {result['output']:.4f} = baseline {result['baseline_output']:.4f} + "
            f"attributions {result['attribution_sum']:.4f}; ")
    method = result.get("method", INTEGRATED_GRADIENTS)
    if method == INTEGRATED_GRADIENTS:
        return line + (f"convergence delta {result['convergence_delta']:.2e} "
                       f"({result['steps']} steps)")
    every = "all " if method == SHAPLEY_EXACT else ""
    return line + (f"{method} over {every}{result['steps']} permutations (completeness gap "
                   f"{result['convergence_delta']:.2e})")


def render_terminal(result: dict[str, Any]) -> Any:
    """A ``rich`` renderable: tokens highlighted in colour, other columns as a table."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = [Text.assemble(("prediction ", "bold"), str(result["prediction"]),
                                      ("   explaining ", "bold"), result["explains"])]
    rows = []
    for name, attr in result["attributions"].items():
        if isinstance(attr, dict):  # an image
            rows.append((name, f"{attr['shape'][0]}x{attr['shape'][1]} pixels", attr["total"]))
            continue
        if attr and "token" in attr[0]:
            top = max(abs(a["score"]) for a in attr) or 1.0
            line = Text(f"{name}: ")
            for a in attr:
                r, g, b, alpha = _colour(a["score"], top)
                # Blend towards the terminal's dark background by the attribution's strength.
                shade = f"rgb({int(r * alpha)},{int(g * alpha)},{int(b * alpha)})"
                line.append(a["token"], style=f"bold white on {shade}")
                line.append(" ")
            parts.append(line)
            continue
        for a in attr:
            label = f"step {a['step']}" if "step" in a else str(a["value"])
            rows.append((name, label, a["score"]))
    if rows:
        table = Table("column", "value", "attribution")
        for name, label, score in rows:
            table.add_row(name, label, f"[{'green' if score >= 0 else 'red'}]{score:+.4f}[/]")
        parts.append(table)
    parts.append(Text(_summary(result)))
    if "reference" in result:
        parts.append(Text(f"reference: {result['reference']}"))
    if "note" in result:
        parts.append(Text(f"note: {result['note']}", style="yellow"))
    return Group(*parts)


def render_html(result: dict[str, Any]) -> str:
    """A self-contained HTML page: highlighted tokens, image heat maps, a table for the rest."""
    import html

    esc = html.escape
    method = result.get("method", INTEGRATED_GRADIENTS)
    title = ("Integrated Gradients" if method == INTEGRATED_GRADIENTS
             else method[:1].upper() + method[1:])
    body = [f"<h1>{esc(title)}</h1><p><b>prediction</b> {esc(str(result['prediction']))}"
            f" &middot; <b>explaining</b> {esc(result['explains'])}</p>"]
    table = []
    for name, attr in result["attributions"].items():
        if isinstance(attr, dict):
            body.append(f"<h2>{esc(name)}</h2><img alt='attributions' src='data:image/png;base64,"
                        f"{_heatmap_png(np.asarray(attr['scores']))}'>")
            continue
        if attr and "token" in attr[0]:
            top = max(abs(a["score"]) for a in attr) or 1.0
            spans = []
            for a in attr:
                r, g, b, alpha = _colour(a["score"], top)
                spans.append(f"<span title='{a['score']:+.4f}' style='background:rgba({r},{g},"
                             f"{b},{alpha:.2f})'>{esc(a['token'])}</span>")
            body.append(f"<h2>{esc(name)}</h2><p class='tokens'>{' '.join(spans)}</p>")
            continue
        for a in attr:
            label = f"step {a['step']}" if "step" in a else str(a["value"])
            table.append(f"<tr><td>{esc(name)}</td><td>{esc(label)}</td>"
                         f"<td>{a['score']:+.4f}</td></tr>")
    if table:
        body.append("<table><tr><th>column</th><th>value</th><th>attribution</th></tr>"
                    + "".join(table) + "</table>")
    reference = f" Reference: {esc(result['reference'])}." if "reference" in result else ""
    body.append(f"<p>{esc(_summary(result))}.{reference} Green: evidence for the explained "
                "output; red: against.</p>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}"
             ".tokens{font-size:1.3em;line-height:2}.tokens span{padding:0.1em 0.2em;"
             "border-radius:0.2em}td,th{padding:0.2em 1em;text-align:left}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>dlforge explain</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def _heatmap_png(scores: np.ndarray) -> str:
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = float(np.abs(scores).max()) or 1.0
    fig, ax = plt.subplots(figsize=(3, 3))
    im = ax.imshow(scores, cmap="RdYlGn", vmin=-top, vmax=top)
    ax.axis("off")
    fig.colorbar(im, ax=ax, fraction=0.046)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")
