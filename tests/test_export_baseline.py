"""The strong simple baseline exported to ONNX like every other run: a baseline run's graph
(text: TF-IDF + LR; tables: gradient boosting with a native category), a blended run's two
graphs, each verified against scikit-learn and served by ``--backend onnx`` with the
predictions of ``dlforge predict``; a setting ONNX cannot reproduce is one line."""

from __future__ import annotations

import copy
import json

import httpx
import numpy as np
import pandas as pd
import pytest

from dlforge import TabularClassifier, TabularRegressor, TextClassifier, load
from dlforge.errors import ConfigError
from dlforge.run import update_run
from dlforge.serve.app import ServedModel, ServeSettings
from dlforge.serve.export import BLEND, export_onnx
from dlforge.serve.export_simple import baseline_onnx
from dlforge.testing import toy_texts
from tests.serving import Server
from tests.test_cli import assert_user_error, run_cli
from tests.test_kinds import credit_table


@pytest.fixture(autouse=True)
def one_openmp_thread():
    """One OpenMP thread for the gradient-boosted trees: on a shared 2-core machine two make
    a 200-row fit take from 0.1 s to over 20 s (each split waits for the other thread)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="openmp"):
        yield


UNSEEN = ["GOOD movie, REALLY!", "zzz qqq unseen words", "Émile's café\tnaïve"]


def assert_same(served: list[dict], labels: list, proba: np.ndarray | None = None,
                abs_: float = 1e-6) -> None:
    """Served predictions equal these labels and probabilities (classes in order)."""
    assert [p["label"] for p in served] == list(labels)
    if proba is not None:
        got = [list(p["probabilities"].values()) for p in served]
        assert np.asarray(got) == pytest.approx(proba, abs=abs_)


def table_rows(X) -> list[dict]:
    """Request instances: rows of ``X`` (None for missing) and an unseen and a missing
    category, a missing number."""
    head = X.head(10).astype(object)
    rows = head.where(head.notna(), None).to_dict("records")
    return rows + [{"income": None, "debt": 25.0, "purpose": "boat"},
                   {"income": 60.0, "debt": 5.0, "purpose": None}]


def test_a_baseline_text_run_exports_and_serves_through_onnx(tmp_path, capsys):
    import onnxruntime as ort

    texts, labels = toy_texts(160)
    clf = TextClassifier(model="baseline", verbose=0).fit(texts, labels)
    run = clf.save(tmp_path / "base")
    code, out, err = run_cli(capsys, "export", run)
    assert code == 0, err
    assert "onnxruntime matches scikit-learn" in out
    info = json.loads((tmp_path / "base.onnx.json").read_text())
    assert info["inputs"] == [{"name": "text", "kind": "text", "shape": ["batch", 1],
                               "dtype": "string"}]
    assert info["max_abs_difference"] <= 1e-4 and "blend" not in info
    assert info["lowercase_locale"] in ("C.UTF-8", "en_US.UTF-8")
    # The graph takes raw text and gives SimpleModel.logits (batch 23, then 1).
    sess = ort.InferenceSession(str(tmp_path / "base.onnx"), providers=["CPUExecutionProvider"])
    for sample in (texts[:20] + UNSEEN, UNSEEN[:1]):
        got = sess.run(["logits"], {"text": np.array(sample, dtype=object).reshape(-1, 1)})[0]
        assert got == pytest.approx(clf.simple_.logits({"text": sample}), abs=1e-5)
    with Server([ServedModel(run, "base", "onnx")], ServeSettings(max_delay_ms=2)) as srv:
        r = httpx.post(f"{srv.url}/v1/models/base/predict",
                       json={"instances": [{"text": t} for t in texts[:12] + UNSEEN]})
    assert r.status_code == 200, r.text
    assert_same(r.json()["predictions"], clf.predict(texts[:12] + UNSEEN),
                clf.predict_proba(texts[:12] + UNSEEN))


def test_baseline_tables_with_a_category_export_and_serve_alike(tmp_path):
    import onnx

    df = credit_table(200)
    X = df.drop(columns="default")
    rows = table_rows(X)
    clf = TabularClassifier(model="baseline", verbose=0).fit(X, df["default"])
    info = export_onnx(clf.save(tmp_path / "credit"))
    assert [(i["name"], i["dtype"]) for i in info["inputs"]] == [
        ("income", "float64"), ("debt", "float64"), ("purpose", "string")]
    assert info["max_abs_difference"] <= 1e-4
    trees = [n for n in onnx.load(tmp_path / "credit.onnx").graph.node
             if n.op_type == "TreeEnsemble"]
    assert "membership_values" in [a.name for a in trees[0].attribute]  # category splits
    served = ServedModel(tmp_path / "credit", backend="onnx").predict(rows)
    frame = pd.DataFrame(rows)
    assert_same(served, clf.predict(frame), clf.predict_proba(frame))

    y = X["debt"] * 2 + (X["purpose"] == "car") * 5
    reg = TabularRegressor(model="baseline", verbose=0).fit(X, y)
    info = export_onnx(reg.save(tmp_path / "debt"))
    assert info["max_abs_difference"] <= 1e-4
    served = ServedModel(tmp_path / "debt", backend="onnx").predict(rows)
    assert [p["prediction"] for p in served] == pytest.approx(reg.predict(frame), rel=1e-6)


def test_a_blended_run_exports_both_graphs_and_serves_the_blend(tmp_path, capsys):
    texts, labels = toy_texts(300, classes=3)
    # baseline_weight left at auto: a network this weak gets the baseline blended in.
    clf = TextClassifier(model="cnn", d_model=16, epochs=1, lr=1e-7, verbose=0).fit(
        texts, labels)
    w = clf.config_.train.baseline_weight
    assert 0 < w < 1 and clf.simple_ is not None
    run = clf.save(tmp_path / "blend")
    code, out, err = run_cli(capsys, "export", run)
    assert code == 0, err
    assert "onnxruntime matches PyTorch" in out and "blend.baseline.onnx" in out
    info = json.loads((tmp_path / "blend.onnx.json").read_text())
    assert [i["name"] for i in info["inputs"]] == ["text", "text_mask"]
    assert info["blend"] == {"baseline_weight": w, "logits": BLEND["category"]}
    assert info["baseline"]["model"] == "blend.baseline.onnx"
    assert info["baseline"]["max_abs_difference"] <= 1e-4
    assert (tmp_path / "blend.baseline.onnx").is_file()
    sample = texts[:12] + UNSEEN
    served = ServedModel(run, backend="onnx").predict([{"text": t} for t in sample])
    assert_same(served, clf.predict(sample), clf.predict_proba(sample), abs_=1e-4)


def test_a_blended_table_regressor_serves_the_blend_through_onnx(tmp_path):
    df = credit_table(200)
    X = df.drop(columns="default")
    y = X["debt"] * 2 + (X["purpose"] == "car") * 5
    reg = TabularRegressor(hidden=[8], epochs=1, baseline_weight="0.5", precision="fp32",
                           verbose=0).fit(X, y)
    run = reg.save(tmp_path / "debt")
    info = export_onnx(run)
    assert info["blend"] == {"baseline_weight": 0.5, "logits": BLEND["numeric"]}
    rows = table_rows(X)
    frame = pd.DataFrame(rows)
    served = ServedModel(run, backend="onnx").predict(rows)
    assert [p["prediction"] for p in served] == pytest.approx(reg.predict(frame), rel=1e-4,
                                                               abs=1e-4)


def test_a_setting_onnx_cannot_reproduce_is_refused_in_one_line(tmp_path, capsys):
    texts, labels = toy_texts(60)
    run = TextClassifier(model="baseline", verbose=0).fit(texts, labels).save(tmp_path / "run")
    simple = load(run).simple_
    for part, setting, says in (("text_words", {"token_pattern": r"\w{3,}"}, "token_pattern"),
                                ("text_chars", {"analyzer": "char"}, "analyzer='char'"),
                                ("text_chars", {"ngram_range": (1, 4)}, "n-grams from 1")):
        changed = copy.deepcopy(simple)
        changed.pipeline.steps[0][1].named_transformers_[part].set_params(**setting)
        with pytest.raises(ConfigError, match=f"its TF-IDF '{part}' .*{says}"):
            baseline_onnx(changed)

    def strip_accents(folder):  # a baseline scikit-learn predicts with and ONNX cannot
        simple.pipeline.steps[0][1].named_transformers_["text_words"].set_params(
            strip_accents="unicode")
        (folder / "model.skops").unlink()  # hard-linked: replace, never write in place
        simple.save(folder / "model.skops")

    update_run(run, strip_accents)
    code, _, err = run_cli(capsys, "export", run)
    assert_user_error(code, err, "the simple baseline (TF-IDF + LR) has no faithful ONNX form",
                      "its TF-IDF 'text_words' strips accents ('unicode')", "torch backend")
    assert not (tmp_path / "run.onnx").exists()
    with pytest.raises(ConfigError, match="strips accents"):
        ServedModel(run, backend="onnx")
