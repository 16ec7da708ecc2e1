"""Replays of what SillyTavern (both ways it connects to KoboldCpp) and Kobold Lite send,
answered as those clients expect (shared/spec/server-api.md A1b), plus KoboldCpp's quirks."""
from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from test_server_support import SlowWorker, load_worker, request, serving, sse_events

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    return load_worker(tmp_path_factory.mktemp("kobold"))


@pytest.fixture(scope="module")
def server(worker):
    with serving(worker) as s:
        yield s


def version_at_least(version: str, minimum: str) -> bool:
    """JavaScript's `a.localeCompare(b, undefined, {numeric: true}) >= 0` as SillyTavern uses it:
    digit runs compare as numbers, and letters sort after digits."""
    def key(s):
        return [(0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in re.findall(r"\d+|\D+", s)]
    return key(version) >= key(minimum)


# -- SillyTavern, API "KoboldAI Classic" -----------------------------------------------------

ST_CLASSIC_BODY = {
    "prompt": PROMPT, "use_story": False, "use_memory": False, "use_authors_note": False,
    "use_world_info": False, "max_context_length": 128, "max_length": 16, "rep_pen": 1.1,
    "rep_pen_range": 64, "rep_pen_slope": 0.9, "temperature": 0.7, "tfs": 1, "top_a": 0, "top_k": 0,
    "top_p": 0.9, "min_p": 0.05, "typical": 1, "sampler_order": [6, 0, 1, 3, 4, 2, 5], "singleline": False,
    "use_default_badwordsids": False, "mirostat": 0, "mirostat_eta": 0.1, "mirostat_tau": 5, "grammar": "",
    "sampler_seed": 42, "stop_sequence": ["\nUser:"],
}


def test_sillytavern_classic_status_check_enables_every_feature(server):
    api = "/api"
    with ThreadPoolExecutor(3) as pool:          # ST sends the three GETs in parallel
        futures = [pool.submit(request, server, "GET", api + p) for p in
                   ("/v1/info/version", "/extra/version", "/v1/model")]
        (s1, _, united), (s2, _, kcpp), (s3, _, model) = [f.result() for f in futures]
    assert s1 == s2 == s3 == 200
    united_version, kcpp_version = united["result"], kcpp["result"]
    assert model["result"] not in ("", "ReadOnly") and model["result"].startswith("koboldcpp/")
    for minimum in ("1.2.2", "1.2.4"):                                 # stop_sequence, badwordsids
        assert version_at_least(united_version, minimum)
    for minimum in ("1.30", "1.35", "1.41", "1.44", "1.48"):           # streaming ... min_p
        assert version_at_least(kcpp_version, minimum)


def test_sillytavern_classic_generate_and_stream(server):
    status, _, body = request(server, "POST", "/api/v1/generate", ST_CLASSIC_BODY)
    assert status == 200 and len(body["results"]) == 1
    text = body["results"][0]["text"]
    assert isinstance(text, str) and body["results"][0]["finish_reason"] in ("stop", "length")
    # the streaming reader appends data.token of every event and ignores finish_reason
    status, headers, raw = request(server, "POST", "/api/extra/generate/stream", ST_CLASSIC_BODY)
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    events = sse_events(raw)
    assert all(name == "message" for name, _ in events)
    datas = [json.loads(d) for _, d in events]
    assert "".join(d["token"] for d in datas) == text                  # same seed, same text
    assert [d["finish_reason"] for d in datas[:-1]] == ["null"] * (len(datas) - 1)
    assert datas[-1]["finish_reason"] in ("stop", "length")
    assert "[DONE]" not in raw


def test_sillytavern_classic_abort_and_tokencount(server, worker):
    status, _, body = request(server, "POST", "/api/extra/abort", raw=b"", headers={})
    assert status == 200 and body == {"success": "false", "done": "false"}   # nothing was running
    status, _, body = request(server, "POST", "/api/extra/tokencount", {"prompt": PROMPT})
    assert status == 200 and body["ids"] == worker.tokenizer.encode(PROMPT) and body["value"] == len(body["ids"])


def test_error_shape_is_detail_msg(server):
    status, _, body = request(server, "POST", "/api/v1/generate", {"prompt": PROMPT, "top_p": "high"})
    assert status == 400 and "top_p" in body["detail"]["msg"] and body["detail"]["type"] == "bad_input"
    status, _, body = request(server, "POST", "/api/v1/generate", raw=b"{not json")
    assert status == 400 and body["detail"]["msg"].startswith("Error parsing input")
    # every unsupported feature a request switches on is named in the one refusal
    status, _, body = request(server, "POST", "/api/v1/generate",
                              {"prompt": PROMPT, "grammar": "root ::= [a-z]+", "guidance_scale": 1.5,
                               "negative_prompt": "", "images": ["aGk="], "dry_multiplier": 0.8})
    assert status == 400
    message = body["detail"]["msg"]
    assert "grammar" in message and "guidance_scale" in message and "images" in message
    assert "negative_prompt" not in message and "dry_multiplier" not in message


# -- SillyTavern, API "Text Completion", type KoboldCpp ----------------------------------------

ST_TEXTGEN_BODY = {
    "prompt": PROMPT, "model": "tiny", "max_new_tokens": 16, "max_tokens": 16, "logprobs": None,
    "temperature": 0.7, "top_p": 0.9, "typical_p": 1, "typical": 1, "sampler_seed": 5, "min_p": 0,
    "repetition_penalty": 1.1, "frequency_penalty": 0, "presence_penalty": 0, "top_k": 40, "min_length": 0,
    "min_tokens": 0, "num_beams": 1, "length_penalty": 1, "early_stopping": False, "add_bos_token": True,
    "smoothing_factor": 0, "dynatemp_range": 0, "stopping_strings": ["\nUser:"], "stop": ["\nUser:"],
    "truncation_length": 128, "ban_eos_token": False, "skip_special_tokens": True, "top_a": 0, "tfs": 1,
    "mirostat_mode": 0, "mirostat_tau": 5, "mirostat_eta": 0.1, "custom_token_bans": "", "banned_phrases": [],
    "sampler_order": [6, 0, 1, 3, 4, 2, 5], "rep_pen": 1.1, "rep_pen_range": 64, "repetition_penalty_range": 64,
    "seed": 5, "n": 1, "ignore_eos": False, "n_predict": 16, "num_predict": 16, "num_ctx": 128,
    "grammar": "", "xtc_threshold": 0.1, "xtc_probability": 0, "dry_multiplier": 0, "dry_base": 1.75,
    "dry_allowed_length": 2, "dry_sequence_breakers": '["\\n", ":"]',
}


def test_sillytavern_textgen_mode(server):
    status, _, models = request(server, "GET", "/v1/models")
    assert status == 200 and models["data"][0]["id"] == "tiny"
    status, _, body = request(server, "POST", "/v1/completions", ST_TEXTGEN_BODY)
    assert status == 200
    text = body["choices"][0]["text"]
    status, _, raw = request(server, "POST", "/v1/completions", {**ST_TEXTGEN_BODY, "stream": True})
    assert status == 200
    pieces = []
    for _, data in sse_events(raw):
        if data.startswith("[DONE]"):
            break
        pieces.append(json.loads(data)["choices"][0]["text"])
    assert "".join(pieces) == text
    assert raw.rstrip().endswith("data: [DONE]")
    # abort and tokenize go to the KoboldCpp endpoints of the same base URL, abort without auth
    status, _, body = request(server, "POST", "/api/extra/abort", raw=b"")
    assert status == 200 and body["success"] in ("true", "false")
    status, _, body = request(server, "POST", "/api/extra/tokencount", {"prompt": "Hello there"})
    assert status == 200 and body["value"] == len(body["ids"]) > 0


# -- Kobold Lite ------------------------------------------------------------------------------


def test_kobold_lite_connect_sequence(server, worker):
    assert request(server, "GET", "/api/v1/model")[2]["result"] != "inactive"
    assert request(server, "GET", "/api/v1/info/version")[2]["result"] == "1.2.5"
    assert request(server, "GET", "/api/v1/config/max_context_length")[2]["value"] == worker.n_ctx
    extra = request(server, "GET", "/api/extra/version")[2]
    assert extra["result"] == "KoboldCpp" and extra["version"]
    assert version_at_least(extra["version"], "1.74")              # SSE, memory, DRY, XTC gates
    for key in ("vision", "transcribe", "protected", "txt2img"):
        assert extra[key] is False
    assert request(server, "GET", "/api/extra/true_max_context_length")[2]["value"] == worker.n_ctx
    assert request(server, "GET", "/api/extra/preloadstory")[2] == {}
    assert request(server, "GET", "/api/latest/model")[2] == request(server, "GET", "/api/v1/model")[2]


def test_kobold_lite_generation_with_memory_genkey_and_polled_check(worker):
    slow = SlowWorker(worker, delay=0.03)
    with serving(slow) as server:
        body = {"prompt": PROMPT, "memory": "[Setting: a castle]\n", "max_length": 30, "genkey": "KCPP1234",
                "max_context_length": 128, "temperature": 0.7, "rep_pen": 1.1, "sampler_seed": 9,
                "logit_bias": {"0": -100}}
        result = {}
        t = threading.Thread(target=lambda: result.update(r=request(server, "POST", "/api/v1/generate", body)))
        t.start()
        assert slow.started.wait(10)
        time.sleep(0.4)
        partial = request(server, "POST", "/api/extra/generate/check", {"genkey": "KCPP1234"})[2]
        other = request(server, "POST", "/api/extra/generate/check", {"genkey": "KCPP9999"})[2]
        t.join(30)
        final = result["r"][2]["results"][0]["text"]
        assert partial["results"][0]["text"] and final.startswith(partial["results"][0]["text"])
        assert other["results"][0]["text"] == ""          # another user's text is not revealed
        perf = request(server, "GET", "/api/extra/perf")[2]
        assert perf["last_token_count"] == 30 and perf["last_seed"] == 9 and perf["stop_reason"] == 0
        assert perf["idle"] == 1 and perf["queue"] == 0


def test_abort_by_genkey_stops_the_running_generation(worker):
    slow = SlowWorker(worker, delay=0.05)
    with serving(slow) as server:
        body = {"prompt": PROMPT, "max_length": 80, "genkey": "KCPP0001", "logit_bias": {"0": -100}}
        result = {}
        t = threading.Thread(target=lambda: result.update(r=request(server, "POST", "/api/v1/generate", body)))
        t.start()
        assert slow.started.wait(10)
        time.sleep(0.2)
        assert request(server, "POST", "/api/extra/abort", {"genkey": "nope"})[2]["success"] == "false"
        assert request(server, "POST", "/api/extra/abort", {"genkey": "KCPP0001"})[2] == \
            {"success": "true", "done": "true"}
        t.join(30)
        assert result["r"][0] == 200
        assert slow.finished[0].stop_reason == "cancelled" and slow.finished[0].gen_tokens < 80


def test_stop_string_included_unless_trim_stop(server):
    base = {"prompt": PROMPT, "max_length": 20, "temperature": 0}
    text = request(server, "POST", "/api/v1/generate", base)[2]["results"][0]["text"]
    stop = text[5:8]
    assert len(stop) == 3 and text.find(stop) == 5
    kept = request(server, "POST", "/api/v1/generate", {**base, "stop_sequence": [stop]})[2]["results"][0]
    trimmed = request(server, "POST", "/api/v1/generate",
                      {**base, "stop_sequence": [stop], "trim_stop": True})[2]["results"][0]
    assert kept["text"] == text[:8] and trimmed["text"] == text[:5]   # KoboldCpp's default keeps it
    assert kept["finish_reason"] == "stop"
    raw = request(server, "POST", "/api/extra/generate/stream", {**base, "stop_sequence": [stop]})[2]
    assert "".join(json.loads(d)["token"] for _, d in sse_events(raw)) == text[:8]


def test_max_length_is_capped_and_kept_below_the_context(server, worker):
    body = request(server, "POST", "/api/v1/generate",
                   {"prompt": PROMPT, "max_length": 100000, "temperature": 0, "ban_eos_token": True})
    assert body[0] == 200
    perf = request(server, "GET", "/api/extra/perf")[2]
    assert perf["last_token_count"] == worker.n_ctx - 16       # KoboldCpp leaves min(ctx-4, 16) for the prompt


def test_kobold_logprobs_non_streaming(server):
    body = request(server, "POST", "/api/v1/generate",
                   {"prompt": PROMPT, "max_length": 5, "temperature": 0, "logprobs": 3, "ban_eos_token": True})[2]
    content = body["results"][0]["logprobs"]["content"]
    assert len(content) == 5
    for item in content:
        assert len(item["top_logprobs"]) == 3 and item["logprob"] == pytest.approx(item["top_logprobs"][0]["logprob"])

