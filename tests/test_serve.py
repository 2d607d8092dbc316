"""The HTTP server, started for real on a loopback port and spoken to over HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from dlforge.serve.app import ServedModel, ServeSettings
from tests.serving import Server


@pytest.fixture(scope="module")
def served(trained_run) -> ServedModel:
    run, _ = trained_run
    return ServedModel(run, name="tweets")


def test_every_endpoint_and_same_predictions_as_the_cli(served, trained_run, tmp_path, capsys):
    from dlforge.cli import main

    run, csv = trained_run
    texts = pd.read_csv(csv)["review"].tolist()[:20]
    with Server([served], ServeSettings(max_delay_ms=2)) as srv, httpx.Client(
            base_url=srv.url) as c:
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").json() == {"ready": True}
        assert c.get("/v2").json()["models"] == ["tweets"]
        meta = c.get("/v2/models/tweets").json()
        assert meta["inputs"][0]["name"] == "review" and meta["parameters"]["labels"]
        assert c.get("/v2/models/tweets/ready").status_code == 200
        assert c.get("/v2/models/nope").status_code == 404
        r = c.post("/v1/models/tweets/predict",
                   json={"instances": [{"review": t} for t in texts]})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        infer = c.post("/v2/models/tweets/infer", json={"inputs": [
            {"name": "review", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]})
        assert infer.status_code == 200, infer.text
        labels = next(o for o in infer.json()["outputs"] if o["name"] == "label")["data"]
        assert labels == [str(p["label"]) for p in preds]
        assert "dlforge_requests_total" in c.get("/metrics").text
        assert c.get("/docs").status_code == 200
    subset = tmp_path / "subset.csv"
    pd.DataFrame({"review": texts}).to_csv(subset, index=False)
    assert main(["predict", str(run), "--data", str(subset), "--out",
                 str(tmp_path / "p.csv")]) == 0
    cli = pd.read_csv(tmp_path / "p.csv")
    assert cli["prediction"].astype(str).tolist() == [str(p["label"]) for p in preds]
    for col in [c for c in cli.columns if c.startswith("proba_")]:
        cls = col.removeprefix("proba_")
        served_p = [p["probabilities"][cls] for p in preds]
        assert cli[col].tolist() == pytest.approx(served_p, abs=1e-6)


def _batch_count(text: str) -> tuple[float, float]:
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith("dlforge_batch_size_count"):
            count += float(line.split()[-1])
        if line.startswith("dlforge_batch_size_sum"):
            total += float(line.split()[-1])
    return count, total


@pytest.mark.parametrize("batch", [64, 1])
def test_concurrent_requests_are_coalesced(served, batch):
    settings = ServeSettings(max_batch_size=batch, max_delay_ms=50)
    with Server([served], settings) as srv:
        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=srv.url) as c:
                rs = await asyncio.gather(*[
                    c.post("/v1/models/tweets/predict",
                           json={"instances": [{"review": f"text number {i}"}]})
                    for i in range(24)])
                return [r.status_code for r in rs]

        assert asyncio.run(burst()) == [200] * 24
        forwards, instances = _batch_count(httpx.get(f"{srv.url}/metrics").text)
    assert instances == 24
    if batch == 1:
        assert forwards == 24  # batching off: one forward per request
    else:
        assert forwards < 24 / 2  # coalesced


def test_auth_limits_and_validation(served, monkeypatch):
    settings = ServeSettings(api_key="s3cret", max_instances=5, max_body_bytes=2000)
    with Server([served], settings) as srv, httpx.Client(base_url=srv.url) as c:
        ok = {"instances": [{"review": "hello"}]}
        assert c.post("/v1/models/tweets/predict", json=ok).status_code == 401
        assert c.post("/v1/models/tweets/predict", json=ok,
                      headers={"X-API-Key": "wrong"}).status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        assert c.post("/v1/models/tweets/predict", json=ok, headers=auth).status_code == 200
        assert c.get("/v2/health/live").status_code == 200  # health stays open
        r = c.post("/v1/models/tweets/predict", headers=auth,
                   json={"instances": [{"review": "x"}] * 6})
        assert r.status_code == 413 and "limit is 5" in r.text
        r = c.post("/v1/models/tweets/predict", headers=auth,
                   content=json.dumps({"instances": [{"review": "x" * 3000}]}))
        assert r.status_code == 413 and "limit is 2000" in r.text
        r = c.post("/v1/models/tweets/predict", headers=auth,
                   json={"instances": [{"review": 3}]})
        assert r.status_code == 422 and "instances[0].review: expected a string" in r.text
        r = c.post("/v1/models/tweets/predict", headers=auth,
                   json={"instances": [{"text": "x"}]})
        assert r.status_code == 422 and "instances[0].review: missing" in r.text
        r = c.post("/v1/models/tweets/predict", headers=auth, json={"instances": []})
        assert r.status_code == 422 and "instances" in r.text


def _slow(served: ServedModel, seconds: float) -> ServedModel:
    """The same model, served as "slow", taking ``seconds`` more per batch."""
    slow = ServedModel.__new__(ServedModel)
    slow.__dict__.update(served.__dict__)
    slow.name = "slow"

    def slow_predict(rows):
        time.sleep(seconds)
        return served.predict(rows)

    slow.predict = slow_predict
    return slow


def test_overload_answers_503_and_health_stays_up(served):
    slow = _slow(served, 0.5)
    settings = ServeSettings(max_batch_size=1, max_queue=1, max_delay_ms=0)
    with Server([slow], settings) as srv:
        async def flood() -> tuple[list[int], float]:
            async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
                reqs = [c.post("/v1/models/slow/predict",
                               json={"instances": [{"review": f"t {i}"}]}) for i in range(6)]
                t0 = time.perf_counter()
                health = asyncio.create_task(c.get("/v2/health/live"))
                rs = await asyncio.gather(*reqs)
                h = await health
                assert h.status_code == 200
                return [r.status_code for r in rs], time.perf_counter() - t0

        codes, _ = asyncio.run(flood())
    assert 503 in codes and 200 in codes  # a bounded queue, not an ever-growing one


def test_graceful_shutdown_finishes_in_flight_requests(served):
    """Shutdown while requests wait on a slow batch: each still gets its prediction; new
    connections are refused."""
    slow = _slow(served, 0.4)
    srv = Server([slow], ServeSettings(max_batch_size=2, max_delay_ms=0)).__enter__()
    results: list[int] = []

    def post(i: int) -> None:
        r = httpx.post(f"{srv.url}/v1/models/slow/predict",
                       json={"instances": [{"review": f"t {i}"}]}, timeout=30)
        results.append(r.status_code)

    clients = [threading.Thread(target=post, args=(i,)) for i in range(5)]
    for t in clients:
        t.start()
    batcher = srv.app.state.batchers["slow"]
    deadline = time.time() + 30
    while batcher.pending < 3:  # a batch of 2 running, at least one queued behind it
        assert time.time() < deadline, batcher.pending
        time.sleep(0.01)
    srv.server.should_exit = True
    for t in clients:
        t.join(timeout=30)
    srv.thread.join(timeout=30)
    assert results == [200] * 5
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{srv.url}/v2/health/live", timeout=2)


def test_serve_cli_bad_inputs(trained_run, tmp_path, capsys):
    from tests.test_cli import assert_user_error, run_cli

    run, _ = trained_run
    code, _, err = run_cli(capsys, "serve", tmp_path / "nothing")
    assert_user_error(code, err, "no such run directory")
    code, _, err = run_cli(capsys, "serve", run, "--api-key-env", "DLFORGE_UNSET_KEY_X")
    assert_user_error(code, err, "DLFORGE_UNSET_KEY_X is not set")
    code, _, err = run_cli(capsys, "serve", run, "--name", "a", "--name", "b")
    assert_user_error(code, err, "one name per run directory")
    assert Path(run).is_dir()


def test_batcher_takes_what_queued_while_the_model_ran():
    from dlforge.serve.batcher import DynamicBatcher

    def slow(items):
        time.sleep(0.05)
        return [x * 2 for x in items]

    async def go() -> tuple[list, int]:
        b = DynamicBatcher(slow, max_batch_size=64, max_delay_ms=1)
        b.start()
        first = asyncio.create_task(b.submit([1]))
        await asyncio.sleep(0.01)  # the first forward is running now
        rest = [asyncio.create_task(b.submit([i])) for i in range(2, 7)]
        out = [await first] + [await r for r in rest]
        await b.stop()
        return out, b.forwards

    out, forwards = asyncio.run(go())
    assert out == [[2], [4], [6], [8], [10], [12]]
    assert forwards == 2  # the five that queued behind the first went in one forward


def test_onnx_export_is_verified(trained_run, tmp_path, capsys):
    import numpy as np
    import onnxruntime as ort

    from dlforge import TabularClassifier
    from dlforge.serve.export import export_onnx
    from tests.test_cli import assert_user_error, run_cli
    from tests.test_kinds import credit_table

    run, _ = trained_run
    out = tmp_path / "tweets.onnx"
    code, text, err = run_cli(capsys, "export", run, "--format", "onnx", "--out", out)
    assert code == 0, err
    assert "onnxruntime matches PyTorch" in text and out.is_file()
    info = json.loads(out.with_suffix(".onnx.json").read_text())
    assert [i["name"] for i in info["inputs"]] == ["review", "review_mask"]
    assert info["max_abs_difference"] <= 1e-4
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    ids = np.array([[5, 6, 7, 0], [8, 9, 0, 0]], dtype=np.int64)  # dynamic batch and length
    got = sess.run(["logits"], {"review": ids, "review_mask": ids != 0})[0]
    assert got.shape == (2, 1)
    table = credit_table(120)
    clf = TabularClassifier(hidden=[8], epochs=1, verbose=0).fit(
        table.drop(columns="default"), table["default"])
    clf.save(tmp_path / "credit")
    assert export_onnx(tmp_path / "credit")["max_abs_difference"] <= 1e-4
    code, _, err = run_cli(capsys, "export", run, "--format", "tflite")
    assert_user_error(code, err, "--format: only onnx")


@pytest.mark.parametrize("cell,layers,bidirectional", [("gru", 1, True), ("lstm", 2, True),
                                                         ("lstm", 1, False)])
def test_recurrent_layer_without_packing_is_exact(cell, layers, bidirectional):
    """The ONNX path of the RNN (padded, each sequence reversed within its length for the
    backward direction) gives the packed path's result."""
    import torch

    from dlforge.models.layers import RecurrentEncoder

    torch.manual_seed(0)
    enc = RecurrentEncoder(5, 7, layers, cell, bidirectional).eval()
    lengths = torch.tensor([9, 1, 4, 7, 2, 9])
    mask = torch.arange(9)[None] < lengths[:, None]
    x = torch.randn(6, 9, 5) * mask[..., None]
    with torch.no_grad():
        assert torch.allclose(enc(x, mask), enc.forward_padded(x, mask), atol=1e-6)


def test_rnn_exports_and_serves_through_onnx(tmp_path, capsys, toy):
    from dlforge import SequenceModel, TextClassifier
    from tests.test_cli import run_cli
    from tests.test_sequences import waves

    texts, labels = toy
    TextClassifier("rnn", vocab_size=300, max_length=16, d_model=8, hidden=8, epochs=1,
                   verbose=0).fit(texts, labels).save(tmp_path / "rnn")
    code, out, err = run_cli(capsys, "export", tmp_path / "rnn")
    assert code == 0, err
    assert json.loads((tmp_path / "rnn.onnx.json").read_text())["max_abs_difference"] <= 1e-4
    rows = [{"text": t} for t in texts[:12]]
    torch_preds = ServedModel(tmp_path / "rnn").predict(rows)
    onnx_preds = ServedModel(tmp_path / "rnn", backend="onnx").predict(rows)
    assert [p["label"] for p in onnx_preds] == [p["label"] for p in torch_preds]
    seqs, seq_labels = waves(60)
    SequenceModel("rnn", cell="lstm", layers=2, hidden=8, epochs=1, verbose=0,
                  precision="fp32").fit(seqs, seq_labels).save(tmp_path / "lstm")
    info = __import__("dlforge.serve.export", fromlist=["export_onnx"]).export_onnx(
        tmp_path / "lstm")
    assert info["max_abs_difference"] <= 1e-4


def test_onnx_backend_serves_the_same_predictions(trained_run, tmp_path):
    import shutil

    run, csv = trained_run
    local = tmp_path / "tweets"
    shutil.copytree(run, local)
    texts = pd.read_csv(csv)["review"].tolist()[:12]
    body = {"instances": [{"review": t} for t in texts]}
    answers = {}
    for backend in ("torch", "onnx"):
        with Server([ServedModel(local, "tweets", backend)], ServeSettings()) as srv:
            r = httpx.post(f"{srv.url}/v1/models/tweets/predict", json=body)
            assert r.status_code == 200, r.text
            answers[backend] = r.json()["predictions"]
    assert (tmp_path / "tweets.onnx").is_file()  # exported on first use
    for a, b in zip(answers["torch"], answers["onnx"], strict=True):
        assert a["label"] == b["label"]
        for c in a["probabilities"]:
            assert a["probabilities"][c] == pytest.approx(b["probabilities"][c], abs=1e-4)


def test_workers_share_the_port_and_metrics(trained_run, tmp_path):
    """``dlforge serve --workers 2``: two processes behind one port answer the same
    predictions; /metrics counts the requests of both."""
    import os
    import signal
    import subprocess
    import sys

    from tests.serving import _free_port

    run, csv = trained_run
    texts = pd.read_csv(csv)["review"].tolist()[:8]
    port = _free_port()
    env = dict(os.environ, MY_KEY="k3y")
    proc = subprocess.Popen([sys.executable, "-m", "dlforge.cli", "serve", str(run), "--name",
                             "tweets", "--port", str(port), "--workers", "2",
                             "--api-key-env", "MY_KEY"],
                            env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240  # two fresh interpreters importing torch; slow when busy
        while True:
            try:
                if httpx.get(url + "/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "the workers did not start"
            time.sleep(0.2)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) >= 2, children
        want = ServedModel(run).predict([{"review": t} for t in texts])
        headers = {"X-API-Key": "k3y"}

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, headers=headers) as c:
                return await asyncio.gather(*[
                    c.post("/v1/models/tweets/predict", json={"instances": [{"review": t}]})
                    for t in texts * 5])

        responses = asyncio.run(burst())
        assert [r.status_code for r in responses] == [200] * 40
        got = [r.json()["predictions"][0]["label"] for r in responses]
        assert got == [p["label"] for p in want] * 5
        assert httpx.post(url + "/v1/models/tweets/predict",
                          json={"instances": [{"review": "x"}]}).status_code == 401
        metrics = httpx.get(url + "/metrics").text
        line = next(ln for ln in metrics.splitlines() if ln.startswith(
            'dlforge_requests_total{route="/v1/models/tweets/predict",status="200"}'))
        assert float(line.split()[-1]) == 40.0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert "k3y" not in proc.stderr.read()  # the key is never logged


def test_explain_over_http(served, trained_run):
    """POST /v1/models/{name}/explain: the same attributions as dlforge.explain in Python."""
    from dlforge.audit.explain import explain_instances

    run, csv = trained_run
    text = pd.read_csv(csv)["review"].iloc[3]
    want = explain_instances(served.clf, [{"review": text}], steps=64)[0]
    with Server([served], ServeSettings()) as srv, httpx.Client(base_url=srv.url,
                                                                timeout=120) as c:
        r = c.post("/v1/models/tweets/explain", json={"instances": [{"review": text}],
                                                      "parameters": {"steps": 64}})
        assert r.status_code == 200, r.text
        got = r.json()["explanations"][0]
        tokens = got["attributions"]["review"]
        assert [t["token"] for t in tokens] == [t["token"] for t in want["attributions"]["review"]]
        assert [t["score"] for t in tokens] == pytest.approx(
            [t["score"] for t in want["attributions"]["review"]], abs=1e-6)
        assert abs(got["convergence_delta"]) < 0.05 * max(abs(got["output"] -
                                                              got["baseline_output"]), 1e-3)
        bad = c.post("/v1/models/tweets/explain", json={"instances": [{"review": text}],
                                                        "parameters": {"target": "nope"}})
        assert bad.status_code == 422 and "target" in bad.json()["detail"]
        many = c.post("/v1/models/tweets/explain",
                      json={"instances": [{"review": text}] * 17})
        assert many.status_code == 422
