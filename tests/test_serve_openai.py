"""The OpenAI-compatible routes (serve/openai_api.py), driven by the official ``openai`` client
against a real server on loopback: a pretrained model folder, one without a chat template, a
LoRA fine-tune run of the first, and one of our own GPT runs, served together."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from dlforge import LanguageModel
from dlforge.config.lm import FinetuneConfig
from dlforge.estimators.pretrained_lm import PretrainedLM
from dlforge.lm.finetune import finetune
from dlforge.serve.app import ServeSettings, served_run
from dlforge.testing import tiny_causal_lm
from tests.serving import Server

openai = pytest.importorskip("openai")

KEY = "sk-test-key"
HELLO = [{"role": "system", "content": "You are terse."},
         {"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("openai")
    out = {"tiny": tiny_causal_lm(root / "tiny", "llama"),
           "plain": tiny_causal_lm(root / "plain", "gpt2", chat_template=False)}
    data = root / "chats.jsonl"
    data.write_text("\n".join(json.dumps({"messages": [
        {"role": "user", "content": f"what is {i} plus 1?"},
        {"role": "assistant", "content": f"it is {i + 1}."}]}) for i in range(8)),
        encoding="utf-8")
    out["ft"] = root / "ft"
    finetune(out["tiny"], data, out["ft"], FinetuneConfig(max_steps=2), verbose=0)
    return out


@pytest.fixture(scope="module")
def server(folders: dict[str, Path], tiny_lm):
    models = [served_run(folders["tiny"]), served_run(folders["plain"]),
              served_run(folders["ft"]), served_run(tiny_lm[1])]  # the GPT run "fox"
    settings = ServeSettings(api_key=KEY, max_generations=8, max_queue=16, max_new_tokens=64,
                             timeout_s=60)
    with Server(models, settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tiny(folders: dict[str, Path]) -> PretrainedLM:
    return PretrainedLM.load(folders["tiny"])


def _error(excinfo: pytest.ExceptionInfo) -> dict:
    body = excinfo.value.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_models_are_listed(client) -> None:
    assert {m.id for m in client.models.list()} == {"tiny", "plain", "ft", "fox"}
    assert client.models.retrieve("ft").owned_by == "dlforge"
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="nope", prompt="hi", max_tokens=2)
    assert _error(e)["code"] == "model_not_found" and "tiny" in _error(e)["message"]


def test_completions_give_the_python_api_text(client, tiny: PretrainedLM) -> None:
    want = tiny.generate("hello there", 12, temperature=0)
    n_prompt = len(tiny.encode_prompt("hello there"))
    r = client.completions.create(model="tiny", prompt="hello there", max_tokens=12,
                                  temperature=0)
    assert r.object == "text_completion" and r.model == "tiny"
    (choice,) = r.choices
    assert choice.text == want and choice.finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (
        n_prompt, 12, n_prompt + 12)
    chunks = list(client.completions.create(model="tiny", prompt="hello there", max_tokens=12,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert all(c.usage is None for c in chunks[:-1])


def test_completions_take_token_ids(client, tiny: PretrainedLM, tiny_lm) -> None:
    ids = tiny.encode_prompt("hello there")
    want = tiny.generate("hello there", 6, temperature=0)
    r = client.completions.create(model="tiny", prompt=ids, max_tokens=6, temperature=0)
    assert r.choices[0].text == want and r.usage.prompt_tokens == len(ids)
    other = tiny.encode_prompt("good day")
    r = client.completions.create(model="tiny", prompt=[ids, other], max_tokens=6,
                                  temperature=0)
    texts = {c.index: c.text for c in r.choices}
    assert texts == {0: want, 1: tiny.generate("good day", 6, temperature=0)}
    lm = LanguageModel.load(tiny_lm[1])  # our GPT: its own tokenizer's ids
    gpt_ids = [int(t) for t in lm.tokenizer_.encode("the quick")]
    r = client.completions.create(model="fox", prompt=gpt_ids, max_tokens=8, temperature=0)
    assert r.choices[0].text == lm.generate("the quick", 8, temperature=0)
    vocab = len(tiny.tokenizer)
    for bad, needle in (([5, vocab + 7], f"token id {vocab + 7} (position 1)"),
                        ([-1], "token id -1"), ([[]], "no token ids")):
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(model="tiny", prompt=bad, max_tokens=2)
        assert _error(e)["param"] == "prompt" and needle in _error(e)["message"]


def test_chat_uses_the_model_template(client, tiny: PretrainedLM, folders) -> None:
    want = tiny.chat(HELLO, 10, temperature=0)
    r = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=10,
                                       temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == want
    assert r.usage.prompt_tokens == len(tiny.chat_ids(HELLO))
    stream = client.chat.completions.create(model="tiny", messages=HELLO,
                                            max_completion_tokens=10, temperature=0,
                                            stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    # the fine-tune run chats with the template saved in the run (its tokenizer/)
    ft = PretrainedLM.load(folders["ft"])
    r = client.chat.completions.create(model="ft", messages=HELLO, max_tokens=6,
                                       temperature=0)
    assert r.choices[0].message.content == ft.chat(HELLO, 6, temperature=0)


def test_n_seed_and_stop(client, tiny: PretrainedLM) -> None:
    two = client.completions.create(model="tiny", prompt="what is", max_tokens=8, n=2,
                                    temperature=1.0, seed=3)
    assert [c.index for c in two.choices] == [0, 1]
    assert two.usage.completion_tokens == 16
    again = client.completions.create(model="tiny", prompt="what is", max_tokens=8, n=2,
                                      temperature=1.0, seed=3)
    assert [c.text for c in again.choices] == [c.text for c in two.choices]
    # choice j samples with seed + j, as the Python API does with that seed
    assert two.choices[1].text == tiny.generate("what is", 8, temperature=1.0, seed=4)
    one = client.completions.create(model="tiny", prompt="what is", max_tokens=8, seed=3)
    assert one.choices[0].text == two.choices[0].text
    # several stop strings: the text ends before the first that appears
    want = tiny.generate("the", 20, temperature=0)
    stop = want[3:5]
    r = client.completions.create(model="tiny", prompt="the", max_tokens=20, temperature=0,
                                  stop=[stop, "never-there"])
    assert r.choices[0].text == want[:want.index(stop)]
    assert r.choices[0].finish_reason == "stop"
    chat = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4, n=2,
                                          temperature=0, stream=True)
    texts = ["", ""]
    for c in chat:
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
    assert texts[0] == texts[1] == tiny.chat(HELLO, 4, temperature=0)


def test_concurrent_clients_get_their_own_answers(server, client, tiny: PretrainedLM) -> None:
    prompts = ["hello there", "the", "what is 2", "a b c", "quick", "fox jumps", "dog", "1 2"]
    want = [tiny.generate(p, 16, temperature=0) for p in prompts]  # one at a time
    want_chat = tiny.chat([{"role": "user", "content": "hi"}], 16, temperature=0)
    got: dict[int, str] = {}
    barrier = threading.Barrier(len(prompts) + 2)

    def complete(i: int) -> None:
        barrier.wait()
        stream = client.completions.create(model="tiny", prompt=prompts[i], max_tokens=16,
                                           temperature=0, stream=i % 2 == 0)
        got[i] = (stream.choices[0].text if i % 2 else
                  "".join(c.choices[0].text for c in stream))

    def chat(i: int) -> None:
        barrier.wait()
        got[i] = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=16,
            temperature=0).choices[0].message.content

    batcher = server.app.state.models["tiny"].batcher
    steps, rows = batcher.steps, batcher.rows
    threads = [threading.Thread(target=complete, args=(i,)) for i in range(len(prompts))]
    threads += [threading.Thread(target=chat, args=(i,)) for i in (100, 101)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [got.get(i) for i in range(len(prompts))] == want
    assert got[100] == got[101] == want_chat
    assert batcher.rows - rows > batcher.steps - steps  # decoded together, not in turn


def test_our_gpt_run_completes(client, tiny_lm) -> None:
    lm = LanguageModel.load(tiny_lm[1])
    r = client.completions.create(model="fox", prompt="the quick", max_tokens=20,
                                  temperature=0)
    assert r.choices[0].text == lm.generate("the quick", 20, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.prompt_tokens == 9
    with pytest.raises(openai.BadRequestError) as e:  # a char model: characters it never saw
        client.completions.create(model="fox", prompt="QZ€", max_tokens=2)
    assert _error(e)["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="fox", messages=HELLO, max_tokens=2)
    assert "chat template" in _error(e)["message"]


def test_bad_requests_are_400_naming_the_parameter(client, server) -> None:
    def bad(call, **kw) -> dict:
        with pytest.raises(openai.BadRequestError) as e:
            call(**kw)
        return _error(e)

    complete = client.completions.create
    chat = client.chat.completions.create
    err = bad(complete, model="tiny", prompt="hi", max_tokens=2, extra_body={"best_off": 2})
    assert err["param"] == "best_off" and err["code"] == "unknown_parameter"
    assert "best_off" in err["message"] and "max_tokens" in err["message"]
    err = bad(chat, model="tiny", messages=HELLO, presence_penalty=0.5)
    assert err["param"] == "presence_penalty" and "not supported" in err["message"]
    chat(model="tiny", messages=HELLO, max_tokens=1, presence_penalty=0, user="u-1")  # neutral
    err = bad(chat, model="tiny", messages=HELLO, logprobs=True)
    assert err["param"] == "logprobs"
    err = bad(complete, model="tiny", prompt="hi", temperature=5)
    assert err["param"] == "temperature"
    err = bad(complete, model="tiny", prompt="hi", n=9)  # past --max-generations (8)
    assert err["param"] == "n"
    err = bad(chat, model="plain", messages=HELLO)
    assert err["code"] == "chat_template_missing" and "/v1/completions" in err["message"]
    err = bad(chat, model="tiny", messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}])
    assert err["param"] == "messages" and "image_url" in err["message"]
    # a prompt as long as the context: 400 with both numbers, never cut
    tiny = server.app.state.models["tiny"].lm
    long, longish = "hello " * 200, "hello " * 80
    n = len(tiny.encode_prompt(long))
    err = bad(complete, model="tiny", prompt=long, max_tokens=2)
    assert err["code"] == "context_length_exceeded"
    assert f"is {n} tokens" in err["message"] and "context is 128" in err["message"]
    # the prompt fits, but not with max_tokens after it
    n = len(tiny.encode_prompt(longish))
    err = bad(complete, model="tiny", prompt=longish, max_tokens=64)
    assert err["param"] == "max_tokens" and err["code"] == "context_length_exceeded"
    assert f"is {n} tokens and max_tokens is 64" in err["message"]
    assert f"at most {128 - n}" in err["message"]
    err = bad(complete, model="tiny", prompt="hi", max_tokens=65)  # past --max-new-tokens
    assert "65" in err["message"] and "64" in err["message"]
    auth = {"Authorization": f"Bearer {KEY}"}
    for headers in ({"Content-Type": "application/json"}, {}):
        r = httpx.post(server.url + "/v1/completions", content=b"{nope",
                       headers={**auth, **headers})
        assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


def test_the_api_key_is_required(server) -> None:
    for key in ("wrong", ""):
        c = openai.OpenAI(base_url=server.url + "/v1", api_key=key or "x", max_retries=0,
                          default_headers={} if key else {"Authorization": ""})
        with pytest.raises(openai.AuthenticationError) as e:
            c.models.list()
        assert _error(e)["code"] == "invalid_api_key"


def _metric(text: str, name: str, model: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{model="{model}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"{name} for {model} is not in /metrics")


def test_metrics_and_a_stream_closed_early(client, server) -> None:
    stream = client.completions.create(model="tiny", prompt="hi", max_tokens=64,
                                       temperature=0, stream=True)
    next(iter(stream))
    stream.close()  # the client goes away mid-answer: the generation stops
    deadline = time.time() + 30
    while True:
        text = httpx.get(server.url + "/metrics").text
        if _metric(text, "dlforge_generations_running", "tiny") == 0:
            break
        assert time.time() < deadline, "the generation was not stopped"
        time.sleep(0.05)
    assert _metric(text, "dlforge_generations_queued", "tiny") == 0
    assert _metric(text, "dlforge_time_to_first_token_seconds_count", "tiny") > 0
    assert _metric(text, "dlforge_generated_tokens_total", "tiny") > 0
    assert _metric(text, "dlforge_generated_tokens_per_second", "tiny") > 0
    assert _metric(text, "dlforge_generations_aborted_total", "tiny") >= 1
