import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlforge.config import CleanConfig
from dlforge.data.clean import clean_frame, clean_text
from dlforge.data.features import LabelEncoder, TextTokenizer
from dlforge.data.io import read_table, require_columns
from dlforge.data.loader import BucketBatchSampler, FeatureDataset
from dlforge.data.split import stratified_split
from dlforge.errors import DataError

FRAME = pd.DataFrame({"text": ["good film", "bad, film", "so good"], "label": ["p", "n", "p"]})


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_reads_every_format(tmp_path: Path, suffix: str):
    path = tmp_path / f"d{suffix}"
    if suffix == ".csv":
        FRAME.to_csv(path, index=False)
    elif suffix == ".tsv":
        FRAME.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        FRAME.to_json(path, orient="records", lines=True)
    else:
        FRAME.to_parquet(path)
    pd.testing.assert_frame_equal(read_table(path), FRAME)


def test_missing_file_and_folder(tmp_path: Path):
    with pytest.raises(DataError, match="nope.csv: file not found"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a folder"):
        read_table(tmp_path)


def test_unreadable_format(tmp_path: Path):
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"d.xlsx: unreadable format '.xlsx'; expected"):
        read_table(tmp_path / "d.xlsx")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_table(tmp_path / "bad.parquet")


def test_non_utf8_names_the_line(tmp_path: Path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"text,label\nok,a\ncaf\xe9,b\n")
    with pytest.raises(DataError, match=r"latin.csv: line 3: bytes that are not UTF-8"):
        read_table(path)


def test_ragged_csv_names_the_line(tmp_path: Path):
    path = tmp_path / "ragged.csv"
    path.write_text("text,label\na,1\nb,2,extra\nc,3\n")
    with pytest.raises(DataError, match=r"ragged.csv: line 3: expected 2 fields, saw 3"):
        read_table(path)


def test_bad_jsonl_names_the_line(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"d.jsonl: line 2: not valid JSON"):
        read_table(path)


def test_empty_files(tmp_path: Path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        read_table(tmp_path / "e.csv")
    (tmp_path / "h.csv").write_text("text,label\n")
    with pytest.raises(DataError, match="header but no rows"):
        read_table(tmp_path / "h.csv")


def test_missing_column_lists_the_ones_that_exist():
    with pytest.raises(DataError, match=r"column 'review' not found; columns are: text, label\. "
                                        r"Use --text"):
        require_columns(FRAME, {"review": "--text"}, "d.csv")


def test_cleaning_counts_each_step():
    df = pd.DataFrame({
        "text": ["<b>Good</b> &amp; fine", "ｆｕｌｌ width", "  lots   of\tspace ", "", None,
                 "dup", "dup", "no label"],
        "label": ["a", "b", "a", "b", "a", "a", "a", None],
    })
    out, report = clean_frame(df, "text", "label", CleanConfig())
    assert out["text"].tolist() == ["Good & fine", "full width", "lots of space", "dup"]
    assert report == {"rows_in": 8, "html_cleaned": 1, "unicode_normalised": 1,
                      "whitespace_fixed": 2, "empty_dropped": 2, "missing_label_dropped": 1,
                      "duplicates_dropped": 1, "rows_out": 4}


def test_cleaning_steps_can_be_switched_off():
    cfg = CleanConfig(html=False, drop_duplicates=False)
    assert clean_text("<i>x</i>", cfg) == "<i>x</i>"
    out, report = clean_frame(pd.DataFrame({"text": ["a", "a"], "label": [1, 1]}), "text",
                              "label", cfg)
    assert len(out) == 2 and "duplicates_dropped" not in report


def test_empty_after_cleaning_and_nan_labels():
    with pytest.raises(DataError, match="no rows left after cleaning"):
        clean_frame(pd.DataFrame({"text": ["", "  "], "label": [1, 2]}), "text", "label",
                    CleanConfig())
    with pytest.raises(DataError, match="column 'label' has no labels"):
        clean_frame(pd.DataFrame({"text": ["a", "b"], "label": [np.nan, np.nan]}), "text",
                    "label", CleanConfig())
    with pytest.raises(DataError, match="row 2: missing label"):
        clean_frame(pd.DataFrame({"text": ["a", "b"], "label": [1.0, np.nan]}), "text",
                    "label", CleanConfig(drop_missing_label=False))


def test_label_kinds_and_round_trip(tmp_path: Path):
    binary = LabelEncoder.fit(["no", "yes", "no"])
    assert binary.kind == "binary" and binary.n_outputs == 1
    assert binary.encode(["yes", "no"]).tolist() == [1, 0]
    multi = LabelEncoder.fit([3, 1, 2, 1])
    assert multi.kind == "category" and multi.classes == [1, 2, 3]
    assert multi.decode(np.array([2, 0])) == [3, 1]
    ml = LabelEncoder.fit([["a", "b"], ["c"], []])
    assert ml.kind == "multilabel" and ml.encode([["c", "a"]]).tolist() == [[1, 0, 1]]
    sep = LabelEncoder.fit(["a|b", "c"], kind="multilabel")
    assert sep.classes == ["a", "b", "c"]
    multi.save(tmp_path / "labels.json")
    assert json.loads((tmp_path / "labels.json").read_text())["classes"] == [1, 2, 3]
    assert LabelEncoder.load(tmp_path / "labels.json").encode(["2"]).tolist() == [1]


def test_single_class_and_unseen_labels():
    with pytest.raises(DataError, match="a single class"):
        LabelEncoder.fit(["x", "x"])
    with pytest.raises(DataError, match="label 'z' was not seen in training"):
        LabelEncoder.fit(["x", "y"]).encode(["x", "z"])
    with pytest.raises(DataError, match="binary but there are 3 classes"):
        LabelEncoder.fit(["x", "y", "z"], kind="binary")


def test_stratified_split_is_seeded_and_stratified():
    strata = np.array([0] * 80 + [1] * 20)
    keep, held = stratified_split(strata, 0.2, seed=1)
    assert len(held) == 20 and np.bincount(strata[held]).tolist() == [16, 4]
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(100))
    assert np.array_equal(held, stratified_split(strata, 0.2, seed=1)[1])
    assert not np.array_equal(held, stratified_split(strata, 0.2, seed=2)[1])


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_tokenizer_trains_truncates_and_round_trips(tmp_path: Path, kind: str):
    texts = ["the cat sat on the mat", "the dog sat", "a cat and a dog"] * 5
    tok = TextTokenizer.train(texts, kind, vocab_size=60, max_length=4, min_frequency=1)
    ids = tok.encode(["the cat sat on the mat", ""])
    assert len(ids[0]) == 4  # truncated to max_length
    assert ids[1].tolist() == [1]  # an empty text becomes one [UNK]
    tok.save(tmp_path / "tokenizer.json")
    again = TextTokenizer.load(tmp_path / "tokenizer.json", 4)
    assert [a.tolist() for a in again.encode(["the dog"])] == [
        a.tolist() for a in tok.encode(["the dog"])]
    assert tok.tokenizer.token_to_id("[PAD]") == 0


def test_tokenizer_vocabulary_comes_from_its_texts_only():
    tok = TextTokenizer.train(["alpha beta"] * 3, "wordpiece", vocab_size=200, min_frequency=1)
    assert "zebra" not in tok.tokenizer.get_vocab()


def test_bucket_sampler_covers_everything_once_and_is_seeded():
    lengths = np.random.default_rng(0).integers(1, 100, size=500)
    s = BucketBatchSampler(lengths, 16, shuffle=True, seed=3, pool=4)
    batches = list(s)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(500)) and len(batches) == len(s)
    s.set_epoch(1)
    assert list(s) != batches
    s.set_epoch(0)
    assert list(s) == batches
    # Bucketing keeps padding small: far less than random batches would need.
    def waste(bs):
        return sum(max(lengths[b]) * len(b) - lengths[b].sum() for b in bs)
    unbucketed = list(BucketBatchSampler(lengths, 16, shuffle=True, seed=3, bucket=False))
    assert waste(batches) < 0.3 * waste(unbucketed)


def test_text_batches_pad_per_batch_with_a_mask():
    from dlforge.config import TextInput
    from dlforge.data.inputs import TextFeature

    feat = TextFeature(TextInput(name="t"))
    ds = FeatureDataset({"t": feat}, {"t": [np.array([5, 6, 7]), np.array([8])]},
                        np.array([1, 0]))
    batch = ds.collate([ds[0], ds[1]])
    assert batch["inputs"]["t"]["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["inputs"]["t"]["attention_mask"].tolist() == [[True] * 3, [True, False, False]]
    assert batch["labels"].tolist() == [1, 0]


def test_kfold_covers_every_row_once_stratified():
    from dlforge.data.split import kfold

    strata = np.array([0] * 60 + [1] * 30)
    folds = kfold(strata, 3, seed=0)
    held = np.concatenate([te for _, te in folds])
    assert sorted(held.tolist()) == list(range(90))
    for tr, te in folds:
        assert np.bincount(strata[te]).tolist() == [20, 10]
        assert not set(tr) & set(te)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, kfold(strata, 3, seed=0),
                                                          strict=True))
    with pytest.raises(ValueError, match="2 <= k"):
        kfold(strata, 1, seed=0)
