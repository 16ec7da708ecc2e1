"""KoboldCpp's token samplers, their settings and presets.

A token is chosen from the model's logits in three stages:

1. logit bias and banned tokens change the raw logits; padding ids (>= the tokenizer's
   size) are dropped so they can never be sampled; DRY penalises the tokens that would
   extend a repetition (always first, as in KoboldCpp);
2. the samplers run in the configured order (KoboldCpp's `sampler_order`), each one
   penalising or pruning the candidate set; the temperature slot is dynamic temperature
   when `dynatemp_range` is set, and smoothing (quadratic sampling) follows it;
3. XTC may remove the most likely tokens (always last, as in KoboldCpp), then one token is
   drawn from the softmax of what is left, with a numpy Generator seeded once per
   generation so that a seed reproduces a run.

The sampler maths follows KoboldCpp's gpttype_adapter.cpp (which took top-k, tail-free,
typical, top-p, min-p and mirostat from llama.cpp, and DRY from its author's llama.cpp
pull request): comparisons keep at least one token, probabilities are computed in float64
from the logits that survived so far. Phrase bans (`banned_phrases`) are not a sampler:
the generator enforces them by backtracking (engine/phrase_bans.py).

`Sampler.sample` returns the chosen token together with the top 10 alternatives and their
probabilities. For sampling these come from the final distribution the token was drawn from
(after every sampler and the temperature), so they can be fewer than 10 when top-k/top-p
pruned harder. For greedy decoding (temperature 0) they come from the softmax of the
logits after bias and penalties, over the whole vocabulary.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import secrets
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from engine.errors import SettingsError

# Sampler names as they appear in SamplerSettings.order.
SAMPLER_NAMES = ("rep_pen", "top_k", "top_a", "tfs", "typical", "top_p", "min_p", "temperature")

# KoboldCpp's numeric sampler ids (expose.h enum `samplers`), accepted in an order for the
# server's sake: 0 top_k, 1 top_a, 2 top_p, 3 tfs, 4 typical, 5 temperature, 6 rep_pen.
KOBOLD_SAMPLER_IDS = {0: "top_k", 1: "top_a", 2: "top_p", 3: "tfs", 4: "typical", 5: "temperature", 6: "rep_pen"}

DEFAULT_ORDER = ("rep_pen", "top_k", "top_a", "tfs", "typical", "top_p", "min_p", "temperature")

N_ALTERNATIVES = 10

# The sequence breakers SillyTavern and Kobold Lite send with DRY: a repetition never
# continues across a new line, a speaker's colon, a quote or an asterisk.
DEFAULT_DRY_BREAKERS = ("\n", ":", "\"", "*")
MAX_DRY_BREAKERS = 32
DRY_BREAKER_MAX_CHARS = 40       # KoboldCpp clamps each breaker (a crafted one could be slow)
DRY_BREAKER_MAX_TOKENS = 20      # ... and the token tail of each
MAX_BANNED_PHRASES = 48          # KoboldCpp's ban_token_max


@dataclass(frozen=True)
class SamplerSettings:
    """Every knob of the sampler, validated on construction.

    The defaults are the "KoboldCpp default" preset. A disabled sampler has its neutral value
    (top_k 0, top_a 0, tfs 1, typical 1, top_p 1, min_p 0, rep_pen 1, dry_multiplier 0,
    xtc_probability 0, dynatemp_range 0, smoothing_factor 0). temperature 0 (without dynamic
    temperature) means greedy decoding. `seed` None (or -1) means a fresh random seed per
    generation. `dry_penalty_last_n` 0 means the whole context. `banned_phrases` (at most 48
    strings, compared case-insensitively) never appear in the generated text.
    Use `dataclasses.replace(settings, top_k=40)` to derive settings; it validates again.
    """

    temperature: float = 0.7
    top_k: int = 100
    top_a: float = 0.0
    tfs: float = 1.0
    typical: float = 1.0
    top_p: float = 0.92
    min_p: float = 0.0
    rep_pen: float = 1.1
    rep_pen_range: int = 320
    rep_pen_slope: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = 320
    dry_sequence_breakers: tuple = DEFAULT_DRY_BREAKERS
    xtc_threshold: float = 0.1
    xtc_probability: float = 0.0
    dynatemp_range: float = 0.0
    dynatemp_exponent: float = 1.0
    smoothing_factor: float = 0.0
    smoothing_curve: float = 1.0
    logit_bias: dict = field(default_factory=dict)
    banned_tokens: tuple = ()
    banned_phrases: tuple = ()
    order: tuple = DEFAULT_ORDER
    seed: int | None = None

    def __post_init__(self):
        _check_number("temperature", self.temperature, low=0.0)
        _check_int("top_k", self.top_k, low=0)
        _check_number("top_a", self.top_a, low=0.0)
        _check_number("tfs", self.tfs, low=0.0, high=1.0)
        _check_number("typical", self.typical, low=0.0, high=1.0)
        _check_number("top_p", self.top_p, low=0.0, high=1.0)
        _check_number("min_p", self.min_p, low=0.0, high=1.0)
        _check_number("rep_pen", self.rep_pen, low=0.0)
        if self.rep_pen == 0:
            raise SettingsError("rep_pen", "must be greater than 0 (1 disables it)")
        _check_int("rep_pen_range", self.rep_pen_range, low=0)
        _check_number("rep_pen_slope", self.rep_pen_slope, low=0.0)   # KoboldAI clients go to 10
        _check_number("presence_penalty", self.presence_penalty)
        _check_number("frequency_penalty", self.frequency_penalty)
        _check_int("mirostat", self.mirostat, low=0, high=2)
        _check_number("mirostat_tau", self.mirostat_tau, low=0.0)
        _check_number("mirostat_eta", self.mirostat_eta, low=0.0)
        _check_number("dry_multiplier", self.dry_multiplier, low=0.0)
        _check_number("dry_base", self.dry_base, low=0.0)
        _check_int("dry_allowed_length", self.dry_allowed_length, low=0)
        _check_int("dry_penalty_last_n", self.dry_penalty_last_n, low=-1)
        _check_number("xtc_threshold", self.xtc_threshold, low=0.0, high=1.0)
        _check_number("xtc_probability", self.xtc_probability, low=0.0, high=1.0)
        _check_number("dynatemp_range", self.dynatemp_range, low=0.0)
        _check_number("dynatemp_exponent", self.dynatemp_exponent, low=0.0)
        _check_number("smoothing_factor", self.smoothing_factor, low=0.0)
        _check_number("smoothing_curve", self.smoothing_curve, low=1.0, high=10.0)   # SillyTavern's slider
        object.__setattr__(self, "dry_sequence_breakers",
                           _normalise_strings("dry_sequence_breakers", self.dry_sequence_breakers, MAX_DRY_BREAKERS))
        object.__setattr__(self, "banned_phrases",
                           _normalise_strings("banned_phrases", self.banned_phrases, MAX_BANNED_PHRASES))
        object.__setattr__(self, "logit_bias", _normalise_bias(self.logit_bias))
        object.__setattr__(self, "banned_tokens", _normalise_banned(self.banned_tokens))
        object.__setattr__(self, "order", _normalise_order(self.order))
        seed = self.seed
        if seed is not None:
            _check_int("seed", seed, low=-1)
            if seed == -1:
                seed = None
        object.__setattr__(self, "seed", seed)

    @property
    def greedy(self) -> bool:
        """Temperature 0 (and no dynamic temperature): always take the most likely token after
        bias and penalties."""
        return self.temperature == 0 and self.dynatemp_range == 0

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "SamplerSettings":
        """The named preset (see PRESETS), with some fields overridden."""
        if name not in PRESETS:
            known = ", ".join(repr(n) for n in PRESETS)
            raise SettingsError("preset", f"unknown preset {name!r} (known: {known})")
        return cls(**{**NEUTRAL, **PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        """Plain JSON-able values (logit_bias keys become strings, as in KoboldCpp's API)."""
        d = dataclasses.asdict(self)
        d["logit_bias"] = {str(k): v for k, v in self.logit_bias.items()}
        d["banned_tokens"] = list(self.banned_tokens)
        d["banned_phrases"] = list(self.banned_phrases)
        d["dry_sequence_breakers"] = list(self.dry_sequence_breakers)
        d["order"] = list(self.order)
        return d


# Every sampler switched off: the base that presets are written against.
NEUTRAL = dict(temperature=1.0, top_k=0, top_a=0.0, tfs=1.0, typical=1.0, top_p=1.0, min_p=0.0,
               rep_pen=1.0, rep_pen_range=320, rep_pen_slope=1.0, presence_penalty=0.0,
               frequency_penalty=0.0, mirostat=0, dry_multiplier=0.0, xtc_probability=0.0,
               dynatemp_range=0.0, smoothing_factor=0.0)

PRESETS = {
    "KoboldCpp default": dict(temperature=0.7, top_k=100, top_p=0.92, rep_pen=1.1, rep_pen_range=320,
                              order=("rep_pen", "top_k", "top_a", "tfs", "typical", "top_p", "temperature")),
    # ggml's examples/gpt-neox main.cpp defaults: top-k 40, top-p 0.9, temperature 0.9, no penalty.
    "ggml example": dict(temperature=0.9, top_k=40, top_p=0.9),
    "Deterministic": dict(temperature=0.0),
    # What SillyTavern and Lite users reach for against the loops small models fall into: DRY
    # at its usual strength, XTC now and then, a min-p floor instead of top-k/top-p.
    "Creative (DRY + XTC)": dict(temperature=1.0, min_p=0.02, dry_multiplier=0.8, dry_base=1.75,
                                 dry_allowed_length=2, xtc_threshold=0.1, xtc_probability=0.5),
    # Quadratic sampling alone (its author's suggested 0.25), with a min-p floor.
    "Smooth": dict(temperature=1.0, min_p=0.05, smoothing_factor=0.25),
}


def _check_number(name, value, low=None, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise SettingsError(name, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise SettingsError(name, f"must be finite, got {value!r}")
    if low is not None and value < low:
        raise SettingsError(name, f"must be at least {low}, got {value!r}")
    if high is not None and value > high:
        raise SettingsError(name, f"must be between {low} and {high}, got {value!r}")


def _check_int(name, value, low=None, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SettingsError(name, f"must be an integer, got {value!r}")
    _check_number(name, value, low, high)


def _normalise_bias(bias) -> dict:
    if not isinstance(bias, dict):
        raise SettingsError("logit_bias", f"must map token ids to numbers, got {bias!r}")
    out = {}
    for key, value in bias.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise SettingsError("logit_bias", f"key {key!r} is not a token id") from None
        if token < 0:
            raise SettingsError("logit_bias", f"token id {token} is negative")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                or math.isnan(value) or value == math.inf:
            # -inf is allowed: it bans the token, as KoboldCpp's custom_token_bans do.
            raise SettingsError("logit_bias", f"bias for token {token} must be a number or -inf, got {value!r}")
        out[token] = float(value)
    return out


def _normalise_banned(banned) -> tuple:
    if isinstance(banned, (str, bytes)) or not hasattr(banned, "__iter__"):
        raise SettingsError("banned_tokens", f"must be a list of token ids, got {banned!r}")
    out = []
    for token in banned:
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or token < 0:
            raise SettingsError("banned_tokens", f"{token!r} is not a token id")
        out.append(int(token))
    return tuple(sorted(set(out)))


def _normalise_strings(name, value, limit) -> tuple:
    """A list of strings (a JSON-encoded list also, as SillyTavern sends DRY's breakers);
    empty strings are dropped, as KoboldCpp does."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise SettingsError(name, f"must be a list of strings (or one JSON-encoded), got {value!r}") from None
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise SettingsError(name, f"must be a list of strings, got {value!r}")
    out = []
    for item in value:
        if not isinstance(item, str):
            raise SettingsError(name, f"must be a list of strings, got an item {item!r}")
        if item and item not in out:
            out.append(item)
    if len(out) > limit:
        raise SettingsError(name, f"at most {limit} are accepted, got {len(out)}")
    return tuple(out)


def _normalise_order(order) -> tuple:
    """Names (or KoboldCpp's numeric ids) -> a tuple of names with every sampler present once.

    KoboldCpp's older clients send a 6-entry order without rep_pen; like KoboldCpp we then run
    the repetition penalty first. min_p has no KoboldCpp id: when absent it runs after top_p.
    """
    if isinstance(order, (str, bytes)) or not hasattr(order, "__iter__"):
        raise SettingsError("order", f"must be a list of sampler names, got {order!r}")
    names = []
    for item in order:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if int(item) not in KOBOLD_SAMPLER_IDS:
                raise SettingsError("order", f"unknown sampler id {item} (KoboldCpp ids are 0-6)")
            item = KOBOLD_SAMPLER_IDS[int(item)]
        if item not in SAMPLER_NAMES:
            raise SettingsError("order", f"unknown sampler {item!r} (known: {', '.join(SAMPLER_NAMES)})")
        if item in names:
            raise SettingsError("order", f"sampler {item!r} is listed twice")
        names.append(item)
    if "rep_pen" not in names:
        names.insert(0, "rep_pen")
    if "min_p" not in names and "top_p" in names:
        names.insert(names.index("top_p") + 1, "min_p")
    missing = [n for n in SAMPLER_NAMES if n not in names]
    if missing:
        raise SettingsError("order", f"sampler order lacks {', '.join(missing)}")
    return tuple(names)


# ---------------------------------------------------------------------------------------------
# The candidate set and the samplers that prune it


class Candidates:
    """The tokens still in the running: ids and float64 logits.

    Sorting is descending by logit with ties broken by the lower id, so every sampler that
    walks the sorted list is deterministic. A full sort of a 50k vocabulary costs several
    milliseconds per token, so samplers that only need the best few use `best(n)` (a partial
    selection) and threshold samplers filter without sorting.
    """

    __slots__ = ("ids", "logits", "is_sorted")

    def __init__(self, ids: np.ndarray, logits: np.ndarray, is_sorted: bool = False):
        self.ids = np.asarray(ids, dtype=np.int64)
        self.logits = np.asarray(logits, dtype=np.float64)
        self.is_sorted = is_sorted

    def __len__(self):
        return len(self.ids)

    def sorted(self) -> "Candidates":
        if self.is_sorted:
            return self
        order = np.lexsort((self.ids, -self.logits))
        return Candidates(self.ids[order], self.logits[order], True)

    def best(self, n: int) -> "Candidates":
        """The n highest logits (at least one), sorted; ties at the boundary keep lower ids."""
        n = max(1, min(int(n), len(self)))
        if self.is_sorted or 4 * n >= len(self):
            return self.sorted().head(n)
        # Select before sorting: everything strictly above the n-th value, then as many of
        # the boundary ties as fit, lowest ids first.
        kth = np.partition(self.logits, len(self) - n)[len(self) - n]
        above = np.flatnonzero(self.logits > kth)
        ties = np.flatnonzero(self.logits == kth)
        ties = ties[np.argsort(self.ids[ties], kind="stable")][:n - len(above)]
        keep = np.concatenate([above, ties])
        return Candidates(self.ids[keep], self.logits[keep]).sorted()

    def head(self, n: int) -> "Candidates":
        """The first n candidates (at least one) of the current order."""
        n = max(1, min(n, len(self)))
        return Candidates(self.ids[:n], self.logits[:n], self.is_sorted)

    def where(self, keep: np.ndarray) -> "Candidates":
        """The candidates where `keep` is true, in the current order."""
        return Candidates(self.ids[keep], self.logits[keep], self.is_sorted)

    def log_z(self) -> float:
        """log of the softmax normaliser: p_i = exp(logit_i - log_z)."""
        peak = self.logits.max()
        return float(peak + np.log(np.exp(self.logits - peak).sum()))

    def probs(self) -> np.ndarray:
        """Softmax of the logits, in the current order."""
        shifted = np.exp(self.logits - self.logits.max())
        return shifted / shifted.sum()


def apply_repetition_penalty(c: Candidates, history: Sequence[int], penalty: float, range_: int,
                             slope: float, presence: float = 0.0, frequency: float = 0.0) -> Candidates:
    """KoboldCpp's repetition penalty over the last `range_` tokens of `history`.

    The window is split in half: tokens seen in the newer half get the full `penalty`, tokens
    seen only in the older half get `1 + (penalty - 1) * slope` (slope 1 = uniform, 0 = the
    older half is not penalised, above 1 it is penalised more). A positive logit is divided by the penalty, a negative one
    multiplied, so the token always becomes less likely. `presence` is then subtracted from
    every penalised token (KoboldCpp), and `frequency` times the token's count in the window
    (OpenAI's frequency penalty; KoboldCpp has none).
    """
    n = min(len(history), range_)
    if n == 0 or (penalty == 1.0 and presence == 0.0 and frequency == 0.0):
        return c
    window = np.asarray(history[len(history) - n:], dtype=np.int64)
    near_start = (n + 1) // 2                    # index i is "near" when 2*i >= n
    near = np.unique(window[near_start:])
    seen, counts = np.unique(window, return_counts=True)
    reduced = 1.0 + (penalty - 1.0) * slope if penalty > 1.0 else penalty

    logits = c.logits.copy()
    hit = np.isin(c.ids, seen)
    pen = np.where(np.isin(c.ids, near), penalty, reduced)[hit]
    x = logits[hit]
    x = np.where(x <= 0, x * pen, x / pen) - presence
    if frequency:
        x = x - frequency * counts[np.searchsorted(seen, c.ids[hit])]
    logits[hit] = x
    return Candidates(c.ids, logits, False)


def apply_top_k(c: Candidates, k: int) -> Candidates:
    """Keep the k highest logits (ties at the boundary keep the lower id); k 0 disables."""
    if k <= 0 or k >= len(c):
        return c
    return c.best(k)


def apply_top_a(c: Candidates, a: float) -> Candidates:
    """Drop tokens whose probability is below a * p_max^2; a 0 disables."""
    if a <= 0 or len(c) <= 1:
        return c
    p = c.probs()
    p_max = p.max()
    return c.where(p >= a * p_max * p_max)


def apply_tail_free(c: Candidates, z: float) -> Candidates:
    """Tail-free sampling: cut where the normalised |second derivative| of the sorted
    probabilities has accumulated past z; z 1 disables."""
    if z >= 1.0 or len(c) <= 2:
        return c
    c = c.sorted()
    p = c.probs()
    d2 = np.abs(np.diff(p, n=2))
    total = d2.sum()
    d2 = d2 / total if total > 1e-6 else np.full(len(d2), 1.0 / len(d2))
    cum = np.cumsum(d2)
    # llama.cpp: the first i >= 1 with cum[i] > z keeps i tokens; otherwise keep all.
    over = np.flatnonzero(cum[1:] > z)
    return c.head(int(over[0]) + 1) if len(over) else c


def apply_typical(c: Candidates, p: float) -> Candidates:
    """Locally typical sampling: keep the tokens whose surprise is closest to the entropy
    until their probabilities sum past p; p 1 disables."""
    if p >= 1.0 or len(c) <= 1:
        return c
    c = c.sorted()
    probs = c.probs()
    logp = np.log(np.where(probs > 0, probs, np.finfo(np.float64).tiny))
    entropy = -np.sum(probs * logp)
    order = np.argsort(np.abs(-logp - entropy), kind="stable")
    cum = np.cumsum(probs[order])
    over = np.flatnonzero(cum > p)
    keep = order[:int(over[0]) + 1] if len(over) else order
    return Candidates(c.ids[keep], c.logits[keep], False)


def apply_top_p(c: Candidates, p: float) -> Candidates:
    """Nucleus sampling: the smallest head of the sorted list whose probability reaches p."""
    if p >= 1.0 or len(c) <= 1:
        return c
    log_z = c.log_z()
    n = 256
    while True:
        # The nucleus is usually a few hundred tokens at most: sort only a growing head.
        head = c.best(n)
        reached = np.flatnonzero(np.cumsum(np.exp(head.logits - log_z)) >= p)
        if len(reached):
            return head.head(int(reached[0]) + 1)
        if len(head) == len(c):
            return head
        n *= 8


def apply_min_p(c: Candidates, min_p: float) -> Candidates:
    """Drop tokens whose probability is below min_p times the top token's; 0 disables."""
    if min_p <= 0 or len(c) <= 1:
        return c
    p = c.probs()
    return c.where(p >= min_p * p.max())


def apply_temperature(c: Candidates, t: float, smoothing: float = 0.0, curve: float = 1.0) -> Candidates:
    """Divide the logits by t (> 0); dividing by a positive number keeps the order. Smoothing
    (quadratic sampling) follows when `smoothing` > 0, as in KoboldCpp's sample_temperature."""
    if t != 1.0:
        c = Candidates(c.ids, c.logits / t, c.is_sorted)
    return apply_smoothing(c, smoothing, curve)


def apply_smoothing(c: Candidates, factor: float, curve: float = 1.0) -> Candidates:
    """Quadratic sampling: with h the top logit and d = logit - h (<= 0), the logit becomes
    h - k*factor*d^2 + s*factor*d^3, k = (3 - curve)/2, s = (curve - 1)/2 (text-generation-webui's
    smoothing_curve; curve 1 is KoboldCpp's plain quadratic). Near-top tokens come closer to the
    top, the tail falls away; up to curve 3 the order is kept (above it, as in text-generation-webui,
    tokens just below the top may pass it). factor 0 disables."""
    if factor <= 0 or len(c) <= 1:
        return c
    h = c.logits.max()
    d = c.logits - h
    k, s = (3.0 - curve) / 2.0, (curve - 1.0) / 2.0
    return Candidates(c.ids, h - k * factor * d * d + s * factor * d * d * d, c.is_sorted)


def apply_dynamic_temperature(c: Candidates, low: float, high: float, exponent: float,
                              smoothing: float = 0.0, curve: float = 1.0) -> Candidates:
    """Entropy-scaled temperature (KoboldCpp's sample_entropy): the temperature is
    low + (high - low) * (H / H_max)^exponent, where H is the entropy of the candidates'
    distribution and H_max = log(number of candidates). A confident distribution gets the low
    temperature, a flat one the high. Smoothing follows, as after a plain temperature."""
    if len(c) <= 1:
        return c
    p = c.probs()
    nz = p[p > 0]
    entropy = float(-(nz * np.log(nz)).sum())
    t = low + (high - low) * (entropy / math.log(len(c))) ** exponent
    if t <= 0:
        return c.best(1)        # KoboldCpp would divide by zero; temperature 0 is greedy
    return apply_smoothing(Candidates(c.ids, c.logits / t, c.is_sorted), smoothing, curve)


def apply_xtc(c: Candidates, threshold: float, probability: float, rng: np.random.Generator) -> Candidates:
    """Exclude Top Choices: with the given probability (one draw per token), every token whose
    probability is at least `threshold` except the least likely of them is removed, so that
    the model leaves its most predictable path while staying among sensible tokens. Nothing
    happens when fewer than two tokens reach the threshold; a threshold above 0.5 disables it
    (two tokens cannot both pass). As KoboldCpp: the draw is skipped when it cannot apply."""
    if threshold > 0.5 or probability <= 0 or len(c) <= 1:
        return c
    if rng.random() >= probability:
        return c
    c = c.sorted()
    above = int(np.count_nonzero(c.probs() >= threshold))   # sorted: they are the first ones
    if above < 2:
        return c
    return Candidates(c.ids[above - 1:], c.logits[above - 1:], True)


# -- DRY ("don't repeat yourself") ---------------------------------------------------------------


def apply_dry(c: Candidates, history: Sequence[int], multiplier: float, base: float, allowed_length: int,
              last_n: int, restarts: dict | None = None) -> Candidates:
    """KoboldCpp's DRY sampler: penalise every token that would extend a repetition.

    Within the last `last_n` tokens of `history` (0 or -1: all of it), for each earlier place
    where the text ending there equals the text ending at the newest token (the longest such
    suffix, found with the Z-algorithm run backwards), the token that followed that place would
    continue the repetition. If the repeated length n reaches `allowed_length`, that token's
    logit loses multiplier * base^(n - allowed_length) (the largest n per token counts).
    A repetition never reaches back across a sequence breaker: `restarts` maps a head token to
    the token tails that complete a breaker (see `restart_sequences`).
    """
    if multiplier <= 0 or base <= 0:
        return c
    n = len(history) if last_n <= 0 else min(len(history), last_n)
    if n <= allowed_length:
        return c
    tokens = list(history[len(history) - n:])
    limit = _restart_limit(tokens, restarts or {})
    if limit <= allowed_length:
        return c
    repeat = _suffix_repeats(tokens, limit)
    longest: dict[int, int] = {}
    for i in range(n - 1):
        length = repeat[i]
        if length >= allowed_length:
            token = tokens[i + 1]              # the token that continued the repetition there
            if longest.get(token, -1) < length:
                longest[token] = length
    if not longest:
        return c
    # pow(base, exponent) is clamped below float32 overflow, as KoboldCpp does.
    max_exponent = int(88.7228391 / math.log(base)) if base > 1.000001 else 0
    penalty = {}
    for token, length in longest.items():
        exponent = length - allowed_length
        if max_exponent > 0:
            exponent = min(exponent, max_exponent)
        penalty[token] = multiplier * base ** exponent
    hit = np.isin(c.ids, np.fromiter(penalty, dtype=np.int64, count=len(penalty)))
    if not hit.any():
        return c
    logits = c.logits.copy()
    logits[hit] -= np.array([penalty[int(t)] for t in c.ids[hit]])
    return Candidates(c.ids, logits, False)


def _restart_limit(tokens: list, restarts: dict) -> int:
    """How far back a repetition may reach: up to just after the newest complete sequence
    breaker (KoboldCpp's step 1: the longest breaker whose head is nearest the end)."""
    n = len(tokens)
    for i in range(n):
        ix = n - 1 - i
        tails = restarts.get(tokens[ix])
        if not tails:
            continue
        longest = -1
        for tail in tails:
            if longest < len(tail) <= i and list(tokens[ix + 1:ix + 1 + len(tail)]) == list(tail):
                longest = len(tail)
        if longest >= 0:
            return i - longest
    return n


def _suffix_repeats(tokens: list, limit: int) -> list:
    """repeat[i]: the length (at most `limit`) of the longest common suffix of tokens[:i+1] and
    the whole list, for i < len-1: the Z-algorithm over the reversed list, in linear time."""
    n = len(tokens)
    last = n - 1
    repeat = [0] * n
    lt = rt = 0
    for k in range(1, n):
        if k > rt:
            m = 0
            while m + k < n and tokens[last - m] == tokens[last - m - k]:
                m += 1
            repeat[last - k] = min(m, limit)
            if m > 0:
                lt, rt = k, k + m - 1
        else:
            pair = k - lt
            right = rt - k + 1
            if repeat[last - pair] < right:
                repeat[last - k] = min(repeat[last - pair], limit)
            else:
                i = rt + 1
                while i < n and tokens[last - i] == tokens[last - i + k]:
                    i += 1
                repeat[last - k] = min(i - k, limit)
                lt, rt = k, i - 1
    return repeat


def restart_sequences(tokenizer, breakers: Sequence[str]) -> dict:
    """DRY's sequence breakers as token sequences: head token id -> list of tails (tuples).

    As KoboldCpp's GetOverlappingTokenSequences: every token whose text contains a breaker is a
    head with an empty tail; every token whose text ends with a proper beginning of a breaker
    is a head whose tail is the rest of the breaker, tokenized (at most 20 tokens). Token texts
    are compared as bytes. Each breaker is cut to 40 characters.
    """
    out: dict[int, list] = {}
    for breaker in breakers:
        for head, tail in _breaker_sequences(tokenizer, breaker[:DRY_BREAKER_MAX_CHARS]):
            tails = out.setdefault(head, [])
            if tail not in tails:
                tails.append(tail)
    return out


@functools.lru_cache(maxsize=64)
def _breaker_sequences(tokenizer, breaker: str) -> tuple:
    """(head, tail) pairs of one breaker (cached: the vocabulary scan costs ~0.1 s)."""
    target = breaker.encode("utf-8")
    all_extended = all(b > 127 for b in target)
    pairs = []
    for token in range(int(tokenizer.n_vocab)):
        word = tokenizer.token_bytes(token)
        if target in word:
            pairs.append((token, ()))
            continue
        if all_extended:
            continue               # KoboldCpp: no partial matches inside multi-byte characters
        for cut in range(1, min(len(word), len(target) - 1) + 1):
            if word.endswith(target[:cut]):
                rest = target[cut:].decode("utf-8", errors="ignore")
                tail = tuple(tokenizer.encode(rest)[:DRY_BREAKER_MAX_TOKENS]) if rest else ()
                if (token, tail) not in pairs:
                    pairs.append((token, tail))
    return tuple(pairs)


@dataclass(frozen=True)
class Sample:
    """One chosen token: its id, its probability in the distribution it was drawn from, and
    the top alternatives as (id, probability) pairs, most likely first."""

    token: int
    probability: float
    top: list


class Sampler:
    """Chooses tokens for one generation: owns the seeded random generator and the mirostat
    state (mu), both kept across the tokens of that generation."""

    def __init__(self, settings: SamplerSettings, n_vocab: int, tokenizer=None):
        """`n_vocab` is the tokenizer's size: logits past it are padding and never sampled.
        `tokenizer` turns DRY's sequence breakers into tokens (needed only when DRY is on)."""
        if n_vocab <= 0:
            raise ValueError(f"n_vocab must be positive, got {n_vocab}")
        self.settings = settings
        self.n_vocab = n_vocab
        for token in settings.logit_bias:
            if token >= n_vocab:
                raise SettingsError("logit_bias", f"token id {token} is outside the vocabulary (size {n_vocab})")
        for token in settings.banned_tokens:
            if token >= n_vocab:
                raise SettingsError("banned_tokens", f"token id {token} is outside the vocabulary (size {n_vocab})")
        self.dry_restarts: dict = {}
        if settings.dry_multiplier > 0 and settings.dry_sequence_breakers:
            if tokenizer is None:
                raise ValueError("DRY's sequence breakers need the tokenizer: pass Sampler(..., tokenizer=)")
            self.dry_restarts = restart_sequences(tokenizer, settings.dry_sequence_breakers)
        # A random run still gets a concrete seed, so that it can be reported and repeated.
        self.seed = settings.seed if settings.seed is not None else secrets.randbits(31)
        self.rng = np.random.default_rng(self.seed)
        self.mirostat_mu = 2.0 * settings.mirostat_tau

    def sample(self, logits: np.ndarray, history: Sequence[int] = (), banned=()) -> Sample:
        """Choose the next token from one row of logits; `history` is the token ids so far
        (prompt and generated), newest last, for the repetition penalties and DRY; `banned`
        are ids excluded for this token only (the generator's phrase bans)."""
        s = self.settings
        c = self._initial_candidates(logits, banned)
        c = apply_dry(c, history, s.dry_multiplier, s.dry_base, s.dry_allowed_length, s.dry_penalty_last_n,
                      self.dry_restarts)
        if s.greedy:
            c = self._penalise(c, history)
            top, log_z = c.best(N_ALTERNATIVES), c.log_z()
            return Sample(int(top.ids[0]), float(np.exp(top.logits[0] - log_z)), _alternatives(top, log_z))
        if s.mirostat:
            # KoboldCpp: mirostat replaces the truncation samplers (and XTC); penalties,
            # temperature and smoothing still apply first.
            c = apply_temperature(self._penalise(c, history), s.temperature, s.smoothing_factor, s.smoothing_curve)
            return self._mirostat(c)
        for name in s.order:
            c = self._run(name, c, history)
        c = apply_xtc(c, s.xtc_threshold, s.xtc_probability, self.rng)
        return self._draw(c)

    # -- stages ---------------------------------------------------------------------------

    def _initial_candidates(self, logits: np.ndarray, banned=()) -> Candidates:
        logits = np.asarray(logits)
        if logits.ndim != 1 or len(logits) < self.n_vocab:
            raise ValueError(f"expected one row of at least {self.n_vocab} logits, got shape {logits.shape}")
        x = logits[:self.n_vocab].astype(np.float64)
        for token, bias in self.settings.logit_bias.items():
            x[token] += bias
        if self.settings.banned_tokens:
            x[list(self.settings.banned_tokens)] = -np.inf
        if len(banned):
            x[np.fromiter(banned, dtype=np.int64) if not isinstance(banned, np.ndarray) else banned] = -np.inf
        keep = np.isfinite(x)
        if not keep.any():
            raise SettingsError("banned_tokens", "every token is banned")
        ids = np.flatnonzero(keep) if not keep.all() else np.arange(self.n_vocab)
        return Candidates(ids, x[ids])

    def _penalise(self, c: Candidates, history) -> Candidates:
        s = self.settings
        return apply_repetition_penalty(c, history, s.rep_pen, s.rep_pen_range, s.rep_pen_slope,
                                        s.presence_penalty, s.frequency_penalty)

    def _run(self, name: str, c: Candidates, history) -> Candidates:
        s = self.settings
        if name == "rep_pen":
            return self._penalise(c, history)
        apply, value = {
            "top_k": (apply_top_k, s.top_k), "top_a": (apply_top_a, s.top_a),
            "tfs": (apply_tail_free, s.tfs), "typical": (apply_typical, s.typical),
            "top_p": (apply_top_p, s.top_p), "min_p": (apply_min_p, s.min_p),
            "temperature": (self._temperature, s.temperature),
        }[name]                                 # the order was validated on construction
        return apply(c, value)

    def _temperature(self, c: Candidates, t: float) -> Candidates:
        """The temperature slot: KoboldCpp's dynamic temperature over [t - range, t + range]
        (clamped at 0) when dynatemp_range > 0, else the plain temperature; smoothing after."""
        s = self.settings
        if s.dynatemp_range > 0:
            return apply_dynamic_temperature(c, max(0.0, t - s.dynatemp_range), max(0.0, t + s.dynatemp_range),
                                             s.dynatemp_exponent, s.smoothing_factor, s.smoothing_curve)
        return apply_temperature(c, t, s.smoothing_factor, s.smoothing_curve)

    def _draw(self, c: Candidates) -> Sample:
        """Draw from the softmax of what is left (in its current order: deterministic)."""
        probs = c.probs()
        cum = np.cumsum(probs)
        index = min(int(np.searchsorted(cum, self.rng.random() * cum[-1], side="right")), len(c) - 1)
        return Sample(int(c.ids[index]), float(probs[index]),
                      _alternatives(c.best(N_ALTERNATIVES), c.log_z()))

    def _mirostat(self, c: Candidates) -> Sample:
        s = self.settings
        tau, eta = s.mirostat_tau, s.mirostat_eta
        if s.mirostat == 1:
            log_z = c.log_z()
            top = np.exp(c.best(100).logits - log_z)
            c = c.best(_mirostat_v1_k(top, self.mirostat_mu, self.n_vocab))
        else:
            # Keep the tokens whose surprise (bits) is at most mu; at least the best one.
            keep = -np.log2(np.maximum(c.probs(), np.finfo(np.float64).tiny)) <= self.mirostat_mu
            c = c.where(keep) if keep.any() else c.best(1)
        sample = self._draw(c)
        observed = -math.log2(max(sample.probability, np.finfo(np.float64).tiny))
        self.mirostat_mu -= eta * (observed - tau)
        return sample


def _alternatives(top: Candidates, log_z: float) -> list:
    """(id, probability) pairs of sorted candidates, probabilities normalised by log_z."""
    return [(int(t), float(p)) for t, p in zip(top.ids, np.exp(top.logits - log_z))]


def _mirostat_v1_k(top_probs: np.ndarray, mu: float, n_vocab: int, m: int = 100) -> int:
    """Mirostat 1.0's top-k: estimate the Zipf exponent s from the m most likely tokens'
    probabilities (sorted, most likely first), then choose k so that the expected surprise is
    mu (Basu et al. 2021, as in llama.cpp)."""
    n = min(m - 1, len(top_probs) - 1)
    if n <= 0:
        return 1
    i = np.arange(n, dtype=np.float64)
    t = np.log((i + 2) / (i + 1))
    tiny = np.finfo(np.float64).tiny
    b = np.log(np.maximum(top_probs[:n], tiny) / np.maximum(top_probs[1:n + 1], tiny))
    s_hat = float(np.sum(t * b) / np.sum(t * t))
    eps = s_hat - 1.0
    with np.errstate(all="ignore"):
        k = ((eps * 2.0 ** mu) / (1.0 - n_vocab ** (-eps))) ** (1.0 / s_hat)
    if not math.isfinite(k):
        return n_vocab
    return int(max(1, min(k, n_vocab)))
