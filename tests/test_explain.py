"""Integrated Gradients explanations (Captum) and the simple baseline's baseline Shapley values:
completeness, the CLI, the server's function."""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from dlforge import (
    DataError,
    DlforgeError,
    Forecaster,
    ImageClassifier,
    SequenceModel,
    TabularClassifier,
    TabularRegressor,
    TextClassifier,
    explain,
    load,
)
from dlforge.audit.explain import explain_instances, render_html
from dlforge.testing import toy_texts
from tests.test_cli import assert_user_error, run_cli

FAST = dict(epochs=3, batch_size=16, lr=1e-2, patience=0, verbose=0, precision="fp32")


pytestmark = pytest.mark.usefixtures("one_thread")

def _table(n: int = 80) -> tuple[pd.DataFrame, list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                      "c": rng.choice(["red", "green", "blue"], size=n)})
    y = X["a"].to_numpy() * 2 + (X["c"] == "red") + rng.normal(scale=0.1, size=n)
    return X, ["yes" if v > 0 else "no" for v in y], y


@functools.cache
def _fitted(family: str) -> tuple[Any, dict[str, Any]]:
    """(fitted estimator, an instance to explain) for a tiny model of ``family`` (fitted once
    per session)."""
    rng = np.random.default_rng(0)
    texts, labels = toy_texts(80, seed=1, classes=3)
    if family.startswith("text-"):
        model = family.removeprefix("text-")
        extra = {"heads": 2} if model == "transformer" else {}
        clf = TextClassifier(model, vocab_size=300, max_length=12, d_model=8, **extra,
                             **FAST).fit(texts, labels)
        return clf, {"text": "the movie was lovely and quick"}
    if family == "image-cnn":
        d = load_digits()
        clf = ImageClassifier(channels=[4, 8], **FAST).fit(d.images[:80], d.target[:80])
        return clf, {"image": d.images[100]}
    if family == "sequence-rnn":
        X = [rng.normal(size=(int(rng.integers(3, 10)), 2)).astype(np.float32) for _ in range(60)]
        y = ["up" if x[:, 0].mean() > 0 else "down" for x in X]
        clf = SequenceModel("rnn", d_model=8, max_length=10, **FAST).fit(X, y)
        return clf, {"sequence": X[0]}
    X, labels, y = _table()
    row = {"a": 1.5, "b": -0.2, "c": "red"}
    if family == "mixed":  # text + numeric + category: one attribution layer per column
        X["review"] = texts
        clf = TabularClassifier("cnn", text=["review"], **FAST).fit(X, labels)
        return clf, {**row, "review": "the movie was lovely"}
    if family == "table-regression":
        return TabularRegressor(hidden=[8], **FAST).fit(X, y), row
    return TabularClassifier(hidden=[8], **FAST).fit(X, labels), row


@pytest.mark.parametrize("family", ["text-transformer", "text-cnn", "text-rnn", "image-cnn",
                                    "sequence-rnn", "table-mlp", "table-regression", "mixed"])
def test_attributions_add_up_to_the_change_in_output(family):
    """Completeness: sum of attributions == f(x) - f(baseline), within the quadrature error."""
    clf, instance = _fitted(family)
    result = explain_instances(clf, [instance])[0]  # steps doubled until within 1%
    gap = result["output"] - result["baseline_output"]
    assert result["attribution_sum"] == pytest.approx(gap, abs=2e-3 + 0.02 * abs(gap))
    assert result["convergence_delta"] <= 2e-3 + 0.02 * abs(gap)
    # f(x) is the model's own output for the instance, as predict computes it.
    logits = clf._logits_frame(pd.DataFrame({k: pd.Series([v], dtype=object)
                                             for k, v in instance.items()}))
    if clf.labels_.kind == "numeric":
        assert result["output"] == pytest.approx(float(clf.predict(pd.DataFrame([instance]))[0]),
                                                 abs=1e-4)
    else:
        index = 0 if clf.labels_.kind == "binary" else int(np.argmax(logits[0]))
        assert result["output"] == pytest.approx(float(logits[0, index]), abs=1e-4)
    json.dumps(result)  # plain JSON for the server


def test_baseline_of_text_is_all_padding_with_the_same_mask():
    clf, instance = _fitted("text-cnn")
    result = explain(clf, text=instance["text"], steps=20)
    ids = clf.features_["text"].encode([instance["text"]])[0]
    assert [a["token"] for a in result["attributions"]["text"]] == [
        clf.tokenizer_.tokenizer.decode([i]).strip() for i in ids]
    logits = clf._logits_frame(pd.DataFrame({"text": [instance["text"]]}))[0]
    batch = {"text": {"input_ids": torch.zeros((1, len(ids)), dtype=torch.long),
                      "attention_mask": torch.ones((1, len(ids)), dtype=torch.bool)}}
    with torch.no_grad():
        base = clf.model_(batch)[0, int(np.argmax(logits))]
    assert result["baseline_output"] == pytest.approx(float(base), abs=1e-5)


def test_the_cue_word_carries_the_decision(trained_run):
    run, _ = trained_run
    # Filler words of the training texts around one cue ("long" shares its piece "lo" with
    # the cue "lovely", so a sentence with it tests the tokenizer, not the explanation).
    result = explain(run, text="the plot was really great and it was quite so")
    scores = {a["token"]: a["score"] for a in result["attributions"]["review"]}
    top = max(scores, key=lambda t: abs(scores[t]))
    assert top in "great" and scores[top] > 0  # for 'pos' (a piece of the word, or all of it)
    assert result["explains"].startswith("the logit of class 'pos'")


def test_explaining_leaves_the_model_untouched(trained_run):
    run, _ = trained_run
    model = load(run)
    before = model.predict_proba(["a lovely movie", "awful plot"])
    explain_instances(model, [{"review": "a lovely movie"}, {"review": "awful plot"}], steps=8)
    assert np.array_equal(model.predict_proba(["a lovely movie", "awful plot"]), before)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.model_.modules())


def test_explain_cli_prints_colour_and_writes_html(trained_run, tmp_path, capsys):
    run, _ = trained_run
    page = tmp_path / "why.html"
    code, out, err = run_cli(capsys, "explain", run, "--text", "a lovely plot", "--html", page,
                             "--steps", "50")
    assert code == 0, err
    assert "convergence delta" in out and "prediction" in out
    html = page.read_text()
    assert html.startswith("<!doctype html>") and "vely" in html and "rgba(" in html
    code, out, err = run_cli(capsys, "explain", run, "--text", "a lovely plot", "--json",
                             "--target", "neg", "--steps", "20")
    assert code == 0, err
    result = json.loads(out)
    assert result["steps"] == 20 and "review" in result["attributions"]


def test_explain_an_image_file_and_a_table_row_from_the_cli(tmp_path, capsys):
    d = load_digits()
    pixels = (d.images * 255 / 16).astype(np.uint8)  # as image files hold them
    clf = ImageClassifier(channels=[4, 8], **FAST).fit(pixels[:80], d.target[:80])
    clf.save(tmp_path / "digits")
    img = tmp_path / "seven.png"
    Image.fromarray(pixels[7], mode="L").save(img)
    code, out, err = run_cli(capsys, "explain", tmp_path / "digits", "--image", img, "--json",
                             "--target", "7", "--html", tmp_path / "d.html")
    assert code == 0, err
    attr = json.loads(out)["attributions"]["image"]
    assert attr["shape"] == [8, 8] and len(attr["scores"]) == 8
    assert "data:image/png;base64," in (tmp_path / "d.html").read_text()

    X, labels, _ = _table()
    TabularClassifier(hidden=[8], **FAST).fit(X, labels).save(tmp_path / "table")
    code, out, err = run_cli(capsys, "explain", tmp_path / "table", "--row",
                             '{"a": 1.5, "b": null, "c": "purple"}')
    assert code == 0, err
    assert "<unknown>" in out and "attribution" in out


def test_render_html_escapes_tokens():
    result = {"prediction": "x", "explains": "y", "output": 1.0, "baseline_output": 0.0,
              "attribution_sum": 1.0, "convergence_delta": 0.0, "steps": 2,
              "attributions": {"t": [{"token": "<script>", "score": 1.0}]}}
    assert "<script>" not in render_html(result) and "&lt;script&gt;" in render_html(result)


# ------------------------------------------------------------------ the simple baseline
@functools.cache
def _baseline(family: str) -> Any:
    """A fitted simple-baseline run of ``family`` (fitted once per session)."""
    if family == "text-binary":
        return TextClassifier(model="baseline", verbose=0).fit(*toy_texts(120, seed=1))
    if family == "text-3":
        return TextClassifier(model="baseline", verbose=0).fit(*toy_texts(150, seed=1,
                                                                          classes=3))
    X, _, y = _table(200)  # y: 2a + (c == red) + noise; b is noise
    return TabularRegressor(model="baseline", verbose=0).fit(X, y)


def _text_logits(clf: Any, text: str) -> np.ndarray:
    return clf._logits_frame(pd.DataFrame({"text": [text]}))[0]


def test_a_baseline_text_run_gets_shapley_values_per_token():
    clf = _baseline("text-binary")
    text = "the movie was really great and it was quite so"  # 10 tokens: sampled
    result = explain(clf, text=text)
    assert result["method"] == "baseline Shapley values (sampled)" and result["steps"] == 25
    scores = [(a["token"], a["score"]) for a in result["attributions"]["text"]]
    assert [t for t, _ in scores] == text.split()
    top = max(scores, key=lambda ts: abs(ts[1]))
    assert top[0] == "great" and top[1] > 0  # the cue word, for 'pos'
    assert result["explains"] == "the logit of class 'pos' (against 'neg')"
    # Completeness: the attributions add up to f(x) - f(every token removed).
    assert result["output"] == pytest.approx(float(_text_logits(clf, text)[0]), abs=1e-5)
    assert result["baseline_output"] == pytest.approx(float(_text_logits(clf, "")[0]), abs=1e-5)
    gap = result["output"] - result["baseline_output"]
    assert result["attribution_sum"] == pytest.approx(gap, abs=1e-5)
    assert result["convergence_delta"] < 1e-5
    assert explain(clf, text=text) == result  # seeded: the same permutations every time
    json.dumps(result)
    assert "Baseline Shapley values (sampled)" in render_html(result)


def test_a_short_text_gets_exact_shapley_values():
    clf = _baseline("text-binary")
    text = "a plot, lovely!"  # 5 tokens (punctuation too): every one of the 120 permutations
    exact = explain(clf, text=text)
    assert exact["method"] == "baseline Shapley values (exact)" and exact["steps"] == 120
    assert [a["token"] for a in exact["attributions"]["text"]] == ["a", "plot", ",", "lovely",
                                                                   "!"]
    assert exact["output"] == pytest.approx(float(_text_logits(clf, text)[0]), abs=1e-5)
    gap = exact["output"] - exact["baseline_output"]
    assert exact["attribution_sum"] == pytest.approx(gap, abs=1e-5)
    scores = {a["token"]: a["score"] for a in exact["attributions"]["text"]}
    assert max(scores, key=lambda t: abs(scores[t])) == "lovely" and scores["lovely"] > 0
    # Two tokens, by hand: each one's mean gain over the two orders of adding them.
    f = {t: float(_text_logits(clf, t)[0]) for t in ("", "a", "lovely", "a lovely")}
    two = {a["token"]: a["score"] for a in explain(clf, text="a lovely")["attributions"]["text"]}
    assert two["lovely"] == pytest.approx(
        (f["lovely"] - f[""] + f["a lovely"] - f["a"]) / 2, abs=1e-5)
    assert two["a"] == pytest.approx((f["a"] - f[""] + f["a lovely"] - f["lovely"]) / 2, abs=1e-5)


def test_a_multiclass_baseline_run_explains_the_log_probability_of_a_class():
    clf = _baseline("text-3")
    text = "it was a really strange movie and so quite the plot"
    result = explain(clf, text=text)
    assert result["prediction"] == "odd"
    assert result["explains"] == "the log-probability of class 'odd'"
    logits = _text_logits(clf, text)
    assert result["output"] == pytest.approx(float(logits[clf.classes_.tolist().index("odd")]),
                                             abs=1e-5)
    gap = result["output"] - result["baseline_output"]
    assert result["attribution_sum"] == pytest.approx(gap, abs=1e-5)
    scores = {a["token"]: a["score"] for a in result["attributions"]["text"]}
    assert max(scores, key=lambda t: abs(scores[t])) == "strange" and scores["strange"] > 0
    other = explain(clf, text=text, target="pos")
    assert other["explains"] == "the log-probability of class 'pos'"
    assert other["output"] == pytest.approx(float(logits[clf.classes_.tolist().index("pos")]),
                                            abs=1e-5)
    assert {a["token"]: a["score"] for a in other["attributions"]["text"]}["strange"] < 0


def test_a_table_baseline_run_credits_the_informative_column():
    reg = _baseline("table")  # gradient-boosted trees
    X, _, _ = _table(200)
    row = {"a": 1.5, "b": -0.2, "c": "blue"}
    result = explain(reg, row=row)
    assert result["method"] == "baseline Shapley values (exact)" and result["steps"] == 6
    attrs = {name: a[0] for name, a in result["attributions"].items()}
    assert [attrs["a"]["value"], attrs["b"]["value"], attrs["c"]["value"]] == [1.5, -0.2, "blue"]
    # The reference of a number: its training median (as the trees' bins hold it).
    assert attrs["a"]["reference"] == pytest.approx(float(np.median(X["a"][:140])), abs=0.1)
    top = max(attrs, key=lambda c: abs(attrs[c]["score"]))
    assert top == "a" and attrs["a"]["score"] > 1.5  # about 2 * (1.5 - median), in y's units
    # In the output's units: f(x) is the prediction; the attributions add up to the change.
    assert result["output"] == pytest.approx(float(reg.predict(pd.DataFrame([row]))[0]),
                                             abs=1e-4)
    gap = result["output"] - result["baseline_output"]
    assert result["attribution_sum"] == pytest.approx(gap, abs=1e-4)
    # Missing values: credited for being missing rather than at the reference (the trees
    # route a missing number apart from the median; a missing category is its own reference).
    missing = explain(reg, row={"a": None, "b": -0.2, "c": None})
    assert missing["attributions"]["a"][0]["value"] is None
    assert missing["attributions"]["c"][0] == {"value": "<missing>", "score": 0.0}
    gap = missing["output"] - missing["baseline_output"]
    assert missing["attribution_sum"] == pytest.approx(gap, abs=1e-4)


def test_a_mixed_baseline_run_attributes_tokens_numbers_and_categories():
    X, labels, _ = _table()
    X["review"], _ = toy_texts(80, seed=1)
    clf = TabularClassifier(model="baseline", text=["review"], verbose=0).fit(X, labels)
    row = {"a": 1.5, "b": None, "c": "red", "review": "the movie was lovely"}
    result = explain(clf, row=row)
    attrs = result["attributions"]
    assert list(attrs) == ["a", "b", "c", "review"] and len(attrs["review"]) == 4
    assert result["method"] == "baseline Shapley values (sampled)"  # 3 columns + 4 tokens
    gap = result["output"] - result["baseline_output"]
    assert result["attribution_sum"] == pytest.approx(gap, abs=1e-5)
    # The linear baseline imputes a missing number with the training median, the reference.
    assert attrs["b"][0]["value"] is None and attrs["b"][0]["score"] == pytest.approx(0, abs=1e-9)
    assert attrs["a"][0]["score"] > 0  # a drives 'yes'


def test_explain_cli_on_a_baseline_run(tmp_path, capsys):
    from dlforge.cli import main

    texts, labels = toy_texts(120, seed=1)
    csv = tmp_path / "toy.csv"
    pd.DataFrame({"review": texts, "sentiment": labels}).to_csv(csv, index=False)
    run = tmp_path / "run"
    assert main(["train", "--data", str(csv), "--text", "review", "--label", "sentiment",
                 "--model", "baseline", "--out", str(run), "--quiet"]) == 0
    page = tmp_path / "why.html"
    code, out, err = run_cli(capsys, "explain", run, "--text", "the plot was really great",
                             "--html", page)
    assert code == 0, err
    flat = " ".join(out.split())  # the terminal wraps long lines
    assert "baseline Shapley values (exact) over all 120 permutations" in flat
    assert "prediction" in flat and "reference: each token removed" in flat
    assert "Baseline Shapley values (exact)" in page.read_text()
    code, out, err = run_cli(capsys, "explain", run, "--text",
                             "it was a really lovely and quick plot", "--json", "--steps", "40")
    assert code == 0, err
    result = json.loads(out)
    assert result["method"] == "baseline Shapley values (sampled)" and result["steps"] == 40
    assert len(result["attributions"]["review"]) == 8


# ------------------------------------------------------------------------------ bad inputs
def test_explain_bad_inputs(trained_run, tmp_path, capsys):
    run, _ = trained_run
    code, _, err = run_cli(capsys, "explain", run)
    assert_user_error(code, err, "give the instance to explain", "review (text)")
    code, _, err = run_cli(capsys, "explain", run, "--image", "x.png")
    assert_user_error(code, err, "--image: this run has no image input", "review (text)")
    code, _, err = run_cli(capsys, "explain", run, "--row", "{not json")
    assert_user_error(code, err, "--row: not valid JSON")
    code, _, err = run_cli(capsys, "explain", run, "--row", "[1, 2]")
    assert_user_error(code, err, "--row: expected a JSON object")
    code, _, err = run_cli(capsys, "explain", run, "--row", '{"text": "hi"}')
    assert_user_error(code, err, "column 'review' is missing")
    code, _, err = run_cli(capsys, "explain", run, "--text", "hi", "--target", "maybe")
    assert_user_error(code, err, "target: 'maybe' is not a class", "neg, pos")
    code, _, err = run_cli(capsys, "explain", run, "--text", "hi", "--steps", "1")
    assert_user_error(code, err, "steps must be")
    page = tmp_path / "never.html"
    code, _, err = run_cli(capsys, "explain", run, "--text", "hi", "--target", "x", "--html",
                           page)
    assert code == 2 and not page.exists()
    with pytest.raises(DataError, match="expected a list of objects"):
        explain_instances(load(run), ["just a string"])  # type: ignore[list-item]


def test_a_forecasting_run_has_no_supported_attribution(tmp_path, capsys):
    df = pd.DataFrame({"y": np.sin(np.arange(80) / 3)})
    Forecaster(window=6, horizon=2, epochs=1, verbose=0).fit(df, "y").save(tmp_path / "fc")
    code, _, err = run_cli(capsys, "explain", tmp_path / "fc", "--row", '{"y": 1}')
    assert_user_error(code, err, "forecasting runs have no supported attribution")
    with pytest.raises(DlforgeError, match="no supported attribution"):
        explain(tmp_path / "fc", row={"y": 1.0})
    with pytest.raises(DlforgeError, match="str models have no supported attribution"):
        explain_instances("not a model", [{"y": 1.0}])  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """The tiny random BERT folder of tests/test_pretrained.py."""
    import transformers

    from tests.test_pretrained import _bert_config, _save_tokenizer

    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    transformers.BertModel(_bert_config()).save_pretrained(str(folder))
    _save_tokenizer(folder)
    return folder


def test_a_pretrained_encoder_is_explained_through_its_word_embeddings(tiny_bert):
    from tests.test_pretrained import _toy_reviews

    bert_dir = tiny_bert
    texts, labels = _toy_reviews(40)
    clf = TextClassifier(model=str(bert_dir), pooling="mean", max_length=16, epochs=1,
                         batch_size=16, lr=3e-3, patience=0, verbose=0,
                         precision="fp32").fit(texts, labels)
    result = explain(clf, text="the movie was great")
    tokens = [a["token"] for a in result["attributions"]["text"]]
    assert tokens == ["[CLS]", "the", "movie", "was", "great", "[SEP]"]
    gap = result["output"] - result["baseline_output"]
    assert result["attribution_sum"] == pytest.approx(gap, abs=2e-3 + 0.02 * abs(gap))
