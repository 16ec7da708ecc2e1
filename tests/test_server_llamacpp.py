"""llama.cpp's native endpoints (/completion, /tokenize, /detokenize, /props, /health) with
llama.cpp's shapes, replaying SillyTavern 1.12.6's llama.cpp-type request body against the demo
model it was captured with."""
from __future__ import annotations

import json

import pytest

from test_server_clients import client_body, server, worker  # noqa: F401 - shared fixtures
from test_server_support import request, serving, sse_events

PROMPT = "Emma Woodhouse, handsome, clever, and rich,"
ST_LLAMACPP = "sillytavern-1.12.6-llamacpp_generate_stream.json"


def stream_datas(raw: str) -> list[dict]:
    return [json.loads(d) for _, d in sse_events(raw)]


def test_sillytavern_llamacpp_request_streams(server, worker):  # noqa: F811
    body = {**client_body(ST_LLAMACPP), "n_predict": 12, "seed": 5}
    assert body["stream"] is True and body["cache_prompt"] is True and body["samplers"]
    status, headers, raw = request(server, "POST", "/completion", body)
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    datas = stream_datas(raw)
    assert all(e == (None) for e, _ in sse_events(raw))                 # plain data: lines, no event names
    assert [d["stop"] for d in datas] == [False] * (len(datas) - 1) + [True]
    last = datas[-1]
    assert last["tokens_predicted"] == 12 and last["stopped_limit"] and not last["stopped_eos"]
    # SillyTavern keeps 8192 tokens of context; the demo model has 512: cut, and said so
    assert last["truncated"] is True and last["prompt_tokens_dropped"] > 2000
    assert int(headers["X-Prompt-Tokens-Dropped"]) == last["prompt_tokens_dropped"]
    assert last["tokens_evaluated"] + 12 + 16 <= worker.n_ctx + 16
    streamed = "".join(d["content"] for d in datas)
    status, _, whole = request(server, "POST", "/completion", {**body, "stream": False})
    assert status == 200 and whole["content"] == streamed and whole["stop"] is True
    assert set(whole["timings"]) >= {"prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "predicted_per_second"}


def test_completion_probabilities_streamed_and_not(server, worker):  # noqa: F811
    body = {"prompt": PROMPT, "n_predict": 6, "temperature": 0, "n_probs": 3, "ignore_eos": True}
    whole = request(server, "POST", "/completion", body)[2]
    probs = whole["completion_probabilities"]
    assert len(probs) == 6
    for item in probs:
        assert len(item["probs"]) == 3 and item["content"] == item["probs"][0]["tok_str"]   # greedy: the top one
        assert item["probs"][0]["prob"] >= item["probs"][1]["prob"] >= item["probs"][2]["prob"]
    datas = stream_datas(request(server, "POST", "/completion", {**body, "stream": True})[2])
    streamed = [d["completion_probabilities"][0] for d in datas[:-1]]
    # the same tokens and alternatives (probabilities up to float noise: the prompt's cache is reused)
    assert [(p["content"], [q["tok_str"] for q in p["probs"]]) for p in streamed] == \
        [(p["content"], [q["tok_str"] for q in p["probs"]]) for p in probs]
    for a, b in zip(streamed, probs):
        assert [q["prob"] for q in a["probs"]] == pytest.approx([q["prob"] for q in b["probs"]], abs=1e-4)
    assert "".join(p["content"] for p in probs) == whole["content"]


def test_llamacpp_names_and_defaults(server, worker):  # noqa: F811
    tok = worker.tokenizer
    greedy = {"prompt": PROMPT, "n_predict": 4, "temperature": 0, "ignore_eos": True}
    first = request(server, "POST", "/completion", greedy)[2]["content"]
    banned = tok.encode(first)[0]
    # logit_bias pairs; false bans the token
    other = request(server, "POST", "/completion", {**greedy, "logit_bias": [[banned, False]]})[2]["content"]
    assert tok.encode(other)[0] != banned
    assert request(server, "POST", "/completion", {**greedy, "logit_bias": {str(banned): -1000}})[2]["content"] == other
    # stop strings are not part of the content (llama.cpp), and are reported
    reply = request(server, "POST", "/completion", {**greedy, "n_predict": 12, "stop": [first[2:4]]})[2]
    assert reply["stopped_word"] and reply["stopping_word"] == first[2:4] and reply["content"] == first[:2]
    # a token-id prompt is the same prompt
    ids = tok.encode(PROMPT)
    assert request(server, "POST", "/completion", {**greedy, "prompt": ids})[2]["content"] == first


def test_llamacpp_errors_have_llamacpps_shape(server):  # noqa: F811
    status, _, body = request(server, "POST", "/completion", {"prompt": PROMPT, "samplers": ["top_k", "bogus"]})
    assert status == 400 and "bogus" in body["error"]["message"] and body["error"]["code"] == 400
    status, _, body = request(server, "POST", "/completion", {"prompt": [["a"], ["b"]]})
    assert status == 400 and "prompt" in body["error"]["message"]
    status, _, body = request(server, "POST", "/completion", {"prompt": PROMPT, "grammar": "root ::= x"})
    assert status == 400 and "grammar" in body["error"]["message"]


def test_tokenize_detokenize_props_health(server, worker):  # noqa: F811
    tok = worker.tokenizer
    ids = request(server, "POST", "/tokenize", {"content": PROMPT, "add_special": False})[2]["tokens"]
    assert ids == tok.encode(PROMPT)
    pieces = request(server, "POST", "/tokenize", {"content": PROMPT, "with_pieces": True})[2]["tokens"]
    assert [p["id"] for p in pieces] == ids and "".join(p["piece"] for p in pieces) == PROMPT
    assert request(server, "POST", "/detokenize", {"tokens": ids})[2] == {"content": PROMPT}
    assert request(server, "POST", "/detokenize", {"tokens": [10 ** 9]})[0] == 400
    props = request(server, "GET", "/props")[2]
    assert props["default_generation_settings"]["n_ctx"] == worker.n_ctx and props["total_slots"] == 1
    assert request(server, "GET", "/health")[2] == {"status": "ok"}


def test_llamacpp_key_checks(worker):  # noqa: F811
    with serving(worker, api_key="k") as s:
        assert request(s, "GET", "/health")[0] == 200 and request(s, "GET", "/props")[0] == 200
        status, _, body = request(s, "POST", "/completion", {"prompt": PROMPT, "n_predict": 2})
        assert status == 401 and body["error"]["type"] == "authentication_error"
        assert request(s, "POST", "/tokenize", {"content": "x"})[0] == 401
        assert request(s, "POST", "/tokenize", {"content": "x"}, headers={"Authorization": "Bearer k"})[0] == 200


@pytest.mark.parametrize("path", ["/completion", "/tokenize"])
def test_llamacpp_endpoints_on_a_kept_open_connection(server, path):  # noqa: F811
    from test_server_connection import Connection
    c = Connection(server)
    try:
        assert c.ask("POST", path, {"prompt": 7, "content": 7})[0] == 400
        assert c.ask("GET", "/health")[0] == 200
        assert c.ask("POST", path, {"prompt": PROMPT, "content": PROMPT, "n_predict": 2})[0] == 200
    finally:
        c.close()
