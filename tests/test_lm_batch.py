"""Continuous batching of generations (dlforge.lm.batch): the same tokens as one at a time."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import torch

from dlforge import ConfigError, DataError
from dlforge.lm.batch import DecodeBatcher
from dlforge.lm.generate import sample_tokens
from dlforge.models.gpt import Decoder, KVCache
from dlforge.serve.app import ServeSettings, served_run
from tests.serving import Server
from tests.test_lm import tiny_gpt

# (prompt, new tokens, settings): greedy and sampled, past the 16-token window (slides), with
# every sampling option, and one prompt longer than the window.
JOBS = [([1, 2, 3], 40, dict(temperature=0)),
        ([4] * 10, 25, dict(temperature=0.9, seed=3)),
        ([5, 6], 7, dict(temperature=1.0, top_k=5, seed=1)),
        ([7, 8, 9, 10], 50, dict(temperature=0.7, top_p=0.8, repetition_penalty=1.3, seed=9)),
        ([2] * 20, 33, dict(temperature=0)),
        ([3], 0, dict(temperature=0))]


def test_batched_generations_equal_one_at_a_time():
    model = tiny_gpt(seed=2)
    want = [list(sample_tokens(model, p, n, **kw)) for p, n, kw in JOBS]
    with DecodeBatcher(model, max_batch=3) as batcher:  # fewer rows than jobs: they queue
        streams = [batcher.submit(p, n, **kw) for p, n, kw in JOBS]
        got = [list(s) for s in streams]
    assert got == want
    assert [len(g) for g in got] == [n for _, n, _ in JOBS]
    assert batcher.rows > batcher.steps  # steps covered several sequences at once


def test_decoder_rows_at_their_own_positions_match_one_row_each():
    model = tiny_gpt(seed=4)
    prompts = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10, 11, 12, 13, 14]]
    step = Decoder(model)
    shared = KVCache(model.config, 3, torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        want = []
        for r, p in enumerate(prompts):
            model(torch.tensor([p]), cache=shared.row(r))  # each prompt into its row
            alone = KVCache(model.config, 1, torch.device("cpu"), torch.float32)
            model(torch.tensor([p]), cache=alone)
            want.append(step(torch.tensor([3]), alone)[0])
        got = step(torch.tensor([3, 3, 3]), shared, [len(p) for p in prompts])
    for r in range(3):
        assert torch.allclose(got[r], want[r], atol=1e-5)
    assert shared.pos == 0  # per-row positions are the caller's to advance


def test_closing_a_stream_stops_only_that_generation():
    model = tiny_gpt(seed=5)
    with DecodeBatcher(model, max_batch=4) as batcher:
        closed = batcher.submit([1, 2], 500, temperature=0)
        kept = batcher.submit([3, 4], 60, temperature=0.8, seed=7)
        first = [next(closed) for _ in range(3)]
        closed.close()
        rest = list(kept)
        leftover = list(closed)  # what was queued before the close; then the stream ends
        steps = batcher.steps
    assert len(first) + len(leftover) < 500 and steps < 500  # it did not run to its end
    assert rest == list(sample_tokens(model, [3, 4], 60, temperature=0.8, seed=7))


def test_bad_use_is_refused():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="max_batch"):
        DecodeBatcher(model, max_batch=0)
    batcher = DecodeBatcher(model)
    with pytest.raises(RuntimeError, match="start"):
        batcher.submit([1], 5)
    with batcher, pytest.raises(ConfigError, match="top_p"):
        batcher.submit([1], 5, top_p=1.5)


def test_generate_many_equals_generate(tiny_lm):
    lm, _ = tiny_lm
    prompts = ["the quick", "lazy dog", "fox"]
    settings = dict(max_new_tokens=30, temperature=0.8, seed=11, stop="dog")
    many = lm.generate_many(prompts, max_batch=2, **settings)
    assert many == [lm.generate(p, **settings) for p in prompts]
    with pytest.raises(DataError, match="prompts: expected a list"):
        lm.generate_many("the quick")
    with pytest.raises(DataError, match="prompt"):
        lm.generate_many(["the quick", ""])


def test_server_decodes_concurrent_generations_together(tiny_lm):
    lm, run = tiny_lm
    served = served_run(run)
    body = {"text_input": "the ", "parameters": {"max_new_tokens": 40, "temperature": 0}}
    want = lm.generate("the ", max_new_tokens=40, temperature=0)
    with Server([served], ServeSettings(max_generations=8)) as srv:
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
                return await asyncio.gather(*(
                    c.post(f"/v2/models/{served.name}/generate", json=body) for _ in range(6)))

        responses = asyncio.run(burst())
        batcher = served.batcher
        assert batcher.rows > batcher.steps  # several generations per decoding step
    assert all(r.status_code == 200 for r in responses)
    assert all(r.json()["text_output"] == want for r in responses)
    assert served.batcher is None  # stopped with the server
