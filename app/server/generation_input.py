"""KoboldCpp's GenerationInput: the request fields, their defaults, and the engine request.

Both APIs end up here: `/api/v1/generate` and the stream take these fields directly, and the
OpenAI endpoints rename their fields onto them first (as KoboldCpp's transform_genparams
does), so every native field also works on `/v1/completions`. Defaults are KoboldCpp 1.76's
(shared/spec/server-api.md A1.2), not the engine's presets: clients that omit a field expect
KoboldCpp's value. Features this engine does not have are accepted at their neutral value and
refused otherwise, all of them named in one 400, rather than silently ignored.
"""
from __future__ import annotations

import json
import math

from app.sampler_rows import MAX_TOKEN_RANGE, SAMPLER_RANGES
from app.server.errors import ApiError
from app.server.request import GenerationRequest
from engine.errors import SettingsError
from engine.sampling import SamplerSettings

DEFAULT_SAMPLER_ORDER = [6, 0, 1, 3, 4, 2, 5]
MAX_STOP_SEQUENCES = 32          # KoboldCpp's stop_token_max
MAX_LOGIT_BIAS = 32              # KoboldCpp's logit_bias_max
MAX_LOGPROBS = 10                # the engine reports 10 alternatives per token

MAX_BANNED_PHRASES = 48          # KoboldCpp's ban_token_max

# Features this engine lacks, as the clients name them: accepted only at the value that
# switches them off (SillyTavern sends most of these with every request, neutral).
UNSUPPORTED = {
    "grammar": "", "grammar_string": "", "json_schema": None, "images": [], "guidance_scale": 1,
    "negative_prompt": "", "skew": 0, "epsilon_cutoff": 0, "eta_cutoff": 0, "min_tokens": 0, "min_length": 0,
    "num_beams": 1, "penalty_alpha": 0, "no_repeat_ngram_size": 0, "encoder_repetition_penalty": 1,
    "top_n_sigma": -1,
}


# What a request may set each numeric sampler field to: what the app's sampling panel allows
# (app/sampler_rows.py, whose ranges are the clients' own), so that no client gets a generation
# the app itself could not ask for (a temperature of 1e9 was accepted before). Aliases share
# their setting's range; the penalties the panel has no row for take OpenAI's documented range;
# -1 means "off" in top_k and "the whole context" in the penalty windows (SillyTavern's and
# llama.cpp's sliders go there). Seeds are not range-checked but reduced (request_seed).
FIELD_RANGES = {
    **SAMPLER_RANGES,
    "top_k": (-1, SAMPLER_RANGES["top_k"][1]),
    "repeat_penalty": SAMPLER_RANGES["rep_pen"], "repetition_penalty": SAMPLER_RANGES["rep_pen"],
    "dynatemp_low": SAMPLER_RANGES["temperature"], "dynatemp_high": SAMPLER_RANGES["temperature"],
    "tfs_z": SAMPLER_RANGES["tfs"], "typical_p": SAMPLER_RANGES["typical"],
    "rep_pen_range": (-1, SAMPLER_RANGES["rep_pen_range"][1]),
    "repeat_last_n": (-1, SAMPLER_RANGES["rep_pen_range"][1]),
    "dry_penalty_last_n": (-1, SAMPLER_RANGES["dry_penalty_last_n"][1]),
    "presence_penalty": (-2.0, 2.0), "frequency_penalty": (-2.0, 2.0),
}
SEED_BITS = 32                   # KoboldCpp keeps a seed in a C int: the low 32 bits of what came


def request_seed(body: dict) -> int | None:
    """The seed to use (None = a fresh random one). Clients send any integer: SillyTavern's seed
    box goes to 2**64 - 1 and -1 means random. Like KoboldCpp (whose C int field keeps the low 32
    bits) a large seed is reduced, not refused, so the same seed still repeats the same text;
    unlike KoboldCpp, a reduced seed with the top bit set stays that seed instead of turning
    random. Any negative seed means random."""
    seed = number(body, "sampler_seed", None, integer=True)
    if seed is None:
        seed = number(body, "seed", -1, integer=True)
    return None if seed < 0 else seed % (1 << SEED_BITS)


def number(body: dict, name: str, default, *, integer: bool = False):
    """A numeric field (or its default), refusing strings, booleans, non-finite values and, for the
    sampler fields, values outside FIELD_RANGES (a 400 naming the field, KoboldCpp's shape)."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"{name} must be a number, got {value!r:.60}", name)
    if name in FIELD_RANGES:
        low, high = FIELD_RANGES[name]
        if not low <= value <= high:
            raise ApiError(400, f"{name}: must be between {low:g} and {high:g}, got {value!r:.60}", name)
    if integer:
        if value != int(value):
            raise ApiError(400, f"{name} must be an integer, got {value!r}", name)
        return int(value)
    return float(value)


def string(body: dict, name: str, default: str = "") -> str:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string, got {type(value).__name__}", name)
    return value


def flag(body: dict, name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false, got {value!r}", name)
    return value


def token_ids(value, name: str, n_vocab: int) -> list:
    """A list of token ids of this model's vocabulary (400 naming the field otherwise)."""
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise ApiError(400, f"{name} must be a list of token ids", name)
    bad = [i for i in value if not 0 <= i < n_vocab]
    if bad:
        raise ApiError(400, f"token id {bad[0]} is outside the vocabulary (0..{n_vocab - 1})", name)
    return value


def stop_list(value, name: str) -> list:
    """A string or list of strings; empty strings are dropped, at most 32 kept (KoboldCpp)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ApiError(400, f"{name} must be a string or a list of strings", name)
    return [s for s in value if s][:MAX_STOP_SEQUENCES]


def _check_unsupported(body: dict) -> None:
    """One 400 naming every unsupported feature the request switches on (not just the first:
    a client's user should not have to find them one send at a time)."""
    refused = [name for name, neutral in UNSUPPORTED.items() if not _neutral(body.get(name), neutral)]
    if refused:
        raise ApiError(400, f"not supported by this server: {', '.join(refused)}; leave "
                            f"{'it' if len(refused) == 1 else 'them'} at the neutral value "
                            f"({', '.join(f'{n}={UNSUPPORTED[n]!r}' for n in refused)})", ",".join(refused))


def _neutral(value, neutral) -> bool:
    """Whether a field leaves its feature off: absent, empty, or at the neutral number
    (top_n_sigma is off at any value <= 0, as in llama.cpp)."""
    if value is None or value == neutral:
        return True
    if isinstance(neutral, (int, float)) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return neutral < 0 and value <= 0
    return not value


def _banned_phrases(body: dict) -> list:
    """KoboldCpp's `banned_tokens` (strings, despite the name), SillyTavern's `banned_strings` (what
    1.12 sends to KoboldCpp, llama.cpp and text-generation-webui) and `banned_phrases`."""
    phrases = []
    for name in ("banned_tokens", "banned_strings", "banned_phrases"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ApiError(400, f"{name} must be a list of strings (phrases to ban)", name)
        phrases += [v for v in value if v and v not in phrases]
    if len(phrases) > MAX_BANNED_PHRASES:
        raise ApiError(400, f"at most {MAX_BANNED_PHRASES} banned phrases are accepted, got {len(phrases)}",
                       "banned_tokens")
    return phrases


def _dry_breakers(body: dict) -> list:
    """A list of strings, or (SillyTavern) one JSON-encoded list."""
    value = body.get("dry_sequence_breakers")
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ApiError(400, "dry_sequence_breakers must be a list of strings or a JSON-encoded list",
                           "dry_sequence_breakers") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "dry_sequence_breakers must be a list of strings", "dry_sequence_breakers")
    return value


def _temperature(body: dict) -> tuple[float, float]:
    """(temperature, dynatemp_range). SillyTavern's text-generation-webui names give the range as
    its ends, dynatemp_low..dynatemp_high; KoboldCpp's give its middle and half-width."""
    temperature = number(body, "temperature", 0.7)
    spread = number(body, "dynatemp_range", 0.0)
    if body.get("dynamic_temperature") is not False and ("dynatemp_low" in body or "dynatemp_high" in body):
        if body.get("dynamic_temperature") or not spread:
            low = number(body, "dynatemp_low", temperature)
            high = number(body, "dynatemp_high", temperature)
            if low > high:
                raise ApiError(400, f"dynatemp_low ({low}) is above dynatemp_high ({high})", "dynatemp_low")
            return (low + high) / 2, (high - low) / 2
    return temperature, spread


def _banned_tokens(body: dict, eos_id: int) -> list:
    banned = []
    bans = body.get("custom_token_bans")
    if bans:
        if not isinstance(bans, str):
            raise ApiError(400, "custom_token_bans must be comma-separated token ids", "custom_token_bans")
        for part in bans.split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit():
                raise ApiError(400, f"custom_token_bans: {part!r} is not a token id", "custom_token_bans")
            banned.append(int(part))
    # ban_eos_token, KoboldAI United's use_default_badwordsids and llama.cpp's ignore_eos all mean
    # "never end on the end-of-text token". KoboldCpp's bypass_eos (sample EOS but keep going)
    # has no equivalent in this engine; banning EOS is the closest behaviour.
    ban_eos = body.get("ban_eos_token")
    if ban_eos is None:
        ban_eos = body.get("use_default_badwordsids")
    if ban_eos or body.get("ignore_eos") or body.get("bypass_eos"):
        banned.append(eos_id)
    return banned


def _window(n: int) -> int:
    """A repetition-penalty window: -1 (SillyTavern's "All") is the longest one, the whole context."""
    return MAX_TOKEN_RANGE if n < 0 else n


def sampler_settings(body: dict, *, eos_id: int, n_vocab: int) -> SamplerSettings:
    """SamplerSettings from KoboldCpp's fields and defaults (400 naming the bad field)."""
    _check_unsupported(body)
    # KoboldCpp's transform_genparams: of rep_pen and its two aliases the largest wins.
    rep_pen = max(number(body, name, 1.0) for name in ("rep_pen", "repeat_penalty", "repetition_penalty"))
    order = body.get("sampler_order")
    if order is None:
        order = DEFAULT_SAMPLER_ORDER
    if not isinstance(order, list) or len(order) > 8:
        raise ApiError(400, f"sampler_order must be a list of at most 7 KoboldCpp sampler ids, got {order!r}",
                       "sampler_order")
    bias = body.get("logit_bias") or {}
    if not isinstance(bias, dict):
        raise ApiError(400, "logit_bias must map token ids to numbers", "logit_bias")
    bias = dict(list(bias.items())[:MAX_LOGIT_BIAS])
    banned = _banned_tokens(body, eos_id)
    for token in [*banned, *(int(k) for k in bias if str(k).lstrip("-").isdigit())]:
        if not 0 <= token < n_vocab:
            raise ApiError(400, f"token id {token} is outside the vocabulary (0..{n_vocab - 1})", "logit_bias")
    temperature, dynatemp_range = _temperature(body)
    try:
        return SamplerSettings(
            temperature=temperature,
            top_k=max(0, number(body, "top_k", 100, integer=True)),
            top_a=number(body, "top_a", 0.0),
            tfs=number(body, "tfs", 1.0),
            typical=number(body, "typical", 1.0),
            top_p=number(body, "top_p", 0.92),
            min_p=number(body, "min_p", 0.0),
            rep_pen=rep_pen,
            rep_pen_range=_window(number(body, "rep_pen_range", 320, integer=True)),
            rep_pen_slope=number(body, "rep_pen_slope", 1.0),
            presence_penalty=number(body, "presence_penalty", 0.0),
            frequency_penalty=number(body, "frequency_penalty", 0.0),
            mirostat=number(body, "mirostat", 0, integer=True),
            mirostat_tau=number(body, "mirostat_tau", 5.0),
            mirostat_eta=number(body, "mirostat_eta", 0.1),
            dry_multiplier=number(body, "dry_multiplier", 0.0),
            dry_base=number(body, "dry_base", 1.75),
            dry_allowed_length=number(body, "dry_allowed_length", 2, integer=True),
            dry_penalty_last_n=number(body, "dry_penalty_last_n", 320, integer=True),
            dry_sequence_breakers=_dry_breakers(body),
            xtc_threshold=number(body, "xtc_threshold", 0.2),
            xtc_probability=number(body, "xtc_probability", 0.0),
            dynatemp_range=dynatemp_range,
            dynatemp_exponent=number(body, "dynatemp_exponent", 1.0),
            smoothing_factor=number(body, "smoothing_factor", 0.0),
            smoothing_curve=number(body, "smoothing_curve", 1.0),
            logit_bias=bias, banned_tokens=banned, banned_phrases=_banned_phrases(body), order=order,
            seed=request_seed(body),
        )
    except SettingsError as e:
        raise ApiError(400, str(e), e.setting) from None


def generation_request(body: dict, *, n_ctx: int, max_length_cap: int, eos_id: int, n_vocab: int,
                       default_max_length: int = 180) -> GenerationRequest:
    """The engine request for a KoboldCpp GenerationInput body."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    max_ctx = number(body, "max_context_length", n_ctx, integer=True)
    if max_ctx < 8:
        raise ApiError(400, f"max_context_length must be at least 8, got {max_ctx}", "max_context_length")
    max_ctx = min(max_ctx, n_ctx)      # KoboldCpp clamps to the allocated context
    max_length = number(body, "max_length", default_max_length, integer=True)
    if max_length < 1:
        raise ApiError(400, f"max_length must be at least 1, got {max_length}", "max_length")
    max_length = min(max_length, max_length_cap)
    # KoboldCpp quirk: a max_length within min(ctx-4, 16) tokens of the context is reduced so
    # that some prompt always fits; clients such as Lite send max_length == context happily.
    room = max(1, min(max_ctx - 4, 16))
    max_length = max(1, min(max_length, max_ctx - room))
    return GenerationRequest(
        prompt=string(body, "prompt"),
        memory=string(body, "memory"),
        settings=sampler_settings(body, eos_id=eos_id, n_vocab=n_vocab),
        max_tokens=max_length,
        stop=stop_list(body.get("stop_sequence"), "stop_sequence"),
        max_context=max_ctx,
        genkey=string(body, "genkey"),
    )
