"""OpenAI-compatible endpoints (`/v1/...`): models, completions and chat completions.

Requests are mapped onto KoboldCpp's fields (as KoboldCpp does, so every native field works
here too) and then beyond what KoboldCpp offers: `n` candidates run as one batch (one prompt
pass, then one pass over the weights per token for all of them: `EngineWorker.run`), `echo`
returns the prompt, `logprobs` come
with their top alternatives (for echoed prompt tokens too), and `usage` counts real tokens.
Streams end with `data: [DONE]`; an error after the stream started is sent as a
`data: {"error": ...}` event, which the `openai` client raises as APIError.
"""
from __future__ import annotations

import math
import time
import uuid

from app.chattemplates import TEMPLATES, template_for_model
from app.server.candidates import EventStream, collect, finish_reason, submit
from app.server.errors import ApiError
from app.server.generation_input import MAX_LOGPROBS, generation_request, number, stop_list
from app.server.request import ChoiceEvent, PromptScores
from app.server.routing import Route

OWNER = "neox-writer"


def routes():
    return [
        Route("/v1/models", ["GET"], models, secured=False),
        Route("/v1/completions", ["POST"], completions, secured=True),
        Route("/v1/chat/completions", ["POST"], chat_completions, secured=True),
        # token counting as OpenAI-mode clients probe for it: TabbyAPI's and text-generation-webui's
        Route("/v1/token/encode", ["POST"], encode, secured=True),
        Route("/v1/internal/encode", ["POST"], encode, secured=True),
        Route("/v1/internal/token-count", ["POST"], token_count, secured=True),
    ]


def _model_id(ex) -> str:
    return ex.worker.model_name if ex.authorized else "protected-model"


def models(ex) -> None:
    ex.send_json({"object": "list", "data": [{"id": _model_id(ex), "object": "model", "created": int(time.time()),
                                              "owned_by": OWNER, "context_length": ex.worker.n_ctx}]})


def _text_tokens(ex) -> list:
    text = ex.body.get("text", ex.body.get("prompt", ""))
    if not isinstance(text, str):
        raise ApiError(400, "text must be a string", "text")
    return ex.worker.tokenizer.encode(text) if text else []


def encode(ex) -> None:
    """`{"tokens": [...], "length": n}` (TabbyAPI's /v1/token/encode, text-generation-webui's /v1/internal/encode)."""
    ids = _text_tokens(ex)
    ex.send_json({"tokens": ids, "length": len(ids)})


def token_count(ex) -> None:
    """`{"length": n}` (text-generation-webui's /v1/internal/token-count)."""
    ex.send_json({"length": len(_text_tokens(ex))})


# -- request mapping ---------------------------------------------------------------------------


def _native_fields(body: dict, default_max_tokens: int) -> dict:
    """OpenAI names -> KoboldCpp names (KoboldCpp's transform_genparams); native fields stay."""
    native = dict(body)
    native["max_length"] = body.get("max_tokens", body.get("max_completion_tokens", default_max_tokens))
    native["stop_sequence"] = stop_list(body.get("stop"), "stop") if body.get("stop") is not None \
        else body.get("stop_sequence")
    if body.get("seed") is not None and body.get("sampler_seed") is None:
        native["sampler_seed"] = body["seed"]
    if body.get("mirostat_mode") is not None:
        native["mirostat"] = body["mirostat_mode"]
    return native


def _count(body: dict, name: str, default: int, low: int, high: int) -> int:
    value = number(body, name, default, integer=True)
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be within {low}..{high}, got {value}", name)
    return value


def _build_request(ex, native: dict, prompt: str, default_max_tokens: int):
    tok = ex.worker.tokenizer
    native["prompt"] = prompt
    request = generation_request(native, n_ctx=ex.worker.n_ctx, max_length_cap=ex.config.max_length,
                                 eos_id=tok.eos_id, n_vocab=tok.n_vocab, default_max_length=default_max_tokens)
    request.n = _count(ex.body, "n", 1, 1, ex.config.max_n)
    best_of = ex.body.get("best_of")
    if best_of is not None and best_of != request.n and best_of != 1:
        raise ApiError(400, "best_of is not supported (use n to get several candidates)", "best_of")
    if ex.body.get("suffix"):
        raise ApiError(400, "suffix (insertion) is not supported by this model", "suffix")
    return request


def _prompt_text(ex) -> str:
    prompt = ex.body.get("prompt", "")
    if isinstance(prompt, list):
        if len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        elif all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            tok = ex.worker.tokenizer
            bad = [t for t in prompt if not 0 <= t < tok.n_vocab]
            if bad:
                raise ApiError(400, f"prompt token id {bad[0]} is outside the vocabulary", "prompt")
            prompt = tok.decode(prompt)
        else:
            raise ApiError(400, "prompt must be one string (several prompts per request are not supported)",
                           "prompt")
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string", "prompt")
    return prompt


# -- logprobs ----------------------------------------------------------------------------------


def _log(p: float) -> float:
    return math.log(p) if p > 0 else -9999.0


class LegacyLogprobs:
    """The completions `logprobs` object: tokens, token_logprobs, top_logprobs, text_offset."""

    def __init__(self, tokenizer, n_top: int, offset: int = 0):
        self.tokenizer = tokenizer
        self.n_top = n_top
        self.offset = offset
        self.tokens, self.token_logprobs, self.top_logprobs, self.text_offset = [], [], [], []

    def add(self, token: int, logprob, top) -> None:
        """`top` is [(id, logprob)] or None (the first prompt token)."""
        text = self.tokenizer.decode([token])
        self.tokens.append(text)
        self.token_logprobs.append(logprob)
        alternatives = None
        if top is not None:
            alternatives = {}
            for t, lp in top[:self.n_top]:
                # tokens that are parts of one character all read "\ufffd": keep the likeliest
                alternatives.setdefault(self.tokenizer.decode([t]), lp)
        self.top_logprobs.append(alternatives)
        self.text_offset.append(self.offset)
        self.offset += len(text)

    def add_prompt(self, scores: PromptScores) -> None:
        for i, (token, lp, top) in enumerate(zip(scores.tokens, scores.logprobs, scores.top)):
            self.add(token, lp, None if i == 0 else top)

    def add_event(self, ev) -> None:
        if ev.token != self.tokenizer.eos_id and ev.token >= 0:
            self.add(ev.token, _log(ev.probability), [(t, _log(p)) for t, p in ev.top])

    def body(self) -> dict:
        return {"tokens": self.tokens, "token_logprobs": self.token_logprobs,
                "top_logprobs": self.top_logprobs, "text_offset": self.text_offset}


def _chat_logprobs(tokenizer, events, n_top: int) -> dict:
    def entry(token, logprob):
        text = tokenizer.decode([token])
        return {"token": text, "logprob": logprob, "bytes": list(tokenizer.token_bytes(token))}
    content = []
    for ev in events:
        if ev.token == tokenizer.eos_id or ev.token < 0:
            continue
        item = entry(ev.token, _log(ev.probability))
        item["top_logprobs"] = [entry(t, _log(p)) for t, p in ev.top[:n_top]]
        content.append(item)
    return {"content": content}


def _usage(dones) -> dict:
    """Real token counts: the prompt window read once, every candidate's sampled tokens."""
    done = [d for d in dones if d is not None]
    prompt = done[0].prompt_tokens if done else 0
    completion = sum(d.gen_tokens for d in done)
    reused = done[0].prompt_tokens_reused if done else 0
    dropped = done[0].prompt_tokens_dropped if done else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": reused},
            # not OpenAI's: the oldest prompt tokens left out to fit the context
            "prompt_tokens_dropped": dropped}


# -- /v1/completions ---------------------------------------------------------------------------


def completions(ex) -> None:
    body = ex.body
    prompt = _prompt_text(ex)
    request = _build_request(ex, _native_fields(body, 180), prompt, 180)
    echo = bool(body.get("echo"))
    n_logprobs = body.get("logprobs")
    if n_logprobs is not None:
        n_logprobs = _count(body, "logprobs", 0, 0, MAX_LOGPROBS)
    if echo and n_logprobs is not None:
        request.prompt_logprobs = n_logprobs
    job = submit(ex, request)
    envelope = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": _model_id(ex)}
    if body.get("stream"):
        _stream_completions(ex, job, envelope, prompt, echo, n_logprobs)
        return
    scores, candidates = collect(ex, job)
    choices = []
    tok = ex.worker.tokenizer
    for c in candidates:
        logprobs = None
        if n_logprobs is not None:
            lp = LegacyLogprobs(tok, n_logprobs)
            if echo and scores is not None:
                lp.add_prompt(scores)
            else:
                lp.offset = len(prompt) if echo else 0
            for ev in c.tokens:
                lp.add_event(ev)
            logprobs = lp.body()
        choices.append({"text": (prompt if echo else "") + c.text, "index": c.index, "logprobs": logprobs,
                        "finish_reason": finish_reason(c.done)})
    ex.send_json({**envelope, "choices": choices, "usage": _usage([c.done for c in candidates])})


def _stream_completions(ex, job, envelope, prompt, echo, n_logprobs) -> None:
    """Completion chunks, one per token (with its logprobs when asked), the echoed prompt first
    for each candidate, a final chunk with finish_reason per candidate, then [DONE]."""
    tok = ex.worker.tokenizer
    stream = EventStream(ex, job, _error_event)
    prompt_logprobs = None
    echoed = [False] * job.request.n
    dones = []

    def chunk(index, text, reason=None, lp=None):
        stream.send({**envelope, "choices": [{"text": text, "index": index, "logprobs": lp, "finish_reason": reason}]})

    for event in stream:
        if isinstance(event, PromptScores):
            prompt_logprobs = LegacyLogprobs(tok, n_logprobs)
            prompt_logprobs.add_prompt(event)
            continue
        i, ev = event.index, event.event
        if echo and not echoed[i]:
            chunk(i, prompt, lp=prompt_logprobs.body() if prompt_logprobs is not None else None)
            echoed[i] = True
        if hasattr(ev, "token"):
            if n_logprobs is not None:
                lp = LegacyLogprobs(tok, n_logprobs)
                lp.add_event(ev)
                chunk(i, ev.text, lp=lp.body())
            elif ev.text:
                chunk(i, ev.text)
        else:
            dones.append(ev)
            chunk(i, "", reason=finish_reason(ev))
    _finish_stream(ex, stream, envelope, dones)


def _error_event(message: str) -> dict:
    return {"error": {"message": message, "type": "server_error"}}


def _finish_stream(ex, stream, envelope, dones) -> None:
    """The usage chunk when `stream_options.include_usage` asks for it, then `data: [DONE]`."""
    if stream.sse is not None and (ex.body.get("stream_options") or {}).get("include_usage"):
        stream.send({**envelope, "choices": [], "usage": _usage(dones)})
    stream.finish("data: [DONE]\n\n")


# -- /v1/chat/completions ----------------------------------------------------------------------


def _message_text(message: dict, index: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"messages[{index}]: only text content parts are supported", "messages")
            parts.append(part["text"])
        return "".join(parts)
    raise ApiError(400, f"messages[{index}].content must be a string or a list of text parts", "messages")


class _Turn:
    """A transcript turn in the shape app.chattemplates expects."""

    def __init__(self, role: str, text: str):
        self.role, self.text = role, text


def chat_prompt(ex) -> tuple[str, list]:
    """The prompt for `messages` through the model family's chat template, and its stop strings.

    System messages go first as plain text; the template's own preamble follows. A final
    assistant message is left open, so the model continues it.
    """
    messages = ex.body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", "messages")
    name = ex.body.get("chat_template")
    if name is not None and name not in TEMPLATES:
        raise ApiError(400, f"unknown chat_template {name!r} (known: {', '.join(TEMPLATES)})", "chat_template")
    template = TEMPLATES[name] if name else template_for_model(ex.worker.model_name)
    system, turns = [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ApiError(400, f"messages[{i}] must be an object", "messages")
        role, text = message.get("role"), _message_text(message, i)
        if role in ("system", "developer"):
            system.append(text)
        elif role in ("user", "assistant"):
            turns.append(_Turn("user" if role == "user" else "bot", text))
        else:
            raise ApiError(400, f"messages[{i}].role {role!r} is not supported (system, user, assistant)",
                           "messages")
    user, bot = "User", "Assistant"
    head = "\n".join(system) + "\n\n" if system else ""
    return head + template.prompt(turns, user, bot), template.stop_sequences(user, bot)


def chat_completions(ex) -> None:
    body = ex.body
    prompt, template_stops = chat_prompt(ex)
    native = _native_fields(body, 400)
    native["stop_sequence"] = template_stops + (native.get("stop_sequence") or [])
    request = _build_request(ex, native, prompt, 400)
    n_top = None
    if body.get("logprobs"):
        n_top = _count(body, "top_logprobs", 0, 0, MAX_LOGPROBS)
    job = submit(ex, request)
    envelope = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": _model_id(ex)}
    if body.get("stream"):
        _stream_chat(ex, job, {**envelope, "object": "chat.completion.chunk"}, n_top)
        return
    _, candidates = collect(ex, job)
    tok = ex.worker.tokenizer
    choices = [{"index": c.index, "message": {"role": "assistant", "content": c.text},
                "logprobs": _chat_logprobs(tok, c.tokens, n_top) if n_top is not None else None,
                "finish_reason": finish_reason(c.done)} for c in candidates]
    ex.send_json({**envelope, "object": "chat.completion", "choices": choices,
                  "usage": _usage([c.done for c in candidates])})


def _stream_chat(ex, job, envelope, n_top) -> None:
    """Chunks with `delta`: the role first, then content pieces (the first keeps its leading
    space, as the model wrote it: the template's bot prefix ends before it), a final empty
    delta with finish_reason, [DONE]."""
    tok = ex.worker.tokenizer
    stream = EventStream(ex, job, _error_event)
    started = [False] * job.request.n
    dones = []

    def chunk(index, delta, reason=None, logprobs=None):
        stream.send({**envelope, "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                              "finish_reason": reason}]})

    for event in stream:
        if not isinstance(event, ChoiceEvent):
            continue
        i, ev = event.index, event.event
        if not hasattr(ev, "token"):
            dones.append(ev)
            if not started[i]:
                chunk(i, {"role": "assistant", "content": ""})
            chunk(i, {}, reason=finish_reason(ev))
            continue
        text = ev.text
        logprobs = _chat_logprobs(tok, [ev], n_top) if n_top is not None else None
        if text or logprobs:
            delta = {"content": text} if started[i] else {"role": "assistant", "content": text}
            chunk(i, delta, logprobs=logprobs)
            started[i] = started[i] or bool(text)
    _finish_stream(ex, stream, envelope, dones)
