"""Language models over HTTP: /v2/models/{name}/generate and generate_stream (Server-Sent
Events), on a real server on loopback."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from dlforge import LanguageModel
from dlforge.serve.app import ServeSettings, served_run
from tests.serving import Server


@pytest.fixture(scope="module")
def lm_run(tiny_lm):
    return tiny_lm[1]  # conftest: a run named fox, trained once for the session


@pytest.fixture(scope="module")
def server(lm_run, trained_run):
    run, _ = trained_run
    models = [served_run(lm_run), served_run(run, "tweets")]
    with Server(models, ServeSettings(max_generations=2, timeout_s=60,
                                                max_new_tokens=1_000_000)) as srv:
        yield srv


def _events(lines) -> list[dict]:
    return [json.loads(ln[len("data: "):]) for ln in lines if ln.startswith("data: ")]


def _counter(text: str, metric: str, model: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{metric}{{model="{model}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_generate_and_stream_give_the_python_api_text(server, lm_run):
    lm = LanguageModel.load(lm_run)
    want = lm.generate("the quick", max_new_tokens=30, temperature=0)
    body = {"text_input": "the quick", "parameters": {"max_new_tokens": 30, "temperature": 0}}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        meta = c.get("/v2/models/fox").json()
        assert meta["parameters"]["task"] == "language model"
        assert meta["inputs"][0]["name"] == "text_input"
        r = c.post("/v2/models/fox/generate", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["text_output"] == want
        assert out["finish_reason"] == "length" and out["generated_tokens"] == 30
        with c.stream("POST", "/v2/models/fox/generate_stream", json=body) as s:
            assert s.status_code == 200
            assert s.headers["content-type"].startswith("text/event-stream")
            events = _events(s.iter_lines())
        *pieces, last = events
        assert len(pieces) == 30  # one event per token (a char model: one char each)
        assert "".join(e["text_output"] for e in pieces) == want
        assert last["finish_reason"] == "length" and last["generated_tokens"] == 30
        # a stop string ends the text before it
        stop = want[5:7]
        r = c.post("/v2/models/fox/generate", json={**body, "parameters": {
            **body["parameters"], "stop": stop}})
        assert r.json()["text_output"] == want[:want.index(stop)]
        assert r.json()["finish_reason"] == "stop"
        # same seed, same sample
        sampled = {"text_input": "the", "parameters": {"max_new_tokens": 20, "seed": 7}}
        a = c.post("/v2/models/fox/generate", json=sampled).json()["text_output"]
        b = c.post("/v2/models/fox/generate", json=sampled).json()["text_output"]
        assert a == b


def test_bad_generate_requests(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/v2/models/fox/generate", json={"text_input": "QZ€"})
        assert r.status_code == 422 and "prompt" in r.json()["error"]  # v2: {"error": ...}
        r = c.post("/v2/models/fox/generate_stream", json={"text_input": "QZ€"})
        assert r.status_code == 422 and "prompt" in r.json()["error"]  # before any event
        r = c.post("/v2/models/fox/generate", json={"text_input": "the",
                                                    "parameters": {"top_p": 2}})
        assert r.status_code == 422
        assert r.json()["error"].startswith("parameters.top_p: ")
        r = c.post("/v2/models/fox/generate", json={"text_input": "the", "parameters": {
            "max_new_tokens": 1_000_001}})
        assert r.status_code == 422 and "--max-new-tokens" in r.json()["error"]
        r = c.post("/v2/models/fox/generate", json={"text_input": "the", "nope": 1})
        assert r.status_code == 422 and r.json()["error"].startswith("nope: ")
        r = c.post("/v1/models/fox/predict", json={"instances": [{"text": "x"}]})
        assert r.status_code == 422 and "generate" in r.json()["detail"]
        r = c.post("/v2/models/tweets/generate", json={"text_input": "the"})
        assert r.status_code == 422 and "not a language model" in r.json()["error"]


def test_disconnecting_stops_the_generation(server):
    body = {"text_input": "the", "parameters": {"max_new_tokens": 1_000_000}}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        before = c.get("/metrics").text
        aborted0 = _counter(before, "dlforge_generations_aborted_total", "fox")
        with c.stream("POST", "/v2/models/fox/generate_stream", json=body) as s:
            lines = s.iter_lines()
            got = [next(lines) for _ in range(10)]
        assert any(ln.startswith("data: ") for ln in got)
        deadline = time.time() + 30
        while _counter(c.get("/metrics").text, "dlforge_generations_aborted_total",
                       "fox") < aborted0 + 1:
            assert time.time() < deadline, "the generation was not stopped"
            time.sleep(0.1)
        tokens = _counter(c.get("/metrics").text, "dlforge_generated_tokens_total", "fox")
        time.sleep(0.5)
        assert _counter(c.get("/metrics").text, "dlforge_generated_tokens_total",
                        "fox") == tokens  # nothing runs any more
        assert tokens < 1_000_000
        # the slots are free again: two streams at once (the limit) still start
        r = c.post("/v2/models/fox/generate", json={"text_input": "the",
                                                    "parameters": {"max_new_tokens": 3}})
        assert r.status_code == 200


def test_too_many_generations_get_503(server):
    body = {"text_input": "the", "parameters": {"max_new_tokens": 1_000_000}}
    with (httpx.Client(base_url=server.url, timeout=60) as a,
          httpx.Client(base_url=server.url, timeout=60) as b,
          httpx.Client(base_url=server.url, timeout=60) as c,
          a.stream("POST", "/v2/models/fox/generate_stream", json=body) as s1,
          b.stream("POST", "/v2/models/fox/generate_stream", json=body) as s2):
        # Keep the line iterators: a closed one closes its response (a disconnect).
        lines1, lines2 = s1.iter_lines(), s2.iter_lines()
        next(lines1)
        next(lines2)
        r = c.post("/v2/models/fox/generate", json={"text_input": "the"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert c.get("/v2/health/live").status_code == 200  # the server still answers
