"""The official `openai` client against our server with a fixture model: completions (streamed
and not), n, echo, logprobs, chat, auth, 503 on a full queue, abort on disconnect."""
from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest

openai = pytest.importorskip("openai")

from app.server.request import GenerationRequest                      # noqa: E402
from engine.sampling import SamplerSettings                           # noqa: E402
from test_server_support import GateWorker, SlowWorker, load_worker, request, serving  # noqa: E402

PROMPT = "Once upon a time"
GREEDY = dict(temperature=0, max_tokens=12)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    return load_worker(tmp_path_factory.mktemp("openai"))


@pytest.fixture(scope="module")
def server(worker):
    with serving(worker) as s:
        yield s


def client(server, key="sk-anything", **kw):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60, **kw)


def test_models_lists_the_loaded_model(server):
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_completion_non_streaming_has_honest_usage(server, worker):
    c = client(server).completions.create(model="tiny", prompt=PROMPT, **GREEDY)
    choice = c.choices[0]
    assert c.object == "text_completion" and choice.index == 0
    assert choice.finish_reason in ("stop", "length")
    assert c.usage.prompt_tokens == len(worker.tokenizer.encode(PROMPT))
    assert 1 <= c.usage.completion_tokens <= 12
    assert c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens
    assert choice.text == worker.tokenizer.decode(worker.tokenizer.encode(choice.text)) or choice.text


def test_streaming_gives_the_same_text_as_non_streaming(server):
    cl = client(server)
    whole = cl.completions.create(model="tiny", prompt=PROMPT, **GREEDY).choices[0]
    chunks = list(cl.completions.create(model="tiny", prompt=PROMPT, stream=True,
                                        stream_options={"include_usage": True}, **GREEDY))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == whole.text
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals == [whole.finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1


def test_n_candidates_differ_and_repeat_with_a_seed(server):
    cl = client(server)
    args = dict(model="tiny", prompt=PROMPT, n=3, max_tokens=10, temperature=1.0, top_p=1.0, seed=7,
                extra_body={"top_k": 0})
    first = cl.completions.create(**args)
    again = cl.completions.create(**args)
    assert sorted(c.index for c in first.choices) == [0, 1, 2]
    texts = [c.text for c in sorted(first.choices, key=lambda c: c.index)]
    assert texts == [c.text for c in sorted(again.choices, key=lambda c: c.index)]
    assert len(set(texts)) > 1
    assert 3 <= first.usage.completion_tokens <= 30 and first.usage.prompt_tokens > 0


def test_streamed_candidates_arrive_together(server):
    cl = client(server)
    args = dict(model="tiny", prompt=PROMPT, n=2, max_tokens=8, temperature=1.0, seed=11)
    whole = cl.completions.create(**args)
    texts = {0: "", 1: ""}
    order = []
    for ch in cl.completions.create(stream=True, **args):
        for c in ch.choices:
            texts[c.index] += c.text
            order.append(c.index)
    assert texts == {c.index: c.text for c in whole.choices}
    # one batch: candidate 1's chunks start before candidate 0's end
    assert order.index(1) < len(order) - 1 - order[::-1].index(0)


def test_n_candidates_run_as_one_batch(worker):
    """The prompt is evaluated once; then each pass evaluates one token of every candidate still
    running, all in one call (engine.session.Branches)."""
    counted, passes = [], []
    session = worker.generator.session
    original_eval, original_branch = session.eval, session.branch

    def eval_(tokens, all_logits=False):
        counted.append(len(tokens))
        return original_eval(tokens, all_logits)

    def branch(n, max_new):
        branches = original_branch(n, max_new)
        inner = branches.eval

        def batch_eval(tokens, seqs=None):
            passes.append(len(tokens))
            return inner(tokens, seqs)
        branches.eval = batch_eval
        return branches

    worker.generator.reset()
    session.eval, session.branch = eval_, branch
    try:
        req = GenerationRequest(prompt=PROMPT * 3, settings=SamplerSettings(temperature=1.0, seed=3),
                                max_tokens=6, n=3)
        dones = [e.event for e in worker.run(req, threading.Event()) if hasattr(getattr(e, "event", None), "stop_reason")]
    finally:
        del session.eval, session.branch
    n_prompt = len(worker.tokenizer.encode(PROMPT * 3))
    assert sum(counted) == n_prompt and [d.prompt_tokens_reused for d in dones] == [0, 0, 0]
    assert sorted((d.index, d.seed) for d in dones) == [(0, 3), (1, 4), (2, 5)]
    assert len(passes) == max(d.gen_tokens for d in dones) - 1
    assert sum(passes) == sum(d.gen_tokens - 1 for d in dones)
    assert passes[0] == 3


def test_echo_with_logprobs_scores_the_prompt(server, worker):
    c = client(server).completions.create(model="tiny", prompt=PROMPT, echo=True, logprobs=3, **GREEDY)
    choice = c.choices[0]
    assert choice.text.startswith(PROMPT)
    lp = choice.logprobs
    n_prompt = c.usage.prompt_tokens
    assert "".join(lp.tokens[:n_prompt]) == PROMPT
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.text_offset[:3] == [0, len(lp.tokens[0]), len(lp.tokens[0]) + len(lp.tokens[1])]
    # the prompt's log-probabilities are the model's own
    ids = worker.tokenizer.encode(PROMPT)
    logits = worker.model.logits(ids)[:, :worker.tokenizer.n_vocab].astype(np.float64)
    logsm = logits - logits.max(1, keepdims=True)
    logsm -= np.log(np.exp(logsm).sum(1, keepdims=True))
    expected = [logsm[i - 1, ids[i]] for i in range(1, len(ids))]
    assert np.allclose(lp.token_logprobs[1:n_prompt], expected, atol=1e-4)
    for top in lp.top_logprobs[1:]:
        assert 1 <= len(top) <= 3
    # greedy: every generated token is the most likely alternative
    for token_lp, top in zip(lp.token_logprobs[n_prompt:], lp.top_logprobs[n_prompt:]):
        assert token_lp == pytest.approx(max(top.values()))


def test_streamed_logprobs_come_with_each_token(server):
    chunks = list(client(server).completions.create(model="tiny", prompt=PROMPT, logprobs=2, stream=True, **GREEDY))
    with_lp = [ch.choices[0].logprobs for ch in chunks if ch.choices and ch.choices[0].logprobs]
    assert with_lp and all(len(lp.tokens) == 1 and len(lp.top_logprobs[0]) <= 2 for lp in with_lp)


def test_chat_completion_streamed_and_not(server):
    cl = client(server)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story."}]
    whole = cl.chat.completions.create(model="tiny", messages=messages, **GREEDY)
    msg = whole.choices[0].message
    assert whole.object == "chat.completion" and msg.role == "assistant"
    chunks = list(cl.chat.completions.create(model="tiny", messages=messages, stream=True, **GREEDY))
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == msg.content              # nothing stripped, streamed or not
    assert whole.usage.prompt_tokens > len("Tell me a story.".split())


def test_chat_n_candidates_in_one_batch_repeat_with_a_seed(server):
    cl = client(server)
    args = dict(model="tiny", messages=[{"role": "user", "content": "Tell me a story."}], n=4, max_tokens=8,
                temperature=1.0, seed=9)
    first, again = cl.chat.completions.create(**args), cl.chat.completions.create(**args)
    assert sorted(c.index for c in first.choices) == [0, 1, 2, 3]
    texts = [c.message.content for c in sorted(first.choices, key=lambda c: c.index)]
    assert texts == [c.message.content for c in sorted(again.choices, key=lambda c: c.index)]
    assert len(set(texts)) > 1
    streamed = {i: "" for i in range(4)}
    for ch in cl.chat.completions.create(stream=True, **args):
        for c in ch.choices:
            streamed[c.index] += c.delta.content or ""
    assert [streamed[i] for i in range(4)] == texts


def test_chat_logprobs(server):
    c = client(server).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                               logprobs=True, top_logprobs=2, **GREEDY)
    content = c.choices[0].logprobs.content
    assert content and all(len(item.top_logprobs) <= 2 for item in content)
    assert all(item.logprob <= 0 for item in content)


def test_bad_settings_are_refused_with_the_field_named(server):
    with pytest.raises(openai.BadRequestError) as e:
        client(server).completions.create(model="tiny", prompt=PROMPT, max_tokens=5, top_p=1.5)
    assert "top_p" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client(server).completions.create(model="tiny", prompt=PROMPT, max_tokens=5, n=50)
    assert "n must be within 1..8" in str(e.value)


def test_auth_refused_without_the_key(worker):
    with serving(worker, api_key="s3cret") as server:
        with pytest.raises(openai.AuthenticationError):
            client(server, key="wrong").completions.create(model="tiny", prompt=PROMPT, max_tokens=3)
        assert client(server, key="s3cret").completions.create(model="tiny", prompt=PROMPT,
                                                                max_tokens=3).choices[0].text is not None
        status, _, body = request(server, "POST", "/v1/completions", {"prompt": PROMPT, "max_tokens": 3},
                                  headers={"X-Api-Key": "s3cret"})
        assert status == 200 and body["choices"]
        status, _, body = request(server, "POST", "/v1/chat/completions", {"messages": []})
        assert status == 401 and body["error"]["type"] == "authentication_error"
        # detection stays open but does not reveal the model
        assert [m.id for m in client(server, key="wrong").models.list().data] == ["protected-model"]


def test_503_when_the_queue_is_full(worker):
    gated = GateWorker(worker)
    with serving(gated, queue_depth=1) as server:
        results = []

        def call():
            results.append(client(server).completions.create(model="tiny", prompt=PROMPT, max_tokens=2))

        first = threading.Thread(target=call)
        first.start()
        assert gated.running.wait(10)
        second = threading.Thread(target=call)
        second.start()
        deadline = time.time() + 10
        while server.queue.waiting < 1 and time.time() < deadline:
            time.sleep(0.01)
        with pytest.raises(openai.APIStatusError) as e:
            client(server).completions.create(model="tiny", prompt=PROMPT, max_tokens=2)
        assert e.value.status_code == 503
        assert "busy" in e.value.body["message"]
        status, _, body = request(server, "POST", "/api/v1/generate", {"prompt": PROMPT, "max_length": 2})
        assert status == 503 and body["detail"]["type"] == "service_unavailable"
        gated.release()
        first.join(30)
        second.join(30)
        assert len(results) == 2


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_aborts_its_generation(worker, stream):
    slow = SlowWorker(worker, delay=0.05)
    with serving(slow) as server:
        body = json.dumps({"prompt": PROMPT, "max_tokens": 100, "temperature": 1.0, "stream": stream,
                           "logit_bias": {"0": -100}}).encode()
        sock = socket.create_connection(server.address, timeout=30)
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        if stream:
            received = b""
            while b"data: " not in received:            # the stream started: the generation is running
                chunk = sock.recv(65536)
                assert chunk, "the server closed the stream early"
                received += chunk
        else:
            assert slow.started.wait(10)
            time.sleep(0.2)
        sock.close()
        deadline = time.time() + 10
        while not slow.finished and time.time() < deadline:
            time.sleep(0.05)
        assert slow.finished and slow.finished[0].stop_reason == "cancelled"
        assert slow.finished[0].gen_tokens < 100
