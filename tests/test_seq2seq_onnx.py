"""A sequence-to-sequence run through its ONNX graphs: the export verified (greedy and beam
tokens), the same search loops over ``OnnxDecoding`` giving the torch backend's texts (greedy
and beam search, sources of different lengths batched together), ``dlforge serve --backend
onnx`` over v1 predict and OIP v2 infer, re-export when the graphs are older than the run, and
the refusal of a fine-tuned pretrained run. The tiny upper-casing task of test_seq2seq.py."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from dlforge import ConfigError, Seq2Seq
from dlforge.cli import main
from dlforge.models.seq2seq import beam_decode, beam_search, greedy_decode, greedy_search
from dlforge.serve.export_seq2seq import OnnxDecoding, encoder_path
from dlforge.serve.seq2seq import ServedSeq2Seq
from tests.test_seq2seq import TINY, _batch, _tiny_pretrained, upper_pairs

# Sources of 1 to 6 words: different lengths in one batch (padding), short and long outputs.
TEXTS = ["red cat", "blue sky sea moon", "dog", "green tree sun sky sea moon", "sea sun",
         "cat dog red", "moon"]


@pytest.fixture(scope="module")
def fitted(one_thread, tmp_path_factory) -> tuple[Seq2Seq, Path]:
    src, tgt = upper_pairs(120)
    run = tmp_path_factory.mktemp("s2s_onnx") / "upper"
    return Seq2Seq(**TINY).fit(src, tgt, out=run), run


@pytest.fixture(scope="module")
def served_onnx(fitted) -> ServedSeq2Seq:
    """The run served with --backend onnx: its graphs exported (and verified) beside it."""
    _, run = fitted
    assert not run.with_suffix(".onnx").exists()
    return ServedSeq2Seq(run, name="upper-onnx", backend="onnx")


def test_export_verifies_greedy_and_beam_tokens(fitted, tmp_path, capsys):
    import onnxruntime as ort

    s2s, run = fitted
    out = tmp_path / "upper.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "onnxruntime matches PyTorch (and its greedy and 2-beam search tokens)" in said
    info = json.loads(out.with_suffix(".onnx.json").read_text())
    assert info["task"] == "seq2seq" and info["max_abs_difference"] < 1e-4
    assert info["encoder"] == encoder_path(out).name == "upper.encoder.onnx"
    enc = ort.InferenceSession(str(encoder_path(out)))
    dec = ort.InferenceSession(str(out))
    model = s2s.backend_.model
    src, mask = _batch(model, TEXTS, s2s)
    n = model.config.max_target
    got = greedy_decode(OnnxDecoding(enc, dec, src, mask), len(TEXTS), n, src.device)
    assert got == greedy_search(model, src, mask, n)
    got = beam_decode(OnnxDecoding(enc, dec, src, mask, 3), len(TEXTS), 3, n, 1.0, src.device)
    assert got == beam_search(model, src, mask, 3, n, 1.0)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_onnx_backend_gives_the_torch_texts(fitted, served_onnx, beam_size):
    s2s, _ = fitted
    onnx = served_onnx.decoding
    want = s2s.predict(TEXTS, beam_size=beam_size)
    assert s2s.predict(TEXTS, beam_size=beam_size, decoding=onnx) == want
    assert any(want)  # the model says something
    # A cut-off generation and another length penalty take the other branches of the loop.
    for kw in ({"max_new_tokens": 2}, {"length_penalty": 0.3}):
        assert s2s.predict(TEXTS, beam_size=beam_size, decoding=onnx, **kw) == \
            s2s.predict(TEXTS, beam_size=beam_size, **kw)
    # The served model's own predict: the run's beam size and length penalty.
    assert [p["text"] for p in served_onnx.predict(TEXTS)] == s2s.predict(TEXTS)


def test_serve_onnx_v1_and_v2_give_the_torch_texts(fitted, served_onnx):
    import httpx

    from dlforge.serve.app import ServeSettings
    from tests.serving import Server

    s2s, run = fitted
    served_torch = ServedSeq2Seq(run, name="upper")
    want = s2s.predict(TEXTS)
    with Server([served_torch, served_onnx], ServeSettings(max_delay_ms=2)) as srv, \
            httpx.Client(base_url=srv.url) as c:
        for name, backend in (("upper", "torch"), ("upper-onnx", "onnx")):
            meta = c.get(f"/v2/models/{name}").json()
            assert meta["parameters"]["backend"] == backend
            r = c.post(f"/v1/models/{name}/predict",
                       json={"instances": [{"source": t} for t in TEXTS]})
            assert r.status_code == 200, r.text
            assert [p["text"] for p in r.json()["predictions"]] == want
            infer = c.post(f"/v2/models/{name}/infer", json={"inputs": [
                {"name": "source", "shape": [len(TEXTS)], "datatype": "BYTES",
                 "data": TEXTS}]})
            assert infer.status_code == 200, infer.text
            out = infer.json()["outputs"][0]
            assert out["name"] == "text" and out["datatype"] == "BYTES"
            assert out["data"] == want
        long = " ".join(["green"] * (s2s.backend_.max_source + 3))
        bad = c.post("/v1/models/upper-onnx/predict", json={"instances": ["red", long]})
        assert bad.status_code == 422 and "instances[1]" in bad.text


def test_graphs_older_than_the_run_are_exported_again(fitted, served_onnx, tmp_path):
    _, run = fitted
    copy = tmp_path / "upper"
    shutil.copytree(run, copy)  # the graphs beside the copy: copied with their times
    for suffix in (".onnx", ".encoder.onnx", ".onnx.json"):
        shutil.copy2(run.with_suffix(suffix), copy.with_suffix(suffix))
    graph, encoder = copy.with_suffix(".onnx"), encoder_path(copy.with_suffix(".onnx"))
    before = graph.stat().st_mtime_ns, encoder.stat().st_mtime_ns
    ServedSeq2Seq(copy, backend="onnx")  # up to date: used as they are
    assert (graph.stat().st_mtime_ns, encoder.stat().st_mtime_ns) == before
    older = (copy / "dlforge.json").stat().st_mtime - 10
    os.utime(encoder, (older, older))  # one graph older than the run: both exported again
    served = ServedSeq2Seq(copy, backend="onnx")
    assert graph.stat().st_mtime_ns != before[0] and encoder.stat().st_mtime_ns != before[1]
    assert served.predict(["red cat"]) == served_onnx.predict(["red cat"])


def test_pretrained_run_is_refused_with_one_line(one_thread, tmp_path, capsys):
    src, tgt = upper_pairs(20)
    folder = _tiny_pretrained("t5", tmp_path / "t5", src + tgt)
    run = tmp_path / "t5run"
    Seq2Seq(str(folder), epochs=1, batch_size=16, verbose=0, precision="fp32",
            device="cpu").fit(src, tgt, out=run)
    with pytest.raises(ConfigError, match=rf"{run}: a fine-tuned pretrained model.*--backend "
                                          "torch"):
        ServedSeq2Seq(run, backend="onnx")
    assert not run.with_suffix(".onnx").exists()
    capsys.readouterr()  # the fit's progress
    assert main(["serve", str(run), "--backend", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(run) in err[0] and "--backend torch" in err[0]
    with pytest.raises(ConfigError, match="--backend: torch or onnx, got 'tensorrt'"):
        ServedSeq2Seq(run, backend="tensorrt")
