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
    for field, value in [("dry_multiplier", -1), ("xtc_threshold", 2), ("smoothing_curve", 9),
                         ("dry_sequence_breakers", "[not json"), ("banned_tokens", [1, 2]),
                         ("banned_phrases", [f"p{i}" for i in range(49)])]:
        status, _, body = request(server, "POST", "/api/v1/generate", {"prompt": PROMPT, field: value})
        assert status == 400 and field.split("_")[0] in body["detail"]["msg"], (field, body)
