"""Remote text-generation servers behind one interface shaped like the local engine's.

    backend = detect("http://192.168.1.5:5001", api_key)    # KoboldCpp, llama.cpp or OpenAI
    backend.models()                     # model ids the server offers; select_model(id)
    for event in backend.generate(prompt, settings, max_tokens=80, stop=["\\nYou:"]):
        ...                              # engine.generator TokenEvent ... DoneEvent
    backend.abort()                      # from any thread: the server's abort, or close the stream
    backend.tokenize(text)               # the server's tokenizer

Events are the engine's classes with what a server can tell: `TokenEvent.token` is -1 (servers
stream text, not ids), `probability` is NaN and `top` empty unless the server returned
logprobs, in which case `top` holds (token text, probability) pairs, not (id, probability).
`DoneEvent.stop_reason` is "length", "cancelled" or "eos" (a server's "stop" does not say
whether the end-of-text token or a stop string ended it). Network failures raise RemoteError;
text already yielded stays valid.
"""
from __future__ import annotations

import math
import secrets
import threading
import time
from typing import Iterator

from app.remote.http import HttpClient, RemoteError
from engine.generator import DoneEvent, TokenEvent
from engine.sampling import KOBOLD_SAMPLER_IDS, SamplerSettings

KOBOLD_IDS_BY_NAME = {name: i for i, name in KOBOLD_SAMPLER_IDS.items()}


class RemoteBackend:
    """What every remote server offers; subclasses know one API's wire format."""

    kind = "remote"
    # SamplerSettings fields this kind of server honours (the GUI greys out the rest).
    supported_samplers: frozenset = frozenset()

    def __init__(self, client: HttpClient, n_ctx: int | None = None, model: str | None = None):
        self.client = client
        self.n_ctx = n_ctx
        self.model = model
        self._stream = None
        self._aborted = threading.Event()

    @property
    def url(self) -> str:
        return self.client.base_url

    def describe(self) -> str:
        ctx = f", context {self.n_ctx}" if self.n_ctx else ""
        return f"{self.kind} at {self.url}: {self.model or 'no model'}{ctx}"

    # -- what subclasses provide ------------------------------------------------------------

    def models(self) -> list[str]:
        raise NotImplementedError

    def tokenize(self, text: str) -> list[int]:
        raise NotImplementedError

    def _open_stream(self, prompt, settings, memory, max_tokens, stop, max_context, alternatives):
        raise NotImplementedError

    def _parse_chunk(self, obj) -> tuple[str, str | None, list]:
        """(text, finish reason or None, [(token text, probability, [(alt text, probability)])])."""
        raise NotImplementedError

    def _server_abort(self) -> None:
        """Ask the server to stop (besides closing the stream); default: nothing more."""

    # -- shared behaviour --------------------------------------------------------------------

    def select_model(self, model: str) -> None:
        self.model = model

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def abort(self) -> None:
        """Stop the running generation (safe from any thread)."""
        self._aborted.set()
        try:
            self._server_abort()
        except RemoteError:
            pass                       # closing the stream below still ends it
        stream = self._stream
        if stream is not None:
            stream.close()

    def generate(self, prompt: str, settings: SamplerSettings | None = None, *, memory: str = "",
                 max_tokens: int = 80, stop=(), max_context: int | None = None,
                 cancel: threading.Event | None = None, alternatives: int = 0) -> Iterator:
        """Stream a continuation of memory + prompt as TokenEvents, then one DoneEvent.

        `alternatives` > 0 asks for that many top tokens with their probabilities (servers that
        return logprobs while streaming). `cancel` set from another thread aborts like abort().
        """
        settings = settings or SamplerSettings()
        stop = [stop] if isinstance(stop, str) else list(stop)
        self._aborted.clear()
        watcher = None
        if cancel is not None:
            watcher = threading.Thread(target=self._watch, args=(cancel,), daemon=True, name="remote-cancel")
        t0 = time.perf_counter()
        self._stream = self._open_stream(prompt, settings, memory, max_tokens, stop, max_context, alternatives)
        if watcher is not None:
            watcher.start()
        pieces, n_chunks, reason, usage, ended = [], 0, None, {}, False
        try:
            for data in self._stream:
                if data.startswith("[DONE]"):
                    ended = True
                    break
                obj = _json(data)
                if isinstance(obj, dict) and obj.get("error"):
                    err = obj["error"]
                    raise RemoteError(f"the server reported: {err.get('message', err) if isinstance(err, dict) else err}")
                if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
                    usage = obj["usage"]
                text, finish, tokens = self._parse_chunk(obj)
                if text or tokens:
                    n_chunks += 1
                    pieces.append(text)
                    _, prob, top = tokens[0] if tokens else ("", math.nan, [])
                    yield TokenEvent(text, -1, prob, top)
                if finish:
                    reason = finish
            if not (ended or reason or self._aborted.is_set() or (cancel is not None and cancel.is_set())):
                raise RemoteError(f"{self.url} closed the stream before the generation finished")
        except RemoteError:
            if not self._aborted.is_set():
                raise
        finally:
            self._stream.close()
            self._stream = None
            if cancel is not None and cancel.is_set():
                self._aborted.set()
        gen_s = time.perf_counter() - t0
        if self._aborted.is_set():
            stop_reason = "cancelled"
        else:
            stop_reason = "length" if reason == "length" else "eos"
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        yield DoneEvent(stop_reason=stop_reason, text="".join(pieces), stop_sequence=None,
                        prompt_tokens=prompt_tokens, prompt_tokens_reused=0, prompt_tokens_dropped=0,
                        gen_tokens=int(usage.get("completion_tokens") or n_chunks), prompt_seconds=0.0,
                        gen_seconds=gen_s, seed=settings.seed if settings.seed is not None else -1)

    def _watch(self, cancel: threading.Event) -> None:
        while self._stream is not None:
            if cancel.wait(0.1):
                if self._stream is not None:
                    self.abort()
                return


def _json(data: str):
    import json
    try:
        return json.loads(data)
    except ValueError:
        raise RemoteError(f"the server sent an event that is not JSON: {data[:80]!r}") from None


def _prob(logprob) -> float:
    return math.exp(logprob) if isinstance(logprob, (int, float)) else math.nan


# ---------------------------------------------------------------------------------------------


# Samplers KoboldCpp (>= 1.74) and llama.cpp's server both take under these names.
DRY_XTC_DYNATEMP = ("dry_multiplier", "dry_base", "dry_allowed_length", "dry_penalty_last_n",
                    "dry_sequence_breakers", "xtc_threshold", "xtc_probability", "dynatemp_range",
                    "dynatemp_exponent")


def _dry_xtc_dynatemp(s: SamplerSettings) -> dict:
    values = {name: getattr(s, name) for name in DRY_XTC_DYNATEMP}
    values["dry_sequence_breakers"] = list(s.dry_sequence_breakers)
    return values


class KoboldCppBackend(RemoteBackend):
    """KoboldCpp (and our own server): native API, SSE stream, genkey abort, tokencount."""

    kind = "KoboldCpp"
    supported_samplers = frozenset({"temperature", "top_k", "top_a", "tfs", "typical", "top_p", "min_p", "rep_pen",
                                    "rep_pen_range", "rep_pen_slope", "presence_penalty", "mirostat",
                                    "mirostat_tau", "mirostat_eta", "logit_bias", "banned_tokens", "order", "seed",
                                    *DRY_XTC_DYNATEMP, "smoothing_factor", "smoothing_curve", "banned_phrases"})

    def __init__(self, client: HttpClient, version: str = ""):
        super().__init__(client)
        self.version = version
        self._genkey = ""
        self.model = self.models()[0]
        try:
            self.n_ctx = int(client.call("GET", "/api/extra/true_max_context_length")["value"])
        except (RemoteError, KeyError, TypeError, ValueError):
            self.n_ctx = int(client.call("GET", "/api/v1/config/max_context_length")["value"])

    def models(self) -> list[str]:
        name = str(self.client.call("GET", "/api/v1/model").get("result", ""))
        return [name.split("/", 1)[1] if name.startswith("koboldcpp/") else name]

    def tokenize(self, text: str) -> list[int]:
        return list(self.client.call("POST", "/api/extra/tokencount", {"prompt": text})["ids"])

    def _open_stream(self, prompt, settings, memory, max_tokens, stop, max_context, alternatives):
        self._genkey = f"KCPP{secrets.randbelow(10000):04d}"
        s = settings
        body = {"prompt": prompt, "memory": memory, "max_length": max_tokens, "genkey": self._genkey,
                "temperature": s.temperature, "top_k": s.top_k, "top_a": s.top_a, "tfs": s.tfs,
                "typical": s.typical, "top_p": s.top_p, "min_p": s.min_p, "rep_pen": s.rep_pen,
                "rep_pen_range": s.rep_pen_range, "rep_pen_slope": s.rep_pen_slope,
                "presence_penalty": s.presence_penalty, "mirostat": s.mirostat, "mirostat_tau": s.mirostat_tau,
                "mirostat_eta": s.mirostat_eta, "sampler_seed": s.seed if s.seed is not None else -1,
                "sampler_order": [KOBOLD_IDS_BY_NAME[n] for n in s.order if n in KOBOLD_IDS_BY_NAME],
                "stop_sequence": stop, "trim_stop": True,
                "logit_bias": {str(k): v for k, v in s.logit_bias.items()},
                "custom_token_bans": ",".join(str(t) for t in s.banned_tokens)}
        body.update(_dry_xtc_dynatemp(s), smoothing_factor=s.smoothing_factor, smoothing_curve=s.smoothing_curve,
                    banned_tokens=list(s.banned_phrases))      # KoboldCpp's name for phrase bans
        if max_context:
            body["max_context_length"] = max_context
        if s.frequency_penalty:
            body["frequency_penalty"] = s.frequency_penalty
        return self.client.stream("/api/extra/generate/stream", body)

    def _parse_chunk(self, obj):
        finish = obj.get("finish_reason")
        return str(obj.get("token") or ""), None if finish in (None, "null") else finish, []

    def _server_abort(self) -> None:
        if self._genkey:
            self.client.call("POST", "/api/extra/abort", {"genkey": self._genkey}, timeout=5)


class OpenAIBackend(RemoteBackend):
    """A generic OpenAI-compatible server (vLLM, text-generation-webui, llama-cpp-python, ours):
    /v1/completions streamed; abort by closing the stream."""

    kind = "OpenAI-compatible"
    supported_samplers = frozenset({"temperature", "top_p", "presence_penalty", "frequency_penalty",
                                    "logit_bias", "seed", "top_k", "min_p", "rep_pen"})
    # Tokenize endpoints tried in turn: vLLM, llama-cpp-python, text-generation-webui, KoboldCpp/ours.
    TOKENIZERS = (("/tokenize", "prompt", "tokens"), ("/extras/tokenize", "input", "tokens"),
                  ("/v1/internal/encode", "text", "tokens"), ("/api/extra/tokencount", "prompt", "ids"))

    def __init__(self, client: HttpClient, models: list | None = None):
        super().__init__(client)
        self._models = models if models is not None else self._fetch_models()
        if not self._models:
            raise RemoteError(f"{client.base_url} lists no models")
        first = self._models[0]
        self.model = first["id"]
        for key in ("context_length", "max_model_len", "n_ctx"):
            if isinstance(first.get(key), int):
                self.n_ctx = first[key]
        self._tokenizer = None

    def _fetch_models(self) -> list:
        payload = self.client.call("GET", "/v1/models")
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise RemoteError(f"{self.client.base_url}/v1/models did not return a model list")
        return [m for m in data if isinstance(m, dict) and "id" in m]

    def models(self) -> list[str]:
        return [str(m["id"]) for m in self._models]

    def tokenize(self, text: str) -> list[int]:
        candidates = [self._tokenizer] if self._tokenizer else self.TOKENIZERS
        for path, field, result in candidates:
            body = {field: text}
            if path == "/tokenize":
                body["model"] = self.model
            status, payload = self.client.request("POST", path, body)
            if status in (404, 405, 422) or (status == 400 and payload is None):
                continue
            if not 200 <= status < 300:
                raise self.client.error("POST", path, status, payload)
            if isinstance(payload, dict) and isinstance(payload.get(result), list):
                self._tokenizer = (path, field, result)
                return [int(t) for t in payload[result]]
        raise RemoteError(f"{self.url} offers no tokenize endpoint this program knows")

    def _body(self, prompt, settings, memory, max_tokens, stop, alternatives) -> dict:
        s = settings
        body = {"model": self.model, "prompt": memory + prompt, "max_tokens": max_tokens, "stream": True,
                "temperature": s.temperature, "top_p": s.top_p}
        if stop:
            body["stop"] = stop
        if s.seed is not None:
            body["seed"] = s.seed
        if s.presence_penalty:
            body["presence_penalty"] = s.presence_penalty
        if s.frequency_penalty:
            body["frequency_penalty"] = s.frequency_penalty
        if s.logit_bias:
            body["logit_bias"] = {str(k): v for k, v in s.logit_bias.items()}
        if alternatives:
            body["logprobs"] = alternatives
        # Common extensions (vLLM, llama.cpp, llama-cpp-python, KoboldCpp), sent only when in use
        # so that a strict OpenAI server is not sent fields it does not know.
        if s.top_k:
            body["top_k"] = s.top_k
        if s.min_p:
            body["min_p"] = s.min_p
        if s.rep_pen != 1.0:
            body["repeat_penalty"] = body["repetition_penalty"] = s.rep_pen
        return body

    def _open_stream(self, prompt, settings, memory, max_tokens, stop, max_context, alternatives):
        return self.client.stream("/v1/completions", self._body(prompt, settings, memory, max_tokens, stop,
                                                                 alternatives))

    def _parse_chunk(self, obj):
        choices = obj.get("choices")
        if isinstance(choices, list) and choices:
            choice = choices[0]
            text = choice.get("text")
            if text is None:
                text = (choice.get("delta") or {}).get("content") or ""
            finish = choice.get("finish_reason")
            return text, None if finish in (None, "null") else finish, _legacy_logprobs(choice.get("logprobs"))
        if "content" in obj:               # llama.cpp's native shape (before Dec 2024)
            finish = ("length" if obj.get("stopped_limit") else "stop") if obj.get("stop") else None
            return str(obj.get("content") or ""), finish, _native_probs(obj.get("completion_probabilities"))
        return "", None, []


def _legacy_logprobs(lp) -> list:
    if not isinstance(lp, dict) or not isinstance(lp.get("tokens"), list):
        return []
    out = []
    tops = lp.get("top_logprobs") or [None] * len(lp["tokens"])
    for token, logprob, top in zip(lp["tokens"], lp.get("token_logprobs") or [], tops):
        alts = sorted(((t, _prob(v)) for t, v in (top or {}).items()), key=lambda a: -a[1])
        out.append((token, _prob(logprob), alts))
    return out


def _native_probs(probs) -> list:
    out = []
    for item in probs or []:
        alts = [(p.get("tok_str", ""), float(p.get("prob", math.nan))) for p in item.get("probs", [])]
        chosen = next((p for t, p in alts if t == item.get("content")), math.nan)
        out.append((item.get("content", ""), chosen, alts))
    return out


class LlamaCppBackend(OpenAIBackend):
    """llama.cpp's llama-server: OpenAI endpoints plus /tokenize and /props (context size)."""

    kind = "llama.cpp server"
    supported_samplers = OpenAIBackend.supported_samplers | {"typical", "tfs", "rep_pen_range", "mirostat",
                                                             "mirostat_tau", "mirostat_eta", *DRY_XTC_DYNATEMP}
    TOKENIZERS = (("/tokenize", "content", "tokens"),)

    def __init__(self, client: HttpClient, props: dict | None = None):
        super().__init__(client)
        settings = (props or {}).get("default_generation_settings") or {}
        n_ctx = settings.get("n_ctx", (props or {}).get("n_ctx"))
        if isinstance(n_ctx, int):
            self.n_ctx = n_ctx

    def _body(self, prompt, settings, memory, max_tokens, stop, alternatives) -> dict:
        body = super()._body(prompt, settings, memory, max_tokens, stop, alternatives)
        s = settings
        body.update(typical_p=s.typical, tfs_z=s.tfs, repeat_last_n=s.rep_pen_range, mirostat=s.mirostat,
                    mirostat_tau=s.mirostat_tau, mirostat_eta=s.mirostat_eta, **_dry_xtc_dynatemp(s))
        if s.dry_penalty_last_n == 0:
            body["dry_penalty_last_n"] = -1      # llama.cpp: -1 is the whole context, 0 switches DRY off
        if alternatives:
            body["n_probs"] = alternatives
        return body


def detect(url: str, api_key: str | None = None, *, kind: str | None = None, timeout: float = 10.0) -> RemoteBackend:
    """Find out what serves `url` and return its backend.

    KoboldCpp answers /api/extra/version with result "KoboldCpp"; llama.cpp's server has /props
    (or /health, or says owned_by "llamacpp" in /v1/models); anything else with /v1/models is
    taken as a generic OpenAI server. `kind` ("koboldcpp", "llamacpp", "openai") skips detection.
    """
    client = HttpClient(url, api_key, timeout=timeout)
    if kind not in (None, "koboldcpp", "llamacpp", "openai"):
        raise ValueError(f"unknown server kind {kind!r}")
    if kind in (None, "koboldcpp"):
        status, payload = client.request("GET", "/api/extra/version")
        if status == 200 and isinstance(payload, dict) and payload.get("result") == "KoboldCpp":
            return KoboldCppBackend(client, str(payload.get("version", "")))
        if kind == "koboldcpp":
            raise RemoteError(f"{client.base_url} is not a KoboldCpp server (/api/extra/version: HTTP {status})")
    if kind in (None, "llamacpp"):
        status, props = client.request("GET", "/props")
        if status == 200 and isinstance(props, dict) and ("default_generation_settings" in props or "n_ctx" in props):
            return LlamaCppBackend(client, props)
        status, health = client.request("GET", "/health")
        if status == 200 and isinstance(health, dict) and health.get("status") == "ok":
            return LlamaCppBackend(client, None)
        if kind == "llamacpp":
            raise RemoteError(f"{client.base_url} is not a llama.cpp server (no /props or /health)")
    status, payload = client.request("GET", "/v1/models")
    if status == 401:
        raise client.error("GET", "/v1/models", status, payload)
    data = payload.get("data") if isinstance(payload, dict) else None
    if status != 200 or not isinstance(data, list):
        raise RemoteError(f"no KoboldCpp, llama.cpp or OpenAI-compatible server answers at {client.base_url} "
                          f"(/v1/models: HTTP {status})", status)
    models = [m for m in data if isinstance(m, dict) and "id" in m]
    if kind is None and any(m.get("owned_by") == "llamacpp" for m in models):
        return LlamaCppBackend(client, None)
    return OpenAIBackend(client, models)
