"""llama.cpp's native server endpoints: `/completion`, `/tokenize`, `/detokenize`, `/props`, `/health`.

What SillyTavern's "llama.cpp" text-completion type and other tools written for llama-server
call (shared/spec/server-api.md A2.2). Requests use llama.cpp's names and defaults
(`n_predict`, `repeat_penalty`, `repeat_last_n`, `tfs_z`, `typical_p`, `seed`, `ignore_eos`,
`logit_bias` as `[[id, bias]]` pairs, `samplers` as an ordered list of names, `n_probs`); they
are mapped onto KoboldCpp's fields, so the samplers behave exactly as on the other APIs.
Replies have llama.cpp's shapes: `content`, `stop`, `stopped_eos` / `stopped_word` /
`stopped_limit`, `stopping_word`, `tokens_predicted`, `tokens_evaluated`, `truncated`,
`timings`, and with `n_probs` the `completion_probabilities` SillyTavern and mikupad read.
A stream is `data: {...}` lines, the last one with `"stop": true`; then the connection closes.
Errors use llama.cpp's (OpenAI's) `{"error": {...}}` shape.
"""
from __future__ import annotations

from app.server.candidates import EventStream, collect, submit
from app.server.errors import ApiError
from app.server.generation_input import FIELD_RANGES, MAX_LOGPROBS, generation_request, number, token_ids
from app.server.request import ChoiceEvent
from app.server.routing import Route

# llama.cpp's defaults for what a request leaves out (its server README).
LLAMA_DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.1,
                  "repeat_last_n": 64, "typical_p": 1.0, "tfs_z": 1.0}
# llama.cpp's sampler names (`samplers`) -> ours; dry and xtc have fixed places in our chain.
SAMPLER_NAMES = {"top_k": "top_k", "tfs_z": "tfs", "tfs": "tfs", "typical_p": "typical", "typ_p": "typical",
                 "typical": "typical", "top_p": "top_p", "min_p": "min_p", "temperature": "temperature",
                 "temp": "temperature", "penalties": "rep_pen", "top_a": "top_a"}
# what each of our samplers is when llama.cpp's `samplers` leaves it out (llama.cpp skips it);
# the repetition penalty is not in the list SillyTavern sends, and llama.cpp applied it anyway
NEUTRAL = {"top_k": 0, "tfs": 1.0, "typical": 1.0, "top_p": 1.0, "min_p": 0.0, "temperature": 1.0, "top_a": 0.0}


def routes():
    return [
        Route("/completion", ["POST"], completion, secured=True, openai_errors=True),
        Route("/tokenize", ["POST"], tokenize, secured=True, openai_errors=True),
        Route("/detokenize", ["POST"], detokenize, secured=True, openai_errors=True),
        Route("/props", ["GET"], props, secured=False, openai_errors=True),
        Route("/health", ["GET"], health, secured=False, openai_errors=True),
    ]


def health(ex) -> None:
    ex.send_json({"status": "ok"})


def props(ex) -> None:
    ex.send_json({"default_generation_settings": {"n_ctx": ex.worker.n_ctx, "model": _model(ex),
                                                  "params": {**LLAMA_DEFAULTS, "n_predict": -1}},
                  "total_slots": 1, "chat_template": "", "model_path": _model(ex),
                  "build_info": "NeoX Writer (llama.cpp server API)"})


def _model(ex) -> str:
    return ex.worker.model_name if ex.authorized else "protected-model"


# -- tokens ------------------------------------------------------------------------------------


def tokenize(ex) -> None:
    """`{"tokens": [...]}`; with `with_pieces`, `[{"id", "piece"}]` (bytes that are not UTF-8 as a list).
    vLLM's `{"prompt"}` is read too: generic OpenAI clients probe /tokenize with it."""
    content = ex.body.get("content", ex.body.get("prompt", ""))
    if not isinstance(content, str):
        raise ApiError(400, "content must be a string", "content")
    tok = ex.worker.tokenizer
    ids = tok.encode(content) if content else []
    if ex.body.get("with_pieces"):
        pieces = []
        for i in ids:
            raw = tok.token_bytes(i)
            try:
                pieces.append({"id": i, "piece": raw.decode("utf-8")})
            except UnicodeDecodeError:
                pieces.append({"id": i, "piece": list(raw)})
        ex.send_json({"tokens": pieces})
        return
    ex.send_json({"tokens": ids})


def detokenize(ex) -> None:
    tok = ex.worker.tokenizer
    ids = token_ids(ex.body.get("tokens", []), "tokens", tok.n_vocab)
    ex.send_json({"content": tok.decode(ids)})


# -- /completion -------------------------------------------------------------------------------


def _prompt(ex) -> str:
    prompt = ex.body.get("prompt", "")
    tok = ex.worker.tokenizer
    if isinstance(prompt, list):
        if len(prompt) == 1 and isinstance(prompt[0], str):
            return prompt[0]
        parts = []
        for item in prompt:               # token ids, strings or a mix of both
            if isinstance(item, str):
                parts.append(item)
            elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < tok.n_vocab:
                parts.append(tok.decode([item]))
            else:
                raise ApiError(400, f"prompt: {item!r} is neither a string nor a token id of this model "
                                    f"(several prompts per request are not supported)", "prompt")
        return "".join(parts)
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string or a list of token ids", "prompt")
    return prompt


def _logit_bias(value) -> dict:
    """llama.cpp's `[[id, bias]]` pairs (`false` bans the token) or an `{id: bias}` object."""
    if value is None or value == [] or value == {}:
        return {}
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value):
        pairs = value
    else:
        raise ApiError(400, "logit_bias must be [[token id, bias], ...] or {token id: bias}", "logit_bias")
    out = {}
    for token, bias in pairs:
        if bias is False:
            bias = -1e9                    # llama.cpp: false means the token is never sampled
        if isinstance(bias, bool) or not isinstance(bias, (int, float)):
            raise ApiError(400, f"logit_bias for token {token!r} must be a number or false", "logit_bias")
        out[str(token)] = bias
    return out


def _native_fields(ex) -> dict:
    """llama.cpp's names -> KoboldCpp's (llama.cpp's name wins where a client sends both, as
    SillyTavern does), with llama.cpp's defaults for what is left out."""
    body = ex.body
    native = dict(body)
    for name in ("rep_pen", "repetition_penalty", "rep_pen_range", "sampler_order", "tfs", "typical",
                 "sampler_seed", "stop_sequence", "ban_eos_token", "use_default_badwordsids", "max_length"):
        native.pop(name, None)             # other backends' aliases: llama.cpp does not read them
    get = lambda name: body.get(name, LLAMA_DEFAULTS.get(name))   # noqa: E731
    native.update(temperature=get("temperature"), top_k=get("top_k"), top_p=get("top_p"), min_p=get("min_p"),
                  rep_pen=get("repeat_penalty"), tfs=get("tfs_z"), typical=get("typical_p"))
    last_n = number(body, "repeat_last_n", 64, integer=True)
    native["rep_pen_range"] = min(ex.worker.n_ctx, FIELD_RANGES["rep_pen_range"][1]) if last_n == -1 else max(0, last_n)
    dry_last_n = number(body, "dry_penalty_last_n", -1, integer=True)
    if dry_last_n == 0:
        native["dry_multiplier"] = 0       # llama.cpp: 0 switches DRY off, -1 is the whole context
    native["dry_penalty_last_n"] = max(0, dry_last_n)
    native["sampler_seed"] = body.get("seed", -1)
    native["stop_sequence"] = body.get("stop") or []
    native["ban_eos_token"] = bool(body.get("ignore_eos"))
    native["logit_bias"] = _logit_bias(body.get("logit_bias"))
    n_predict = number(body, "n_predict", -1, integer=True)
    native["max_length"] = ex.config.max_length if n_predict < 0 else n_predict
    if n_predict == 0:
        raise ApiError(400, "n_predict 0 asks for no tokens at all", "n_predict")
    samplers = body.get("samplers")
    if samplers is not None:
        _apply_sampler_list(native, samplers)
    return native


def _apply_sampler_list(native: dict, samplers) -> None:
    """llama.cpp runs only the samplers listed, in that order: ours in that order, the rest neutral."""
    if not isinstance(samplers, list) or not all(isinstance(s, str) for s in samplers):
        raise ApiError(400, "samplers must be a list of sampler names", "samplers")
    order = ["rep_pen"]
    for name in samplers:
        if name in ("dry", "xtc", "infill", "logit_bias"):
            continue                       # always applied in their fixed places
        ours = SAMPLER_NAMES.get(name)
        if ours is None:
            raise ApiError(400, f"unknown sampler {name!r} in samplers (known: {', '.join(SAMPLER_NAMES)}, "
                                f"dry, xtc)", "samplers")
        if ours not in order:
            order.append(ours)
    for ours, neutral in NEUTRAL.items():
        if ours not in order:
            order.append(ours)
            native[ours] = neutral
    native["sampler_order"] = order


def _probabilities(tokenizer, ev, n: int) -> dict:
    """llama.cpp's (pre-2025) per-token entry: the chosen text and the top n {tok_str, prob}."""
    return {"content": tokenizer.decode([ev.token]),
            "probs": [{"tok_str": tokenizer.decode([t]), "prob": p} for t, p in ev.top[:n]]}


def completion(ex) -> None:
    prompt = _prompt(ex)
    native = _native_fields(ex)
    native["prompt"] = prompt
    tok = ex.worker.tokenizer
    request = generation_request(native, n_ctx=ex.worker.n_ctx, max_length_cap=ex.config.max_length,
                                 eos_id=tok.eos_id, n_vocab=tok.n_vocab)
    n_probs = number(ex.body, "n_probs", 0, integer=True)
    if not 0 <= n_probs <= MAX_LOGPROBS:
        raise ApiError(400, f"n_probs must be within 0..{MAX_LOGPROBS}, got {n_probs}", "n_probs")
    job = submit(ex, request)
    if ex.body.get("stream"):
        _stream(ex, job, prompt, n_probs)
        return
    _, candidates = collect(ex, job)
    if not candidates:
        raise ApiError(500, "the generation ended without a result")
    c = candidates[0]
    reply = {"content": c.text, **_final_fields(ex, c.done, prompt)}
    if n_probs:
        reply["completion_probabilities"] = [_probabilities(tok, ev, n_probs) for ev in c.tokens
                                             if 0 <= ev.token != tok.eos_id]
    ex.send_json(reply)


def _final_fields(ex, done, prompt: str) -> dict:
    """What llama.cpp's last reply (or last stream event) says about the whole generation."""
    prompt_ms, gen_ms = done.prompt_seconds * 1000, done.gen_seconds * 1000
    evaluated = done.prompt_tokens_evaluated
    return {
        "id_slot": 0, "stop": True, "model": _model(ex), "tokens_predicted": done.gen_tokens,
        "tokens_evaluated": done.prompt_tokens, "tokens_cached": done.prompt_tokens + done.gen_tokens,
        "prompt": prompt if len(prompt) < 4096 else prompt[-4096:],
        "truncated": done.prompt_tokens_dropped > 0, "prompt_tokens_dropped": done.prompt_tokens_dropped,
        "stopped_eos": done.stop_reason == "eos", "stopped_word": done.stop_reason == "stop_sequence",
        "stopped_limit": done.stop_reason in ("length", "cancelled"), "stopping_word": done.stop_sequence or "",
        "timings": {"prompt_n": evaluated, "prompt_ms": round(prompt_ms, 3),
                    "prompt_per_token_ms": round(prompt_ms / evaluated, 3) if evaluated else 0.0,
                    "prompt_per_second": round(done.prompt_tokens_per_s, 3),
                    "predicted_n": done.gen_tokens, "predicted_ms": round(gen_ms, 3),
                    "predicted_per_token_ms": round(gen_ms / done.gen_tokens, 3) if done.gen_tokens else 0.0,
                    "predicted_per_second": round(done.gen_tokens_per_s, 3)},
        "generation_settings": {"n_ctx": ex.worker.n_ctx, "model": _model(ex)},
    }


def _stream(ex, job, prompt: str, n_probs: int) -> None:
    """`data: {"content", "stop": false}` per piece of text (with its probabilities when asked),
    then the final fields with `"stop": true`; no [DONE], the connection closes."""
    tok = ex.worker.tokenizer
    stream = EventStream(ex, job, lambda message: {"error": {"code": 500, "message": message,
                                                             "type": "server_error"}})
    for event in stream:
        if not isinstance(event, ChoiceEvent):
            continue
        ev = event.event
        if hasattr(ev, "token"):
            chunk = {"content": ev.text, "stop": False, "id_slot": 0, "multimodal": False, "index": 0}
            if n_probs and 0 <= ev.token != tok.eos_id:
                chunk["completion_probabilities"] = [_probabilities(tok, ev, n_probs)]
            if ev.text or "completion_probabilities" in chunk:
                stream.send(chunk)
        else:
            stream.send({"content": "", "index": 0, **_final_fields(ex, ev, prompt)})
