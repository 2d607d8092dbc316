"""The Open Inference Protocol v2 as its reference client speaks it: ``tritonclient.http`` (and
``.aio``) at its defaults, against a real server on loopback, for a text, an image and a table
model; the binary tensor data extension both ways; errors as ``{"error": ...}``; and no bytes
a client can send get a 5xx."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import struct

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlforge import ImageClassifier, TabularClassifier, TabularRegressor, TextClassifier, load
from dlforge.serve.app import ServedModel, ServeSettings
from dlforge.testing import toy_texts
from tests.conftest import TINY
from tests.serving import Server
from tests.test_kinds import credit_table

th = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402 - after the skip

FAST = dict(epochs=1, batch_size=16, patience=0, verbose=0, precision="fp32")


def halves(n: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """8x8 8-bit images, bright on top or at the bottom."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n, 8, 8)).astype(np.uint8)
    labels = []
    for i in range(n):
        top = i % 2 == 0
        images[i, :4 if top else 8, :] += 150 if top else 0
        images[i, 4:, :] += 0 if top else 150
        labels.append("top" if top else "bottom")
    return images, labels


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """Three tiny runs (text, 8-bit images, a table with a missing value and a category) and
    a table regressor, with the data to ask them about."""
    root = tmp_path_factory.mktemp("triton")
    texts, labels = toy_texts(80, seed=0)
    TextClassifier(**{**TINY, **FAST}).fit(texts, labels).save(root / "text")
    images, image_labels = halves(40)
    ImageClassifier(channels=[4], blocks=1, **FAST).fit(images, image_labels).save(
        root / "image")
    table = credit_table(80)
    X = table.drop(columns="default")
    TabularClassifier(hidden=[8], **FAST).fit(X, table["default"]).save(root / "table")
    TabularRegressor(hidden=[8], **FAST).fit(X.drop(columns="debt"), X["debt"]).save(
        root / "debt")
    return root, {"text": texts[:12], "image": images[:6], "table": X.iloc[:10]}


@pytest.fixture(scope="module")
def server(runs):
    root, _ = runs
    models = [ServedModel(root / name, name) for name in ("text", "image", "table", "debt")]
    with Server(models, ServeSettings(max_delay_ms=2, max_body_bytes=2**20)) as srv:
        yield srv


@pytest.fixture
def client(server):
    c = th.InferenceServerClient(server.url.removeprefix("http://"))
    yield c
    c.close()


def _table_inputs(X: pd.DataFrame, binary: bool, columns: list[str] | None = None) -> list:
    out = []
    for col in columns or list(X.columns):
        if pd.api.types.is_numeric_dtype(X[col]):
            arr, datatype = X[col].to_numpy(dtype=np.float32), "FP32"
        else:
            arr, datatype = X[col].to_numpy(dtype=object), "BYTES"
        t = th.InferInput(col, [len(X)], datatype)
        out.append(t.set_data_from_numpy(arr, binary_data=binary))
    return out


def _outputs(names: list[str], binary: bool) -> list | None:
    """None at the defaults (the client then asks for every output in binary)."""
    return None if binary else [th.InferRequestedOutput(n, binary_data=False) for n in names]


def _check_classes(result, clf, X) -> None:
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")]
    assert labels == [str(v) for v in clf.predict(X)]
    np.testing.assert_allclose(result.as_numpy("probabilities"), clf.predict_proba(X),
                               atol=1e-6)


# ---------------------------------------------------------------------------------- the client
def test_health_metadata_and_extensions(client):
    assert client.is_server_live() and client.is_server_ready()
    server = client.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"]
    assert server["models"] == ["text", "image", "table", "debt"]
    for name in server["models"]:
        assert client.is_model_ready(name) and client.is_model_ready(name, "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("text", "2")
    meta = client.get_model_metadata("image")
    assert meta["inputs"][0]["shape"] == [-1, 8, 8]
    assert client.get_model_metadata("table", "1")["inputs"][2]["datatype"] == "BYTES"
    with pytest.raises(InferenceServerException, match="no model 'nope'"):
        client.get_model_metadata("nope")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_gives_what_predict_gives(client, runs, binary):
    root, data = runs
    texts = data["text"]
    t = th.InferInput("text", [len(texts)], "BYTES")
    t.set_data_from_numpy(np.array(texts, dtype=object), binary_data=binary)
    result = client.infer("text", [t], outputs=_outputs(["label", "probabilities"], binary),
                          request_id="r1")
    assert result.get_response()["id"] == "r1"
    _check_classes(result, load(root / "text"), texts)

    images = data["image"]  # 8-bit pixels, as UINT8 in binary, as whole FP32 numbers in JSON
    t = th.InferInput("image", list(images.shape), "UINT8" if binary else "FP32")
    t.set_data_from_numpy(images if binary else images.astype(np.float32), binary_data=binary)
    result = client.infer("image", [t], outputs=_outputs(["label", "probabilities"], binary))
    _check_classes(result, load(root / "image"), images)

    # income has a missing value: NaN in the tensor. The numbers go as FP32: the reference
    # predictions take the same float32 values.
    X = data["table"].astype({"income": np.float32, "debt": np.float32}).astype(
        {"income": float, "debt": float})
    assert X["income"].isna().any()
    result = client.infer("table", _table_inputs(X, binary),
                          outputs=_outputs(["label", "probabilities"], binary))
    _check_classes(result, load(root / "table"), X)
    Xd = X.drop(columns="debt")
    result = client.infer("debt", _table_inputs(Xd, binary), model_version="1",
                          outputs=_outputs(["prediction"], binary))
    np.testing.assert_allclose(result.as_numpy("prediction"), load(root / "debt").predict(Xd),
                               rtol=1e-5)


def test_binary_datatypes_and_compression(client, runs):
    """FP16, BF16 and INT64 numbers, one output in binary and one in JSON, a gzip body."""
    import ml_dtypes

    root, data = runs
    X = data["table"].fillna({"income": 40.0})
    clf = load(root / "table")
    for dtype, datatype in ((np.float16, "FP16"), (ml_dtypes.bfloat16, "BF16"),
                            (np.int64, "INT64")):
        sent = {c: X[c].to_numpy(np.float64).astype(dtype) for c in ("income", "debt")}
        inputs = [th.InferInput(c, [len(X)], datatype).set_data_from_numpy(sent[c])
                  for c in sent]
        inputs += _table_inputs(X, True, ["purpose"])
        outputs = [th.InferRequestedOutput("probabilities"),
                   th.InferRequestedOutput("label", binary_data=False)]
        result = client.infer("table", inputs, outputs=outputs,
                              request_compression_algorithm="gzip")
        assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities",
                                                                         "label"]
        assert "data" in result.get_output("label")
        asked = X.assign(**{c: v.astype(np.float32).astype(float) for c, v in sent.items()})
        _check_classes(result, clf, asked)


def test_errors_carry_our_message(client):
    def text_input(shape, datatype="BYTES", data=None):
        t = th.InferInput("text", shape, datatype)
        return t.set_data_from_numpy(np.array(["a b"] * int(np.prod(shape)), dtype=object)
                                     .reshape(shape) if data is None else data)

    cases = [
        (dict(model_name="nope", inputs=[text_input([1])]), "404", "no model 'nope'; served: "
         "text, image, table, debt"),
        (dict(model_name="text", inputs=[text_input([2, 2])]), "422",
         "inputs.text.shape: expected [N] or [N, 1] (text input), got [2, 2]"),
        (dict(model_name="text", inputs=[text_input([2], "FP32", np.ones(2, np.float32))]),
         "422", "inputs.text.datatype: expected BYTES (text input), got FP32"),
        (dict(model_name="image", inputs=[th.InferInput("image", [1, 8, 8], "BYTES")
                                          .set_data_from_numpy(np.full((1, 8, 8), "x",
                                                                       dtype=object))]),
         "422", "inputs.image.datatype: expected a numeric datatype (FP32, INT64, ...) "
         "(image input), got BYTES"),
        (dict(model_name="text", inputs=[text_input([1])],
              outputs=[th.InferRequestedOutput("logits")]), "422",
         "outputs[0].name: no output 'logits'; the model's outputs are label, probabilities"),
        (dict(model_name="text", inputs=[text_input([1])], model_version="3"), "404",
         "model 'text' has no version '3'"),
        (dict(model_name="table", inputs=[text_input([1])]), "422",
         "inputs: unknown tensor 'text'; the model's inputs are income, debt, purpose"),
    ]
    for kwargs, status, message in cases:
        with pytest.raises(InferenceServerException) as err:
            client.infer(**kwargs)
        assert err.value.status() == status and message in err.value.message(), kwargs
    bad = th.InferInput("text", [1], "BYTES").set_data_from_numpy(
        np.array([b"\xff\xfe not text"], dtype=object))
    with pytest.raises(InferenceServerException, match=re.escape(
            "inputs.text[0]: not valid UTF-8 text")):
        client.infer("text", [bad])


def test_aio_client_32_at_once(server, runs):
    import tritonclient.http.aio as aio

    root, data = runs
    texts = (data["text"] * 3)[:32]

    async def burst() -> list:
        c = aio.InferenceServerClient(server.url.removeprefix("http://"))
        try:
            assert await c.is_model_ready("text")

            async def one(text: str):
                t = aio.InferInput("text", [1], "BYTES")
                t.set_data_from_numpy(np.array([text], dtype=object))
                return await c.infer("text", [t])

            return await asyncio.gather(*[one(x) for x in texts])
        finally:
            await c.close()

    results = asyncio.run(burst())
    clf = load(root / "text")
    assert [r.as_numpy("label")[0].decode() for r in results] == list(clf.predict(texts))
    np.testing.assert_allclose(np.concatenate([r.as_numpy("probabilities") for r in results]),
                               clf.predict_proba(texts), atol=1e-6)


# ---------------------------------------------------------------------------------- over HTTP
def test_v2_errors_are_error_objects(server):
    with httpx.Client(base_url=server.url) as c:
        for method, path, body in [("GET", "/v2/models/nope", None),
                                   ("GET", "/v2/nothing/here", None),
                                   ("POST", "/v2/models/text/infer", b'{"inputs": []}'),
                                   ("POST", "/v2/models/text/infer", b"\x00\xff"),
                                   ("POST", "/v2/models/text/infer", b"x" * (2**20 + 1)),
                                   ("GET", "/v2/models/text/infer", None)]:
            r = c.request(method, path, content=body)
            assert r.status_code in (400, 404, 405, 413, 422), (path, r.status_code)
            assert list(r.json()) == ["error"] and isinstance(r.json()["error"], str), r.text
        r = c.post("/v2/models/text/infer", json={"inputs": [{"name": "text", "shape": ["2"],
                                                              "datatype": "BYTES"}]})
        assert r.json() == {"error": "inputs[0].shape[0]: Input should be a valid integer"}
        # JSON whatever the Content-Type (the client sends none); JSON out when not asked
        body = {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES",
                            "data": [["good movie"]]}]}
        r = c.post("/v2/models/text/infer", content=json.dumps(body),
                   headers={"content-type": "text/plain"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.json()["outputs"][1]["shape"] == [1, 2]
        # /v1 keeps its shape
        assert "detail" in c.post("/v1/models/text/predict", json={"instances": []}).json()


def _framed(header: dict, raw: bytes) -> tuple[bytes, dict]:
    head = json.dumps(header).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head))}


def _bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def test_malformed_binary_bodies_get_a_clear_4xx(server):
    def tensor(size, datatype="BYTES", shape=(1,)):
        return {"inputs": [{"name": "text", "shape": list(shape), "datatype": datatype,
                            "parameters": {"binary_data_size": size}}]}

    cases = [
        (_framed(tensor(9), _bytes_tensor(b"hello")), 200, None),
        (_framed(tensor(9), _bytes_tensor(b"hello") + b"!"), 400, "1 bytes after the JSON"),
        (_framed(tensor(12), _bytes_tensor(b"hello")), 400, "12 bytes, but only 9 follow"),
        (_framed(tensor(9), struct.pack("<I", 99) + b"hello"), 400,
         "BYTES element 0 says 99 bytes, but 5 remain"),
        (_framed(tensor(3), b"\x01\x00\x00"), 400, "BYTES element 0 is cut short"),
        (_framed(tensor(18, shape=(1,)), _bytes_tensor(b"hello", b"world")), 422,
         "2 BYTES elements for shape [1]"),
        (_framed(tensor(-1), b""), 422, "binary_data_size: expected a whole number"),
        ((b'{"inputs": [', {"Inference-Header-Content-Length": "99"}), 400,
         "Inference-Header-Content-Length: expected the JSON header's length"),
        ((b"{}\xff", {"Inference-Header-Content-Length": "-3"}), 400,
         "Inference-Header-Content-Length"),
        ((b"{}\xff", {"Inference-Header-Content-Length": b"\xb2"}), 400,  # "²": isdigit()
         "Inference-Header-Content-Length"),
        ((b'{"in\xff', {"Inference-Header-Content-Length": "4"}), 400,
         "the JSON header is not valid UTF-8 JSON"),
        ((b"\x1f\x8b not gzip", {"Content-Encoding": "gzip"}), 400, "does not decompress"),
        ((gzip.compress(b" " * (2**20 + 10)), {"Content-Encoding": "gzip"}), 413,
         "decompressed"),
    ]
    with httpx.Client(base_url=server.url) as c:
        for (body, headers), status, message in cases:
            r = c.post("/v2/models/text/infer", content=body, headers=headers)
            assert r.status_code == status, (body[:60], r.text)
            if message:
                assert message in r.json()["error"], (body[:60], r.text)


@given(body=st.binary(max_size=300), split=st.one_of(st.none(), st.integers(-2, 320),
                                                      st.text("0123456789-+x", max_size=4)),
       path=st.sampled_from(["/v2/models/text/infer", "/v2/models/table/versions/1/infer",
                             "/v1/models/text/predict", "/v1/models/image/explain",
                             "/v2/models/text/generate"]),
       content_type=st.sampled_from([None, "application/json", "application/octet-stream"]))
@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_bytes_get_a_server_error(server, body, split, path, content_type):
    """Random bytes (often not UTF-8), with and without Inference-Header-Content-Length and
    Content-Type: a 4xx naming the problem, never a 5xx."""
    headers = {}
    if split is not None:
        headers["Inference-Header-Content-Length"] = str(split)
    if content_type:
        headers["Content-Type"] = content_type
    r = httpx.post(server.url + path, content=body, headers=headers, timeout=30)
    assert 400 <= r.status_code < 500, (path, body, headers, r.status_code, r.text[:300])
    if path.startswith("/v2/"):
        assert isinstance(r.json()["error"], str)


@given(prefix=st.sampled_from([b"", b'{"inputs": [{"name": "text", "shape": [1], "datatype": '
                                    b'"BYTES", "parameters": {"binary_data_size": 8}}]}']),
       raw=st.binary(min_size=0, max_size=16))
@settings(max_examples=50, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_random_tensor_bytes_never_fail_the_server(server, prefix, raw):
    body = prefix + raw
    r = httpx.post(server.url + "/v2/models/text/infer", content=body,
                   headers={"Inference-Header-Content-Length": str(len(prefix))}, timeout=30)
    assert r.status_code < 500, (body, r.text[:300])


# ---------------------------------------------------------------------------------- metrics
def test_metrics_labels_do_not_grow_with_random_paths(server):
    def series(c: httpx.Client) -> set[str]:
        return {line.rsplit(" ", 1)[0] for line in c.get("/metrics").text.splitlines()
                if line and not line.startswith("#")}

    rng = np.random.default_rng(0)
    with httpx.Client(base_url=server.url) as c:
        c.get("/nowhere/0")
        c.post("/v2/models/nope/infer", content=b"{}")
        c.get("/metrics")
        before = series(c)
        for i in range(100):
            word = "".join(rng.choice(list("abcdefgh"), size=8))
            c.get(f"/{word}/{i}")
            c.post(f"/v2/models/{word}/infer", content=b"{}")
        c.get("/metrics")
        after = series(c)
    assert after == before
    assert 'dlforge_requests_total{route="unmatched",status="404"}' in after
    assert 'dlforge_requests_total{route="/v2/models/{name}/infer",status="404"}' in after
    assert any('route="/v2/models/text/infer"' in s for s in after)  # served names stay


# ---------------------------------------------------------------------------------- the codec
def test_decode_inputs_per_kind():
    """The codec alone: every datatype's bytes, and each input kind's values per instance
    (an audio file's bytes stay bytes; a kind the codec does not know passes through)."""
    from types import SimpleNamespace

    from dlforge.serve.oip import InferRequest, decode_inputs

    stub = SimpleNamespace(inputs=[("flag", "category"), ("x", "numeric"), ("clip", "audio"),
                                   ("pixels", "image"), ("other", "future-kind")],
                           sensitive=[], optional=[])
    x = np.array([1.5, -2.25], dtype=np.float32)
    bf16 = (x.view(np.uint32) >> 16).astype("<u2")  # exact in bfloat16
    pixels = np.arange(8, dtype="<u8").reshape(2, 2, 2)
    tensors = [("flag", "BOOL", [2], np.array([1, 0], np.uint8).tobytes()),
               ("x", "BF16", [2], bf16.tobytes()),
               ("clip", "BYTES", [2, 1], _bytes_tensor(b"RIFF\xff\x00", b"fLaC\x80")),
               ("pixels", "UINT64", [2, 2, 2], pixels.tobytes()),
               ("other", "INT8", [2, 3], np.arange(6, dtype=np.int8).tobytes())]
    header = {"inputs": [{"name": n, "datatype": d, "shape": s,
                          "parameters": {"binary_data_size": len(b)}} for n, d, s, b in tensors]}
    rows = decode_inputs(stub, InferRequest.model_validate(header),
                         b"".join(b for *_, b in tensors), max_instances=8)
    assert [r["flag"] for r in rows] == [True, False]
    assert [r["x"] for r in rows] == [1.5, -2.25]
    assert [r["clip"] for r in rows] == [b"RIFF\xff\x00", b"fLaC\x80"]
    np.testing.assert_array_equal(rows[1]["pixels"], pixels[1])
    assert [r["other"] for r in rows] == [[0, 1, 2], [3, 4, 5]]
    json_request = {"inputs": [{"name": "flag", "datatype": "BYTES", "shape": [1],
                                "data": ["yes"]},
                               {"name": "x", "datatype": "FP32", "shape": [1], "data": [None]},
                               {"name": "clip", "datatype": "BYTES", "shape": [1],
                                "data": ["UklGRg=="]},
                               {"name": "pixels", "datatype": "FP32", "shape": [1, 2, 2],
                                "data": [[[0, 1], [2, 3]]]},
                               {"name": "other", "datatype": "BYTES", "shape": [1],
                                "data": ["z"]}]}
    (row,) = decode_inputs(stub, InferRequest.model_validate(json_request), b"", 8)
    assert row["x"] is None and row["clip"] == "UklGRg==" and row["flag"] == "yes"
