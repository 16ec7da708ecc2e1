"""KoboldCpp-compatible endpoints (`/api/...`): what SillyTavern, Kobold Lite and mikupad call.

Replies copy KoboldCpp 1.76 field for field (shared/spec/server-api.md A1), including the
quirks clients rely on; each quirk is marked where it is implemented.
"""
from __future__ import annotations

import math
import time

from app.server.candidates import EventStream, collect, finish_reason, submit
from app.server.errors import ApiError
from app.server.generation_input import MAX_LOGPROBS, generation_request, number, string, token_ids
from app.server.request import ChoiceEvent
from app.server.routing import Route

# The KoboldAI United API version KoboldCpp emulates (a constant; SillyTavern enables stop
# sequences from 1.2.2 and use_default_badwordsids from 1.2.4).
UNITED_API_VERSION = "1.2.5"
# The KoboldCpp version we answer as: Lite enables SSE from 1.40, memory from 1.49, ... XTC
# from 1.74; this is the release whose behaviour the server copies.
KOBOLDCPP_VERSION = "1.76"


def routes():
    return [
        Route("/api/v1/model", ["GET"], model, secured=False),
        Route("/api/v1/info/version", ["GET"], info_version, secured=False),
        Route("/api/extra/version", ["GET"], extra_version, secured=False),
        Route("/api/v1/config/max_length", ["GET"], max_length, secured=False),
        Route("/api/v1/config/max_context_length", ["GET"], max_context_length, secured=False),
        Route("/api/extra/true_max_context_length", ["GET"], true_max_context_length, secured=False),
        Route("/api/v1/config/soft_prompt", ["GET"], lambda ex: ex.send_json({"value": ""}), secured=False),
        Route("/api/v1/config/soft_prompts_list", ["GET"], lambda ex: ex.send_json({"values": []}), secured=False),
        Route("/api/extra/preloadstory", ["GET"], lambda ex: ex.send_json({}), secured=False),
        Route("/api/extra/perf", ["GET"], perf, secured=False),
        Route("/api/v1/generate", ["POST"], generate, secured=True),
        Route("/api/extra/generate/stream", ["POST"], generate_stream, secured=True),
        Route("/api/extra/generate/check", ["GET", "POST"], check, secured=True),
        Route("/api/extra/abort", ["POST"], abort, secured=True, allow_unauthorized=abort_allowed_without_key),
        Route("/api/extra/tokencount", ["POST"], tokencount, secured=True),
        Route("/api/extra/tokenize", ["POST"], tokencount, secured=True),
        Route("/api/extra/detokenize", ["POST"], detokenize, secured=True),
    ]


# -- detection and configuration ------------------------------------------------------------


def model(ex) -> None:
    # KoboldCpp hides the model's name from callers without the key.
    name = ex.worker.model_name if ex.authorized else "protected-model"
    ex.send_json({"result": f"koboldcpp/{name}"})


def info_version(ex) -> None:
    ex.send_json({"result": UNITED_API_VERSION})


def extra_version(ex) -> None:
    # Quirk: `result` is the product name and the number is in `version`; SillyTavern compares
    # `result` as a version string, and "KoboldCpp" sorts after every number, enabling all flags.
    ex.send_json({"result": "KoboldCpp", "version": KOBOLDCPP_VERSION, "protected": bool(ex.config.api_key),
                  "txt2img": False, "vision": False, "transcribe": False, "multiplayer": False,
                  "websearch": False, "tts": False, "embeddings": False, "server": "NeoX Writer"})


def max_length(ex) -> None:
    ex.send_json({"value": min(ex.config.max_length, ex.worker.n_ctx // 2)})


def max_context_length(ex) -> None:
    ex.send_json({"value": ex.worker.n_ctx})


def true_max_context_length(ex) -> None:
    ex.send_json({"value": ex.worker.n_ctx})


def perf(ex) -> None:
    q = ex.queue
    now = time.time()
    ex.send_json({**q.stats, "total_img_gens": 0, "queue": q.waiting, "idle": 0 if q.busy else 1,
                  "hordeexitcounter": 0, "uptime": round(now - q.started, 1),
                  "idletime": 0.0 if q.busy else round(now - q.idle_since, 1), "quiet": False})


# -- generation --------------------------------------------------------------------------------


def _request(ex):
    tok = ex.worker.tokenizer
    return generation_request(ex.body, n_ctx=ex.worker.n_ctx, max_length_cap=ex.config.max_length,
                              eos_id=tok.eos_id, n_vocab=tok.n_vocab)


def _tail(done, trim_stop: bool) -> str:
    # Quirk: KoboldCpp returns the stop string at the end of the text unless trim_stop is set
    # (SillyTavern and Lite cut it themselves); the engine never includes it.
    return done.stop_sequence if (done.stop_sequence and not trim_stop) else ""


def generate(ex) -> None:
    """POST /api/v1/generate: `{"results": [{"text", "finish_reason"}]}` (always one result)."""
    request = _request(ex)
    n_logprobs = _logprobs_count(ex.body)
    job = submit(ex, request)
    _, candidates = collect(ex, job)
    if not candidates:
        raise ApiError(500, "the generation ended without a result")
    c = candidates[0]
    result = {"text": c.text + _tail(c.done, bool(ex.body.get("trim_stop"))),
              "finish_reason": finish_reason(c.done),
              # not KoboldCpp's: a prompt cut to fit the context is reported, not silently shortened
              "prompt_tokens_dropped": c.done.prompt_tokens_dropped}
    if n_logprobs:
        result["logprobs"] = {"content": _logprobs_content(ex.worker.tokenizer, c.tokens, n_logprobs)}
    ex.send_json({"results": [result]})


def _logprobs_count(body) -> int:
    # KoboldCpp >= 1.77 (non-streaming): `logprobs` is the number of alternatives (mikupad's n_probs).
    value = body.get("logprobs")
    if value is None or value is False:
        return 0
    if value is True:
        return 5
    count = number(body, "logprobs", 0, integer=True)
    if not 0 <= count <= MAX_LOGPROBS:
        raise ApiError(400, f"logprobs must be within 0..{MAX_LOGPROBS}, got {count}", "logprobs")
    return count


def _logprobs_content(tokenizer, tokens, n) -> list:
    """The OpenAI chat-logprobs shape KoboldCpp 1.77 uses: [{token, logprob, top_logprobs}]."""
    out = []
    for ev in tokens:
        if ev.token == tokenizer.eos_id or ev.token < 0:      # end of text; text with no token
            continue
        out.append({"token": tokenizer.decode([ev.token]), "logprob": _log(ev.probability),
                    "top_logprobs": [{"token": tokenizer.decode([t]), "logprob": _log(p)} for t, p in ev.top[:n]]})
    return out


def _log(p: float) -> float:
    return math.log(p) if p > 0 else -9999.0


def generate_stream(ex) -> None:
    """POST /api/extra/generate/stream: SSE `event: message` / `data: {"token", "finish_reason"}`.

    Quirk: finish_reason is the string "null" until the last event, which carries "stop" or
    "length" (and possibly an empty token). The stream ends by closing the connection, with no
    [DONE]. Failures found before the first event are answered as a normal error reply.
    With `logprobs: N` every token gets its own event with `logprob` and `top_logprobs`
    ([{token, logprob}], what mikupad reads), even while its text is held back.
    """
    request = _request(ex)
    trim_stop = bool(ex.body.get("trim_stop"))
    n_logprobs = _logprobs_count(ex.body)
    tok = ex.worker.tokenizer
    stream = EventStream(ex, submit(ex, request),
                         lambda message: {"token": "", "finish_reason": "stop", "error": message})
    for event in stream:
        if not isinstance(event, ChoiceEvent):
            continue
        ev = event.event
        if hasattr(ev, "token"):
            data = {"token": ev.text, "finish_reason": "null"}
            if n_logprobs and 0 <= ev.token != tok.eos_id:
                item = _logprobs_content(tok, [ev], n_logprobs)[0]
                data.update(logprob=item["logprob"], top_logprobs=item["top_logprobs"])
            if ev.text or "top_logprobs" in data:
                stream.send(data, event="message")
        else:
            stream.send({"token": _tail(ev, trim_stop), "finish_reason": finish_reason(ev),
                         "prompt_tokens_dropped": ev.prompt_tokens_dropped}, event="message")


def check(ex) -> None:
    """Polled streaming: the partial text of the caller's job (see GenerationQueue.check)."""
    genkey = string(ex.body, "genkey") if ex.body else ""
    ex.send_json({"results": [{"text": ex.queue.check(genkey)}]})


def abort_allowed_without_key(ex) -> bool:
    """SillyTavern sends its abort without the key (and without a genkey). Allow that only from
    this machine, and only when it can mean one generation: the running job's genkey, or no
    genkey while exactly one generation runs and nobody waits, so no one else's is stopped."""
    if not ex.from_loopback:
        return False
    genkey = ex.body.get("genkey") if isinstance(ex.body.get("genkey"), str) else ""
    if genkey:
        return ex.queue.running_genkey() == genkey
    return ex.queue.alone


def abort(ex) -> None:
    # Quirk: the values are the strings "true"/"false" (the OpenAPI doc says booleans).
    done = ex.queue.abort(string(ex.body, "genkey"))
    ex.send_json({"success": "true" if done else "false", "done": "true" if done else "false"})


def tokencount(ex) -> None:
    """`{"value": count, "ids": [...]}`. GPT-NeoX tokenizers add no BOS, so `special` adds nothing."""
    prompt = string(ex.body, "prompt")
    ids = ex.worker.tokenizer.encode(prompt) if prompt else []
    ex.send_json({"value": len(ids), "ids": ids})


def detokenize(ex) -> None:
    tok = ex.worker.tokenizer
    ids = token_ids(ex.body.get("ids"), "ids", tok.n_vocab)
    ex.send_json({"result": tok.decode(ids), "success": True})
