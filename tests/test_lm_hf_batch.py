"""Continuous batching of pretrained causal LMs (dlforge.lm.hf_batch): each generation gets
the tokens it gets alone, whichever others share its steps; and stream_text's stop lists."""

from __future__ import annotations

import time

import pytest

from dlforge.errors import ConfigError
from dlforge.estimators.pretrained_lm import PretrainedLM
from dlforge.lm.generate import stream_text
from dlforge.lm.hf_batch import HFDecodeBatcher
from dlforge.testing import tiny_causal_lm

PROMPTS = ["hello there", "the quick brown fox jumps over the lazy dog", "a", "what is 2"]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def lm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
       one_thread: None) -> PretrainedLM:
    folder = tiny_causal_lm(tmp_path_factory.mktemp("hf") / request.param, request.param)
    return PretrainedLM.load(folder)


@pytest.mark.parametrize("padded", [True, False])
def test_batched_tokens_are_the_tokens_alone(lm: PretrainedLM, padded: bool) -> None:
    ids = [lm.encode_prompt(p) for p in PROMPTS]
    greedy = [list(lm.tokens(i, 12, temperature=0)) for i in ids]
    sampled = [list(lm.tokens(i, 12, temperature=1.0, top_k=50, seed=5)) for i in ids]
    with lm.decode_batcher(max_batch=3) as b:  # fewer rows than generations: some queue
        b.padded = padded  # False: the per-generation caches of a model that cannot be padded
        streams = []
        for k, i in enumerate(ids):
            streams.append(b.submit(i, 12, temperature=0))
            streams.append(b.submit(i, 12, temperature=1.0, top_k=50, seed=5))
            if k == 1:
                time.sleep(0.05)  # the later ones join a batch already decoding
        got = [list(s) for s in streams]
    assert got[0::2] == greedy
    assert got[1::2] == sampled
    assert b.rows > b.steps  # steps decoded several generations at once


def test_end_of_text_stops_with_reason_stop(lm: PretrainedLM) -> None:
    ids = lm.encode_prompt("hello there")
    want = list(lm.tokens(ids, 10, temperature=0))
    # pretend the first greedy token not seen before it ends the text
    k = next((k for k in range(1, len(want)) if want[k] not in want[:k]), 0)
    with HFDecodeBatcher(lm.model, {want[k]}, lm.context, max_batch=2) as b:
        s = b.submit(ids, 10, temperature=0)
        assert list(s) == want[:k] and s.finish_reason == "stop"  # the end is not yielded
        if k:
            s = b.submit(ids, k, temperature=0)
            assert list(s) == want[:k] and s.finish_reason == "length"


def test_the_context_bounds_a_generation(lm: PretrainedLM) -> None:
    ids = lm.encode_prompt("hello there")
    room = lm.context - len(ids)
    with lm.decode_batcher(2) as b:
        s = b.submit(ids, room + 50, temperature=0)
        assert len(list(s)) == room and s.finish_reason == "length"
        with pytest.raises(ConfigError, match=f"{lm.context} tokens.*context is {lm.context}"):
            b.submit([ids[0]] * lm.context, 1)


def test_a_closed_stream_leaves_the_batch(lm: PretrainedLM) -> None:
    ids = lm.encode_prompt("hello")
    want = list(lm.tokens(ids, 20, temperature=0))
    with lm.decode_batcher(4) as b:
        long = b.submit(ids, 100, temperature=0)
        next(long)
        short = b.submit(ids, 20, temperature=0)
        long.close()
        assert list(short) == want
        deadline = time.time() + 10
        while b.running:
            assert time.time() < deadline
            time.sleep(0.01)


def test_python_api_streams_through_a_batcher(lm: PretrainedLM) -> None:
    details: dict = {}
    alone = lm.generate("hello", 8, temperature=0)
    with lm.decode_batcher(2) as b:
        text = "".join(lm.generate_stream("hello", 8, temperature=0, details=details,
                                          batcher=b))
    assert text == alone
    assert details["prompt_tokens"] == len(lm.encode_prompt("hello"))
    assert details["finish_reason"] in ("stop", "length")


def test_several_stop_strings() -> None:
    def decode(ids: list[int]) -> str:
        return "".join(chr(96 + i) for i in ids)  # 1 -> a, 2 -> b, ...

    details: dict = {}
    pieces = list(stream_text(decode, iter([1, 2, 3, 4, 5, 6]), ["ef", "cd", "zz"], details))
    assert "".join(pieces) == "ab" and details["finish_reason"] == "stop"
    # a tail that may begin any of the stop strings is held back, then let go
    assert list(stream_text(decode, iter([1, 3, 5]), ["cx", "ey"])) == ["a", "c", "e"]

    class Ended:  # a token stream that says why it ended (a batcher's TokenStream)
        finish_reason = "stop"

        def __iter__(self):
            return iter([1, 2])

    details = {}
    assert "".join(stream_text(decode, Ended(), None, details)) == "ab"
    assert details == {"generated_tokens": 2, "finish_reason": "stop"}


def test_plain_caches_are_padded(lm: PretrainedLM) -> None:
    assert HFDecodeBatcher(lm.model, lm.eos, lm.context).padded
