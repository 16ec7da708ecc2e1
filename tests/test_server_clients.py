"""Request bodies captured from the clients themselves (tests/fixtures/clients: Kobold Lite v180,
SillyTavern 1.12.6), replayed as they are against the demo model they were captured with, and
answered the way those clients read the answers (issue 21)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.server.worker import EngineWorker
from test_server_support import request, serving, sse_events

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = Path(__file__).resolve().parent / "fixtures" / "clients"
PROMPT = "Emma Woodhouse, handsome, clever, and rich,"


def client_body(name: str) -> dict:
    """A request body captured from the client itself (tests/fixtures/clients/README.md)."""
    return json.loads((CLIENTS / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def worker():
    return EngineWorker.load(ROOT / "resources" / "demo" / "demo-austen-q5_1.bin", backend="reference")


@pytest.fixture(scope="module")
def server(worker):
    with serving(worker) as s:
        yield s


# -- the samplers Lite and SillyTavern send ----------------------------------------------------


def test_kobold_lite_with_dry_xtc_dynatemp_smoothing_and_a_phrase_ban(server):
    """Lite v180's request with DRY 0.8 switched on (replayed as captured), then with XTC,
    dynamic temperature, smoothing and a phrase ban added: answered, and the phrase absent."""
    lite = client_body("kobold-lite-180-generate-dry.json")
    assert lite["dry_multiplier"] == 0.8
    status, _, body = request(server, "POST", "/api/v1/generate", lite)
    assert status == 200 and isinstance(body["results"][0]["text"], str)
    tuned = {**lite, "sampler_seed": 11, "max_length": 24, "xtc_threshold": 0.1, "xtc_probability": 0.5,
             "dynatemp_range": 0.4, "dynatemp_exponent": 1.2, "smoothing_factor": 0.3, "use_default_badwordsids": True}
    status, _, body = request(server, "POST", "/api/v1/generate", tuned)
    assert status == 200
    free = body["results"][0]["text"]
    phrase = free[2:9]                     # what this very request writes without the ban
    assert len(phrase) == 7
    status, _, body = request(server, "POST", "/api/v1/generate", {**tuned, "banned_tokens": [phrase.upper()]})
    assert status == 200
    banned = body["results"][0]["text"]
    assert phrase.lower() not in banned.lower() and banned != free
    # streamed, too: no event carries any part of it
    status, _, raw = request(server, "POST", "/api/extra/generate/stream", {**tuned, "banned_tokens": [phrase]})
    streamed = "".join(json.loads(d)["token"] for _, d in sse_events(raw))
    assert streamed == banned


def test_sillytavern_sends_its_samplers_on_every_request(server):
    """SillyTavern's KoboldCpp-type body (DRY breakers as a JSON string, smoothing_curve, XTC at
    probability 0, grammar "") is accepted as captured, streamed or not; switching DRY, XTC,
    dynamic temperature (dynatemp_low/high) and banned_phrases on changes nothing in that."""
    for name in ("sillytavern-1.12.6-koboldcpp_generate_nostream.json",
                 "sillytavern-1.12.6-koboldcpp_generate_stream.json"):
        body = {**client_body(name), "max_tokens": 8}
        status, _, reply = request(server, "POST", "/v1/completions", body)
        assert status == 200, reply
    body = {**client_body("sillytavern-1.12.6-koboldcpp_generate_nostream.json"), "max_tokens": 8,
            "dry_multiplier": 0.8, "xtc_probability": 0.3, "dynamic_temperature": True, "dynatemp_low": 0.3,
            "dynatemp_high": 0.9, "smoothing_factor": 0.2, "smoothing_curve": 2, "banned_phrases": ["the", "and"]}
    status, _, reply = request(server, "POST", "/v1/completions", body)
    assert status == 200, reply
    assert "the" not in reply["choices"][0]["text"].lower()


def test_sampler_fields_are_checked(server):
    for field, value in [("dry_multiplier", -1), ("xtc_threshold", 2), ("smoothing_curve", 11),
                         ("dry_sequence_breakers", "[not json"), ("banned_tokens", [1, 2]),
                         ("banned_phrases", [f"p{i}" for i in range(49)])]:
        status, _, body = request(server, "POST", "/api/v1/generate", {"prompt": PROMPT, field: value})
        assert status == 400 and field.split("_")[0] in body["detail"]["msg"], (field, body)


# -- a prompt longer than the context is cut, and the answer says so ---------------------------


def test_overflowing_prompts_are_reported_on_every_api(server, worker):
    """SillyTavern keeps 8192 tokens of context whatever the model has: its ~2000-token prompt
    to the demo model's 512 is cut, and the reply says by how much (body and header)."""
    body = {**client_body("sillytavern-1.12.6-koboldcpp_generate_nostream.json"), "max_tokens": 4}
    n_prompt = len(worker.tokenizer.encode(body["prompt"]))
    status, headers, reply = request(server, "POST", "/v1/completions", body)
    assert status == 200
    dropped = reply["usage"]["prompt_tokens_dropped"]
    assert dropped == n_prompt - reply["usage"]["prompt_tokens"] > 1000
    assert int(headers["X-Prompt-Tokens-Dropped"]) == dropped and int(headers["X-Prompt-Tokens"]) <= worker.n_ctx
    # KoboldCpp's API: in the result (Lite's memory is kept, the story is cut) and in the stream's last event
    lite = {**client_body("kobold-lite-180-generate-dry.json"), "max_length": 4}
    status, headers, reply = request(server, "POST", "/api/v1/generate", lite)
    assert status == 200 and reply["results"][0]["prompt_tokens_dropped"] > 0
    assert headers["X-Prompt-Tokens-Dropped"] == str(reply["results"][0]["prompt_tokens_dropped"])
    status, headers, raw = request(server, "POST", "/api/extra/generate/stream", lite)
    last = json.loads(sse_events(raw)[-1][1])
    assert last["prompt_tokens_dropped"] == int(headers["X-Prompt-Tokens-Dropped"]) > 0
    # a prompt that fits says 0
    status, headers, reply = request(server, "POST", "/api/v1/generate", {"prompt": PROMPT, "max_length": 2})
    assert reply["results"][0]["prompt_tokens_dropped"] == 0 and headers["X-Prompt-Tokens-Dropped"] == "0"


# -- mikupad: probabilities in the KoboldCpp stream, token counts in OpenAI mode ----------------


def test_kobold_stream_carries_top_logprobs_when_asked(server):
    body = {"prompt": PROMPT, "max_length": 5, "temperature": 0, "logprobs": 3, "use_default_badwordsids": True}
    events = [json.loads(d) for _, d in sse_events(request(server, "POST", "/api/extra/generate/stream", body)[2])]
    tokens = events[:-1]
    assert len(tokens) == 5
    for e in tokens:
        assert [set(t) for t in e["top_logprobs"]] == [{"token", "logprob"}] * 3
        assert e["logprob"] == pytest.approx(e["top_logprobs"][0]["logprob"])      # greedy: the top one
    whole = request(server, "POST", "/api/v1/generate", body)[2]["results"][0]
    assert "".join(e["token"] for e in events) == whole["text"]
    assert [e["top_logprobs"][0]["token"] for e in tokens] == [c["token"] for c in whole["logprobs"]["content"]]
    plain = [json.loads(d) for _, d in sse_events(request(server, "POST", "/api/extra/generate/stream",
                                                          {**body, "logprobs": None})[2])]
    assert all("top_logprobs" not in e for e in plain)


def test_openai_mode_token_counts(server, worker):
    ids = worker.tokenizer.encode(PROMPT)
    assert request(server, "POST", "/v1/token/encode", {"text": PROMPT})[2] == {"tokens": ids, "length": len(ids)}
    assert request(server, "POST", "/v1/internal/encode", {"text": PROMPT})[2] == {"tokens": ids, "length": len(ids)}
    assert request(server, "POST", "/v1/internal/token-count", {"text": PROMPT})[2] == {"length": len(ids)}
    status, _, body = request(server, "POST", "/v1/internal/token-count", {"text": 5})
    assert status == 400 and body["error"]["param"] == "text"


def test_chat_completion_keeps_the_first_tokens_leading_space(server):
    body = {**client_body("sillytavern-1.12.6-chatcompletion_custom_stream.json"), "max_tokens": 6,
            "temperature": 0}
    datas = [json.loads(d) for _, d in sse_events(request(server, "POST", "/v1/chat/completions", body)[2])
             if d != "[DONE]"]
    streamed = "".join(d["choices"][0]["delta"].get("content") or "" for d in datas if d["choices"])
    whole = request(server, "POST", "/v1/chat/completions", {**body, "stream": False})[2]
    assert whole["choices"][0]["message"]["content"] == streamed
    assert streamed.startswith(" ") and streamed.strip()      # the model wrote " I..." and so do we


# -- every captured body, replayed as it is -----------------------------------------------------

REPLAYS = [  # file, endpoint, how the client reads the text
    ("kobold-lite-180-generate-dry.json", "/api/v1/generate", "kobold"),
    ("kobold-lite-180-instruct.json", "/api/v1/generate", "kobold"),
    ("kobold-lite-180-instruct.json", "/api/extra/generate/stream", "kobold-stream"),
    ("sillytavern-1.12.6-koboldcpp_generate_nostream.json", "/v1/completions", "openai"),
    ("sillytavern-1.12.6-koboldcpp_generate_stream.json", "/v1/completions", "openai-stream"),
    ("sillytavern-1.12.6-ooba_generate_nostream.json", "/v1/completions", "openai"),
    ("sillytavern-1.12.6-ooba_generate_stream.json", "/v1/completions", "openai-stream"),
    ("sillytavern-1.12.6-llamacpp_generate_stream.json", "/completion", "llamacpp-stream"),
    ("sillytavern-1.12.6-chatcompletion_custom_stream.json", "/v1/chat/completions", "chat-stream"),
]


@pytest.mark.parametrize("name, path, reader", REPLAYS)
def test_every_captured_body_is_answered_as_its_client_reads_it(server, name, path, reader):
    body = client_body(name)
    # only the length is changed (the reference backend is slow); every field stays as captured
    for key in ("max_length", "max_tokens", "max_new_tokens", "n_predict", "num_predict"):
        if key in body:
            body[key] = 6
    status, headers, reply = request(server, "POST", path, body)
    assert status == 200, reply
    if reader == "kobold":
        text = reply["results"][0]["text"]
    elif reader == "openai":
        text = reply["choices"][0]["text"]
    else:
        assert headers["Content-Type"] == "text/event-stream"
        datas = [json.loads(d) for _, d in sse_events(reply) if d != "[DONE]"]
        if reader == "kobold-stream":
            text = "".join(d["token"] for d in datas)
        elif reader == "openai-stream":
            text = "".join(d["choices"][0]["text"] for d in datas if d["choices"])
            assert reply.rstrip().endswith("data: [DONE]")
        elif reader == "llamacpp-stream":
            text = "".join(d["content"] for d in datas)
            assert datas[-1]["stop"] is True
        else:
            text = "".join(d["choices"][0]["delta"].get("content") or "" for d in datas if d["choices"])
    assert isinstance(text, str)          # (sampled with a random seed: it may be empty, if the model ends at once)


# SillyTavern 1.12's slider ends (public/index.html) and its 64-bit seed box, per API type
WIDEST = {
    "sillytavern-1.12.6-koboldcpp_generate_nostream.json": dict(
        temperature=5.0, rep_pen=3, repetition_penalty=3, repeat_penalty=3, rep_pen_range=-1,
        repetition_penalty_range=-1, repeat_last_n=-1, top_k=-1, seed=2**64 - 1, sampler_seed=2**64 - 1,
        mirostat_tau=20, dry_penalty_last_n=8192),
    "sillytavern-1.12.6-llamacpp_generate_stream.json": dict(
        temperature=5.0, repeat_penalty=3, repeat_last_n=8192, rep_pen_range=8192, top_k=-1, seed=18446744073709552000,
        sampler_seed=18446744073709552000),
    "sillytavern-1.12.6-ooba_generate_nostream.json": dict(temperature=4.99, rep_pen=2.5, smoothing_factor=0.3,
                                                           smoothing_curve=10, seed=99999999999,
                                                                   sampler_seed=99999999999),
    "kobold-lite-180-generate-dry.json": dict(temperature=4.0, rep_pen=3, rep_pen_range=4096, rep_pen_slope=10,
                                              sampler_seed=2**63),
}


@pytest.mark.parametrize("name, path, reader", [r for r in REPLAYS if r[0] in WIDEST])
def test_captured_bodies_at_their_clients_slider_ends_are_answered(server, name, path, reader):
    """What the client itself lets its user set is answered, not refused (a temperature of 4,
    rep_pen_range 8192 or "All", a 64-bit seed were 400s); the same seed repeats the text."""
    body = {**client_body(name), **WIDEST[name]}
    for key in ("max_length", "max_tokens", "max_new_tokens", "n_predict", "num_predict"):
        if key in body:
            body[key] = 4
    first = request(server, "POST", path, body)
    assert first[0] == 200, first[2]
    if reader in ("kobold", "openai"):           # a fixed seed: the same text again
        text = (lambda r: r["results"][0]["text"] if reader == "kobold" else r["choices"][0]["text"])
        assert text(request(server, "POST", path, body)[2]) == text(first[2])
    status, _, reply = request(server, "POST", path, {**body, "temperature": 1e9})
    assert status == 400 and "temperature" in json.dumps(reply)
