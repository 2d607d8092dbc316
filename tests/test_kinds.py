"""Images, tables and mixed inputs: each through the Python API and the CLI, with its bad
inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from dlforge import ImageClassifier, TabularClassifier, TabularRegressor, load
from dlforge.errors import ConfigError, DataError
from tests.test_cli import _assert_nothing_written, assert_user_error, run_cli

FAST = dict(epochs=4, batch_size=32, lr=3e-3, patience=0, verbose=0, precision="fp32")
TINY_CNN = dict(channels=[8, 16], dropout=0.0, **FAST)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    return d.images[:600], d.target[:600]


def write_digit_folder(root: Path, images: np.ndarray, labels: np.ndarray,
                       classes: tuple[int, ...] = (0, 1, 2), per_class: int = 25) -> Path:
    for c in classes:
        (root / f"digit{c}").mkdir(parents=True, exist_ok=True)
        rows = np.flatnonzero(labels == c)[:per_class]
        for i in rows:
            img = (images[i] * 255 / 16).astype(np.uint8)
            Image.fromarray(img, mode="L").resize((16, 16)).save(root / f"digit{c}" / f"{i}.png")
    return root


# ------------------------------------------------------------------------------------ images
def test_image_classifier_on_digits_saves_and_loads(digits, tmp_path):
    X, y = digits
    clf = ImageClassifier(**{**TINY_CNN, "epochs": 8}).fit(X, y)
    assert clf.metrics_["task"] == "image classification"
    assert clf.metrics_["validation"]["accuracy"] >= 0.9
    assert clf.metrics_["validation"]["accuracy"] > clf.metrics_["validation"]["baseline"][
        "accuracy"]
    proba = clf.predict_proba(X[:10])
    assert proba.shape == (10, 10) and np.allclose(proba.sum(axis=1), 1)
    clf.save(tmp_path / "run")
    again = load(tmp_path / "run")
    assert type(again) is ImageClassifier
    assert np.array_equal(again.predict_proba(X[:50]), clf.predict_proba(X[:50]))
    m = again.evaluate(X[:100], y[:100])
    assert m["accuracy"] >= 0.85 and len(m["confusion_matrix"]) == 10
    state = again.features_["image"].state()
    assert state["shape"] == [1, 8, 8] and len(state["mean"]) == 1  # fitted on training rows


def test_image_augmentation_is_seeded_and_training_only(digits):
    X, y = digits
    params = {**TINY_CNN, "epochs": 2, "augment": {"crop": 1, "flip": 0.5, "rotate": 10,
                                                   "noise": 0.05}}
    a = ImageClassifier(**params).fit(X, y)
    b = ImageClassifier(**params).fit(X, y)
    plain = ImageClassifier(**{**params, "augment": None}).fit(X, y)
    assert [r["train_loss"] for r in a.history_] == [r["train_loss"] for r in b.history_]
    assert [r["train_loss"] for r in a.history_] != [r["train_loss"] for r in plain.history_]
    assert np.array_equal(a.predict_proba(X[:20]), a.predict_proba(X[:20]))


def test_image_folder_from_the_cli(digits, tmp_path, capsys):
    X, y = digits
    folder = write_digit_folder(tmp_path / "imgs", X, y)
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--data", folder, "--kind", "image", "--channels",
                             "8,16", "--epochs", "6", "--lr", "3e-3", "--batch-size", "16",
                             "--precision", "fp32", "--augment-flip", "0.5", "--quiet",
                             "--out", run)
    assert code == 0, err
    model = load(run)
    assert list(model.classes_) == ["digit0", "digit1", "digit2"]
    assert model.metrics_["validation"]["accuracy"] >= 0.8
    code, out, err = run_cli(capsys, "evaluate", run, "--data", folder, "--json")
    assert code == 0 and '"accuracy"' in out
    code, out, err = run_cli(capsys, "predict", run, "--data", folder / "digit1", "--out",
                             tmp_path / "pred.csv")
    assert code == 0, err
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert len(pred) == 25 and (pred["prediction"] == "digit1").mean() >= 0.8
    assert pred["image"].str.endswith(".png").all()


def test_image_paths_in_a_table_are_relative_to_it(digits, tmp_path, capsys):
    X, y = digits
    folder = write_digit_folder(tmp_path / "imgs", X, y, classes=(3, 4), per_class=20)
    rows = [{"file": p.relative_to(tmp_path).as_posix(), "label": p.parent.name}
            for p in sorted(folder.rglob("*.png"))]
    pd.DataFrame(rows).to_csv(tmp_path / "images.csv", index=False)
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "images.csv", "--image", "file",
                           "--label", "label", "--channels", "4", "--epochs", "1",
                           "--precision", "fp32", "--quiet", "--out", tmp_path / "run")
    assert code == 0, err


def test_image_bad_inputs(digits, tmp_path, capsys):
    X, y = digits
    # A folder with no class sub-folders.
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(flat / "a.png")
    code, _, err = run_cli(capsys, "train", "--data", flat, "--kind", "image", "--quiet",
                           "--out", tmp_path / "r1")
    assert_user_error(code, err, "flat", "no class sub-folders")
    _assert_nothing_written(tmp_path / "r1")
    # An unreadable image: named.
    folder = write_digit_folder(tmp_path / "imgs", X, y, classes=(0, 1), per_class=5)
    (folder / "digit0" / "broken.png").write_bytes(b"not a png at all")
    code, _, err = run_cli(capsys, "train", "--data", folder, "--kind", "image", "--quiet",
                           "--out", tmp_path / "r2")
    assert_user_error(code, err, "broken.png", "not a readable image")
    _assert_nothing_written(tmp_path / "r2")
    # Different sizes without a resize setting; fine with --image-size.
    (folder / "digit0" / "broken.png").unlink()
    Image.fromarray(np.zeros((12, 9), np.uint8)).save(folder / "digit1" / "odd.png")
    code, _, err = run_cli(capsys, "train", "--data", folder, "--kind", "image", "--quiet",
                           "--out", tmp_path / "r3")
    assert_user_error(code, err, "odd.png", "9x12".replace("9x12", "12x9"), "--image-size")
    _assert_nothing_written(tmp_path / "r3")
    code, _, err = run_cli(capsys, "train", "--data", folder, "--kind", "image",
                           "--image-size", "8x8", "--channels", "4", "--epochs", "1",
                           "--quiet", "--out", tmp_path / "r4")
    assert code == 0, err
    # Python: labels missing, wrong shape.
    with pytest.raises(DataError, match="labels are required"):
        ImageClassifier(**TINY_CNN).fit(X)
    with pytest.raises(DataError, match=r"shape \(N, H, W\)"):
        ImageClassifier(**TINY_CNN).fit(X[:, 0, 0], y)


def test_family_must_fit_the_input_kind(digits, tmp_path, capsys):
    X, y = digits
    with pytest.raises(ConfigError, match="'rnn' does not fit image inputs; families that fit "
                                          "image inputs: cnn"):
        ImageClassifier(model="rnn").fit(X, y)
    df = credit_table(100)
    df.to_csv(tmp_path / "t.csv", index=False)
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "t.csv", "--kind", "table",
                           "--label", "default", "--model", "rnn", "--out", tmp_path / "r")
    assert_user_error(code, err, "'rnn' does not fit table inputs", "families that fit table "
                      "inputs: mlp")
    _assert_nothing_written(tmp_path / "r")


# ------------------------------------------------------------------------------------ tables
def credit_table(n: int, seed: int = 0) -> pd.DataFrame:
    """A synthetic credit table: default depends on income, debt and the loan purpose;
    income has missing values."""
    rng = np.random.default_rng(seed)
    income = rng.normal(50, 15, n)
    debt = rng.normal(20, 8, n)
    purpose = rng.choice(["car", "home", "holiday"], n)
    risk = (debt - 0.4 * income) / 5 + np.where(purpose == "holiday", 1.5, 0.0)
    default = np.where(risk + rng.normal(0, 0.3, n) > 0, "yes", "no")
    income_seen = income.copy()
    income_seen[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({"income": income_seen, "debt": debt, "purpose": purpose,
                         "default": default})


def test_tabular_classifier_standardises_imputes_and_embeds(tmp_path):
    df = credit_table(600)
    X, y = df.drop(columns="default"), df["default"]
    clf = TabularClassifier(hidden=[32], epochs=30, batch_size=32, lr=3e-3, patience=0,
                            verbose=0, precision="fp32").fit(X, y)
    assert [i.type for i in clf.config_.inputs] == ["numeric", "numeric", "category"]
    assert clf.metrics_["task"] == "tabular classification"
    val = clf.metrics_["validation"]
    assert val["accuracy"] >= 0.85 and val["accuracy"] > val["baseline"]["accuracy"] + 0.2
    income = clf.features_["income"]
    train_rows = clf.data_report_["splits"]["train"]
    assert income.mean == pytest.approx(np.nanmean(X["income"]), rel=0.1) and train_rows < 600
    assert clf.features_["purpose"].vocab and set(clf.features_["purpose"].vocab) == {
        "car", "home", "holiday"}
    # Unseen category and missing values still predict.
    odd = pd.DataFrame({"income": [np.nan], "debt": [10.0], "purpose": ["boat"]})
    assert clf.predict(odd).shape == (1,)
    clf.save(tmp_path / "run")
    again = load(tmp_path / "run")
    assert type(again) is TabularClassifier
    assert np.array_equal(again.predict_proba(X), clf.predict_proba(X))
    m = again.evaluate(X, y)
    assert m["accuracy"] >= 0.85 and m["baseline"]["strategy"] == "majority class"
    with pytest.raises(DataError, match="column 'debt' is missing"):
        clf.predict(X.drop(columns="debt"))


def test_tabular_regressor_reports_mae_rmse_r2(tmp_path):
    rng = np.random.default_rng(1)
    n = 500
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                      "city": rng.choice(["x", "y"], n)})
    y = 3 * X["a"] - 2 * X["b"] + np.where(X["city"] == "x", 1.0, -1.0) + rng.normal(0, 0.1, n)
    y = 1000 + 50 * y  # units far from standardised: the target scaler must invert
    reg = TabularRegressor(hidden=[32], epochs=40, batch_size=32, lr=3e-3, patience=0,
                           verbose=0, precision="fp32").fit(X, y)
    val = reg.metrics_["validation"]
    assert reg.metrics_["task"] == "tabular regression" and reg.metrics_["monitor"] == "rmse"
    assert val["r2"] > 0.9 and val["rmse"] < 0.5 * val["baseline"]["rmse"]
    assert val["baseline"]["strategy"] == "training mean"
    pred = reg.predict(X[:5])
    assert pred.shape == (5,) and np.all(np.abs(pred - y[:5]) < 100)
    assert reg.score(X, y) > 0.9  # scikit-learn's R²
    reg.save(tmp_path / "reg")
    again = load(tmp_path / "reg")
    assert type(again) is TabularRegressor and np.array_equal(again.predict(X), reg.predict(X))
    # A regressor has no predict_proba (scikit-learn's tools ask hasattr), loaded or not.
    assert not hasattr(reg, "predict_proba") and not hasattr(again, "predict_proba")


def test_table_from_the_cli(tmp_path, capsys):
    df = credit_table(400)
    csv = tmp_path / "credit.csv"
    df.to_csv(csv, index=False)
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", csv, "--kind", "table", "--label",
                           "default", "--hidden", "16", "--epochs", "10", "--lr", "3e-3",
                           "--batch-size", "32", "--precision", "fp32", "--quiet", "--out", run)
    assert code == 0, err
    code, out, _ = run_cli(capsys, "info", run)
    assert code == 0 and "income (numeric)" in out and "purpose (category)" in out
    code, _, err = run_cli(capsys, "predict", run, "--data", csv, "--out", tmp_path / "p.csv")
    pred = pd.read_csv(tmp_path / "p.csv")
    assert code == 0 and (pred["prediction"] == df["default"]).mean() > 0.75  # majority 0.615
    # Regression from the CLI: a numeric output column.
    df["amount"] = df["debt"] * 10.5 + 0.25
    df.drop(columns="default").to_csv(csv, index=False)
    code, out, err = run_cli(capsys, "train", "--data", csv, "--kind", "table", "--label",
                             "amount", "--epochs", "3", "--precision", "fp32", "--quiet",
                             "--out", tmp_path / "reg")
    assert code == 0, err
    assert "rmse" in out and "mean baseline" in out
    code, out, _ = run_cli(capsys, "evaluate", tmp_path / "reg", "--data", csv)
    assert code == 0 and "r2" in out


def test_non_numeric_value_names_row_and_column(tmp_path, capsys):
    df = credit_table(50).astype({"debt": object})
    df.loc[6, "debt"] = "lots"
    csv = tmp_path / "credit.csv"
    df.to_csv(csv, index=False)
    code, _, err = run_cli(capsys, "train", "--data", csv, "--numeric", "income,debt",
                           "--category", "purpose", "--label", "default", "--quiet",
                           "--out", tmp_path / "run")
    assert_user_error(code, err, "credit.csv", "row 7, column 'debt': 'lots' is not a number")
    _assert_nothing_written(tmp_path / "run")


# ------------------------------------------------------------------------------------- mixed
def mixed_table(n: int, seed: int = 0) -> pd.DataFrame:
    """Reviews whose label needs both the text (a cue word) and the price (a number)."""
    rng = np.random.default_rng(seed)
    good = rng.random(n) < 0.5
    price = rng.uniform(0, 100, n)
    words = np.where(good, "great", "awful")
    filler = ["the", "item", "was", "really", "quite", "and", "so"]
    texts = [" ".join([*rng.choice(filler, 3), w, *rng.choice(filler, 2)]) for w in words]
    label = np.where(good & (price < 60), "buy", "skip")
    return pd.DataFrame({"review": texts, "price": price,
                         "shop": rng.choice(["a", "b", "c"], n), "label": label})


def test_mixed_text_numeric_category_trains_one_model(tmp_path, capsys):
    df = mixed_table(500)
    csv = tmp_path / "mixed.csv"
    df.to_csv(csv, index=False)
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", csv, "--text", "review", "--numeric",
                           "price", "--category", "shop", "--label", "label", "--model", "cnn",
                           "--vocab-size", "300", "--max-length", "16", "--epochs", "25",
                           "--d-model", "16", "--head-hidden", "32", "--dropout", "0.1",
                           "--lr", "3e-3", "--batch-size", "32", "--precision", "fp32",
                           "--patience", "0", "--quiet", "--out", run)
    assert code == 0, err
    model = load(run)
    assert set(model.model_.encoders) == {"review", "price", "shop"}
    assert model.metrics_["task"] == "multimodal classification"
    assert model.metrics_["validation"]["accuracy"] >= 0.85  # needs both text and price
    code, _, err = run_cli(capsys, "predict", run, "--data", csv, "--out", tmp_path / "p.jsonl")
    assert code == 0, err
    assert len(pd.read_json(tmp_path / "p.jsonl", lines=True)) == len(df)
    code, out, err = run_cli(capsys, "evaluate", run, "--data", csv, "--json")
    assert code == 0 and '"accuracy"' in out, err
    # The same run from Python.
    clf = TabularClassifier(model="cnn", text="review", epochs=2, verbose=0, precision="fp32")
    clf.fit(df.drop(columns="label"), df["label"])
    assert [i.type for i in clf.config_.inputs] == ["text", "numeric", "category"]


def test_photo_sized_images_get_the_strided_stem():
    import torch

    from dlforge.config import CNNConfig
    from dlforge.models.cnn import ImageCNN

    big = ImageCNN(CNNConfig(channels=[8, 16]), 3, 96, 128).eval()
    small = ImageCNN(CNNConfig(channels=[8, 16]), 3, 32, 32).eval()
    assert big(torch.randn(2, 3, 96, 128)).shape == (2, 16)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 16)
    assert isinstance(big.stem[-1], torch.nn.MaxPool2d) and len(small.stem) == 3
