"""The samplers on hand-made logits whose expected results are worked out here by hand."""
import dataclasses
import math

import numpy as np
import pytest

from engine.errors import SettingsError
from engine.sampling import (
    PRESETS, Candidates, Sampler, SamplerSettings, _mirostat_v1_k, apply_dry, apply_dynamic_temperature,
    apply_min_p, apply_repetition_penalty, apply_smoothing, apply_tail_free, apply_temperature, apply_top_a,
    apply_top_k, apply_top_p, apply_typical, apply_xtc, restart_sequences,
)
from toymodel import BytesTokenizer


def cands(probs_or_logits, log=False):
    x = np.log(np.asarray(probs_or_logits, dtype=np.float64)) if log else np.asarray(probs_or_logits, dtype=np.float64)
    return Candidates(np.arange(len(x)), x)


def kept(c):
    return sorted(int(i) for i in c.ids)


# -- truncation samplers --------------------------------------------------------------------


def test_top_k_keeps_highest_and_breaks_ties_by_lower_id():
    c = cands([1.0, 3.0, 2.0, 3.0, 0.0])
    assert kept(apply_top_k(c, 2)) == [1, 3]
    assert kept(apply_top_k(c, 1)) == [1]
    assert kept(apply_top_k(c, 3)) == [1, 2, 3]
    assert kept(apply_top_k(c, 0)) == [0, 1, 2, 3, 4]          # 0 disables


def test_top_k_selection_path_on_long_list_matches_sorting():
    # Long enough to take the partition path; the boundary value 5.0 is shared by ids 3, 7, 11.
    x = np.zeros(40)
    x[[20, 30]] = 9.0
    x[[11, 3, 7]] = 5.0
    c = Candidates(np.arange(40), x)
    out = apply_top_k(c, 4)
    assert list(out.ids) == [20, 30, 3, 7]                      # sorted, lower ids win the tie


def test_top_p_smallest_head_reaching_p():
    c = cands([0.5, 0.3, 0.15, 0.05], log=True)
    assert kept(apply_top_p(c, 0.75)) == [0, 1]                # 0.5 < 0.75 <= 0.8
    assert kept(apply_top_p(c, 0.85)) == [0, 1, 2]             # 0.8 < 0.85 <= 0.95
    assert kept(apply_top_p(c, 0.0)) == [0]
    assert kept(apply_top_p(c, 1.0)) == [0, 1, 2, 3]


def test_top_p_nucleus_larger_than_the_first_head():
    # A nucleus of 850 of 3000 tokens: more than the first partial sort (256) looks at.
    rng = np.random.default_rng(1)
    x = rng.permutation(np.linspace(0.0, 2.0, 3000))
    weights = sorted((math.exp(v) for v in x), reverse=True)
    total, cum, need = sum(weights), 0.0, 0
    while cum < 0.5 * total:
        cum += weights[need]
        need += 1
    out = apply_top_p(Candidates(np.arange(3000), x), 0.5)
    assert len(out) == need and need > 256
    assert set(out.ids) == set(np.argsort(-x)[:need])


def test_min_p_relative_to_top_token():
    c = cands([0.5, 0.3, 0.15, 0.05], log=True)
    assert kept(apply_min_p(c, 0.25)) == [0, 1, 2]             # threshold 0.125
    assert kept(apply_min_p(c, 0.7)) == [0]                    # threshold 0.35


def test_top_a_threshold_is_a_times_pmax_squared():
    c = cands([0.5, 0.3, 0.15, 0.05], log=True)
    assert kept(apply_top_a(c, 0.5)) == [0, 1, 2]              # 0.5 * 0.25 = 0.125
    assert kept(apply_top_a(c, 1.0)) == [0, 1]                 # 0.25
    assert kept(apply_top_a(c, 0.0)) == [0, 1, 2, 3]


def test_tail_free_cuts_on_accumulated_second_derivative():
    # p = .4 .3 .2 .06 .04: first differences .1 .1 .14 .02, second 0 -.04 .12,
    # |.| normalised = 0, .25, .75, cumulative 0, .25, 1.0.
    c = cands([0.4, 0.3, 0.2, 0.06, 0.04], log=True)
    assert kept(apply_tail_free(c, 0.2)) == [0]                # cum[1] = .25 > .2 -> keep 1
    assert kept(apply_tail_free(c, 0.5)) == [0, 1]             # cum[2] = 1 > .5 -> keep 2
    assert kept(apply_tail_free(c, 1.0)) == [0, 1, 2, 3, 4]


def test_typical_keeps_tokens_closest_to_the_entropy():
    p = [0.5, 0.3, 0.2]
    entropy = -sum(q * math.log(q) for q in p)                 # 1.0297
    distance = [abs(-math.log(q) - entropy) for q in p]        # .336 .174 .580
    assert sorted(range(3), key=distance.__getitem__) == [1, 0, 2]
    c = cands(p, log=True)
    assert kept(apply_typical(c, 0.2)) == [1]                  # 0.3 > 0.2
    assert kept(apply_typical(c, 0.5)) == [0, 1]               # 0.3 + 0.5 > 0.5
    assert kept(apply_typical(c, 1.0)) == [0, 1, 2]


def test_temperature_divides_logits():
    c = apply_temperature(cands([2.0, 1.0, 0.0]), 0.5)
    np.testing.assert_allclose(c.logits, [4.0, 2.0, 0.0])
    e = [math.exp(4), math.exp(2), 1.0]
    np.testing.assert_allclose(c.probs(), [v / sum(e) for v in e])


# -- penalties ------------------------------------------------------------------------------


def test_repetition_penalty_halves_and_slope():
    # Window of 4: the older half (5, 1) gets 1 + (2 - 1) * 0.5 = 1.5, the newer half (2, 3)
    # gets 2. Positive logits are divided, negative ones multiplied; presence is subtracted
    # from every penalised token.
    c = cands([1.0, 3.0, -2.0, 4.0, 1.0, 6.0])
    out = apply_repetition_penalty(c, [0, 5, 1, 2, 3], penalty=2.0, range_=4, slope=0.5, presence=0.5)
    np.testing.assert_allclose(out.logits, [1.0, 3 / 1.5 - 0.5, -4.0 - 0.5, 2.0 - 0.5, 1.0, 6 / 1.5 - 0.5])


def test_repetition_penalty_odd_window_and_near_wins():
    # Window of 3: only the newest token (index 2, 2*2 >= 3) is near; 1 is in both halves.
    c = cands([0.0, 3.0, 3.0, 3.0])
    out = apply_repetition_penalty(c, [1, 2, 1], penalty=3.0, range_=10, slope=0.0)
    np.testing.assert_allclose(out.logits, [0.0, 1.0, 3.0, 3.0])   # slope 0: far tokens untouched


def test_repetition_penalty_range_zero_and_neutral():
    c = cands([1.0, 2.0])
    assert apply_repetition_penalty(c, [1], 2.0, 0, 1.0) is c
    assert apply_repetition_penalty(c, [1], 1.0, 10, 1.0) is c


def test_frequency_penalty_counts_occurrences():
    c = cands([1.0, 1.0, 1.0, 1.0])
    out = apply_repetition_penalty(c, [3, 3, 1, 3], penalty=1.0, range_=320, slope=1.0, frequency=0.25)
    np.testing.assert_allclose(out.logits, [1.0, 0.75, 1.0, 0.25])


# -- the Sampler ----------------------------------------------------------------------------


def greedy(**kw):
    return SamplerSettings.from_preset("Deterministic", **kw)


def test_greedy_never_samples_padding_ids():
    logits = np.array([0.0, 1.0, 2.0, 50.0, 60.0], dtype=np.float32)   # ids 3, 4 are padding
    s = Sampler(greedy(), n_vocab=3).sample(logits)
    assert s.token == 2
    assert all(t < 3 for t, _ in s.top)
    e = [1.0, math.e, math.e ** 2]
    assert s.probability == pytest.approx(e[2] / sum(e))


def test_sampling_never_samples_padding_ids():
    logits = np.array([0.0, 0.0, 30.0, 30.0], dtype=np.float32)
    sampler = Sampler(SamplerSettings.from_preset("ggml example", seed=1), n_vocab=2)
    assert {sampler.sample(logits).token for _ in range(200)} == {0, 1}


def test_banned_tokens_and_logit_bias():
    logits = np.array([5.0, 4.0, 3.0, 0.0])
    assert Sampler(greedy(banned_tokens=[0]), 4).sample(logits).token == 1
    assert Sampler(greedy(logit_bias={"3": 10.0}), 4).sample(logits).token == 3
    assert Sampler(greedy(logit_bias={0: -math.inf}), 4).sample(logits).token == 1
    with pytest.raises(SettingsError, match="banned_tokens"):
        Sampler(greedy(banned_tokens=[0, 1, 2, 3]), 4).sample(logits)
    with pytest.raises(SettingsError, match="logit_bias"):
        Sampler(greedy(logit_bias={9: 1.0}), 4)


def test_greedy_applies_the_repetition_penalty():
    logits = np.array([2.0, 1.9, 0.0])
    assert Sampler(greedy(), 3).sample(logits, history=[0]).token == 0
    assert Sampler(greedy(rep_pen=1.1), 3).sample(logits, history=[0]).token == 1   # 2 / 1.1 < 1.9


def test_top_alternatives_are_the_final_distribution():
    probs = [0.5, 0.3, 0.15, 0.05]
    settings = SamplerSettings.from_preset("Deterministic", temperature=1.0, top_p=0.75, seed=3)
    s = Sampler(settings, 4).sample(np.log(probs))
    assert [t for t, _ in s.top] == [0, 1]
    assert [p for _, p in s.top] == pytest.approx([0.5 / 0.8, 0.3 / 0.8])
    assert s.probability == pytest.approx(dict(s.top)[s.token])


def test_at_most_ten_alternatives_most_likely_first():
    logits = np.linspace(3.0, 0.0, 30)
    s = Sampler(SamplerSettings(top_k=0, top_p=1.0, seed=0), 30).sample(logits)
    assert len(s.top) == 10
    assert [t for t, _ in s.top] == list(range(10))
    assert all(a[1] >= b[1] for a, b in zip(s.top, s.top[1:]))


def test_sampler_order_changes_the_result():
    # top_p 0.6 on (.5 .3 .2) keeps two tokens; at temperature 0.1 first, the top token alone
    # has p = 1 / (1 + (3/5)^10 + (2/5)^10) > 0.6.
    probs = np.log([0.5, 0.3, 0.2])
    base = dict(temperature=0.1, top_p=0.6, top_k=0, rep_pen=1.0, seed=0)
    late = Sampler(SamplerSettings(**base), 3).sample(probs)
    early = Sampler(SamplerSettings(**base, order=("temperature", "top_k", "top_a", "tfs", "typical", "top_p")), 3).sample(probs)
    assert len(late.top) == 2
    assert len(early.top) == 1


def test_draws_follow_the_distribution():
    sampler = Sampler(SamplerSettings.from_preset("Deterministic", temperature=1.0, seed=1234), 3)
    draws = [sampler.sample(np.log([0.5, 0.3, 0.2])).token for _ in range(4000)]
    freq = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2], atol=0.03)


def test_seed_reproduces_a_run():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(30, 500))

    def run(seed):
        sampler = Sampler(SamplerSettings(seed=seed, temperature=1.0), 500)
        history = []
        for row in rows:
            history.append(sampler.sample(row, history).token)
        return history

    assert run(42) == run(42)
    assert run(42) != run(43)
    random = Sampler(SamplerSettings(seed=-1), 500)
    assert isinstance(random.seed, int)                         # reportable, to repeat the run


def test_mirostat_v2_truncates_by_surprise_and_updates_mu():
    # Surprises are 1, 2, 3, 3 bits. tau 1 -> mu starts at 2: keep the first two (2/3, 1/3).
    probs = np.log([0.5, 0.25, 0.125, 0.125])
    settings = SamplerSettings.from_preset("Deterministic", temperature=1.0, mirostat=2, mirostat_tau=1.0,
                                           mirostat_eta=0.1, seed=5)
    sampler = Sampler(settings, 4)
    s = sampler.sample(probs)
    assert [t for t, _ in s.top] == [0, 1]
    assert [p for _, p in s.top] == pytest.approx([2 / 3, 1 / 3])
    expected_mu = 2.0 - 0.1 * (-math.log2(s.probability) - 1.0)
    assert sampler.mirostat_mu == pytest.approx(expected_mu)
    # The state carries over: the next token uses the updated mu.
    sampler.sample(probs)
    assert sampler.mirostat_mu != pytest.approx(expected_mu)


def test_mirostat_v1_k_from_a_zipf_distribution():
    # For an exact Zipf law p_i ~ 1/(i+1)^s the estimate of s is exact, so
    # k = (eps * 2^mu / (1 - N^-eps))^(1/s) with eps = s - 1.
    s, n_vocab, mu = 1.2, 1000, 6.0
    p = 1.0 / np.arange(1, n_vocab + 1) ** s
    p /= p.sum()
    eps = s - 1
    expected = (eps * 2 ** mu / (1 - n_vocab ** -eps)) ** (1 / s)
    assert _mirostat_v1_k(p, mu, n_vocab) == int(expected)


def test_mirostat_v1_runs_through_the_sampler():
    p = 1.0 / np.arange(1, 201) ** 1.2
    settings = SamplerSettings.from_preset("Deterministic", temperature=1.0, mirostat=1, seed=0)
    sampler = Sampler(settings, 200)
    before = sampler.mirostat_mu
    s = sampler.sample(np.log(p))
    assert sampler.mirostat_mu == pytest.approx(before - 0.1 * (-math.log2(s.probability) - 5.0))


# -- settings validation and presets -------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("temperature", -0.1), ("top_p", 1.5), ("top_p", -0.1), ("top_k", -1), ("top_k", 2.5),
    ("min_p", 2.0), ("tfs", 1.5), ("typical", -1.0), ("rep_pen", 0.0), ("rep_pen_range", -5),
    ("rep_pen_slope", -0.5), ("mirostat", 3), ("mirostat_tau", -1.0), ("temperature", float("nan")),
    ("seed", -7), ("logit_bias", {"x": 1.0}), ("logit_bias", {1: math.inf}), ("banned_tokens", [-1]),
    ("dry_multiplier", -0.5), ("dry_base", -1.0), ("dry_allowed_length", 1.5), ("dry_penalty_last_n", -2),
    ("dry_sequence_breakers", "not json"), ("dry_sequence_breakers", [1, 2]), ("dry_sequence_breakers", [f"x{i}" for i in range(33)]),
    ("xtc_threshold", 1.5), ("xtc_probability", -0.1), ("dynatemp_range", -1.0), ("dynatemp_exponent", -1.0),
    ("smoothing_factor", -0.1), ("smoothing_curve", 0.5), ("smoothing_curve", 10.5),
    ("banned_phrases", "a phrase"), ("banned_phrases", [f"p{i}" for i in range(49)]),
])
def test_invalid_settings_name_the_setting(field, value):
    with pytest.raises(SettingsError) as err:
        SamplerSettings(**{field: value})
    assert err.value.setting == field
    assert str(err.value).startswith(field)


def test_unknown_sampler_in_order():
    with pytest.raises(SettingsError, match=r"^order: unknown sampler 'bogus'"):
        SamplerSettings(order=("top_k", "bogus"))
    with pytest.raises(SettingsError, match="order"):
        SamplerSettings(order=("top_k", "top_k"))
    with pytest.raises(SettingsError, match="lacks"):
        SamplerSettings(order=("top_k", "top_p"))


def test_order_accepts_koboldcpp_ids_and_fills_in_rep_pen_and_min_p():
    s = SamplerSettings(order=[0, 1, 3, 4, 2, 5])
    assert s.order == ("rep_pen", "top_k", "top_a", "tfs", "typical", "top_p", "min_p", "temperature")


def test_replace_validates_again():
    with pytest.raises(SettingsError, match="temperature"):
        dataclasses.replace(SamplerSettings(), temperature=-1)


def test_presets():
    with pytest.raises(SettingsError) as err:
        SamplerSettings.from_preset("Nope")
    assert err.value.setting == "preset"
    k = SamplerSettings.from_preset("KoboldCpp default")
    assert (k.temperature, k.top_k, k.top_p, k.rep_pen, k.rep_pen_range) == (0.7, 100, 0.92, 1.1, 320)
    assert k.order[:2] == ("rep_pen", "top_k") and k.order[-1] == "temperature"
    assert k == SamplerSettings()                              # the defaults are this preset
    g = SamplerSettings.from_preset("ggml example")
    assert (g.temperature, g.top_k, g.top_p, g.rep_pen) == (0.9, 40, 0.9, 1.0)
    assert SamplerSettings.from_preset("Deterministic").greedy
    assert SamplerSettings.from_preset("ggml example", temperature=0.2).temperature == 0.2
    creative = SamplerSettings.from_preset("Creative (DRY + XTC)")
    assert (creative.dry_multiplier, creative.xtc_probability, creative.top_k, creative.rep_pen) == (0.8, 0.5, 0, 1.0)
    assert creative.dry_sequence_breakers == ("\n", ":", "\"", "*")
    assert SamplerSettings.from_preset("Smooth").smoothing_factor == 0.25
    assert set(PRESETS) == {"KoboldCpp default", "ggml example", "Deterministic", "Creative (DRY + XTC)", "Smooth"}


# -- KoboldCpp's newer samplers: DRY, XTC, dynamic temperature, smoothing ---------------------

# KoboldCpp's own worked example (gpttype_adapter.cpp, sample_dry):
#   last tokens  a b c c b c y a b c
#   repeats      0 0 3 1 0 2 0 0 0 0
# a=1 b=2 c=3 y=4; the token after each repeat would extend it: c (after "a b c", 3 long),
# b (after "c", 1 long), y (after "b c", 2 long).
DRY_HISTORY = [1, 2, 3, 3, 2, 3, 4, 1, 2, 3]


def dry_penalties(history, allowed, restarts=None, last_n=0, multiplier=0.8, base=1.75):
    c = apply_dry(cands(np.zeros(6)), history, multiplier, base, allowed, last_n, restarts)
    return {int(t): round(-float(x), 6) for t, x in zip(c.ids, c.logits) if x != 0}


def test_dry_penalises_the_tokens_that_extend_a_repetition():
    # allowed length 2: c extends a repeat of 3 -> 0.8 * 1.75^(3-2); y one of 2 -> 0.8 * 1.75^0
    assert dry_penalties(DRY_HISTORY, 2) == {3: 1.4, 4: 0.8}
    # allowed length 1: b's repeat of 1 counts too, and every exponent grows by one
    assert dry_penalties(DRY_HISTORY, 1) == {2: 0.8, 3: 2.45, 4: 1.4}
    assert dry_penalties(DRY_HISTORY, 4) == {}                          # nothing that long
    assert dry_penalties(DRY_HISTORY, 2, multiplier=0) == {}            # multiplier 0 disables
    assert dry_penalties(DRY_HISTORY, 2, last_n=4) == {}                # "y a b c": no repeat inside


def test_dry_repetitions_stop_at_sequence_breakers():
    # b is a breaker: the repetition may only reach back to after the newest b, 1 token
    assert dry_penalties(DRY_HISTORY, 2, {2: [()]}) == {}
    # "a b" as a two-token breaker (head a, tail b) at the end: 1 token left to repeat
    assert dry_penalties(DRY_HISTORY, 2, {1: [(2,)]}) == {}
    # y as a breaker, 3 tokens from the end: repeats are capped at 3, which changes nothing here
    assert dry_penalties(DRY_HISTORY, 2, {4: [()]}) == {3: 1.4, 4: 0.8}
    # "y x a b c y x a b c" (x=5): y would extend a repeat of 5 -> 0.8 * 1.75^3; with y as a
    # breaker, the repeat may not reach back across the newest y: 4 long -> 0.8 * 1.75^2
    history = [4, 5, 1, 2, 3, 4, 5, 1, 2, 3]
    assert dry_penalties(history, 2) == {4: 4.2875}
    assert dry_penalties(history, 2, {4: [()]}) == {4: 2.45}


def test_dry_exponent_is_clamped_below_overflow():
    history = [5] * 300                       # a 298-token repeat: 1.75^296 overflows float32
    penalty = dry_penalties(history, 2, base=1.75)[5]
    assert math.isfinite(penalty) and penalty == pytest.approx(0.8 * 1.75 ** int(88.7228391 / math.log(1.75)))


def test_restart_sequences_are_the_tokens_overlapping_a_breaker():
    tok = BytesTokenizer(["", ":", "a:", "b", "\n", "x\n", "ab", "\n\n", "c", "*"])
    assert restart_sequences(tok, [":"]) == {1: [()], 2: [()]}            # tokens containing ":"
    # "b\n": no token contains it; "b" and "ab" end with its start "b" and need the tail "\n"
    assert restart_sequences(tok, ["b\n"]) == {3: [(4,)], 6: [(4,)]}
    assert restart_sequences(tok, ["\n", ":"]) == {1: [()], 2: [()], 4: [()], 5: [()], 7: [()]}


def test_dry_through_the_sampler_with_its_breakers():
    tok = BytesTokenizer(["", "a", "b", "c", "y", "\n"])
    logits = np.zeros(6)
    s = SamplerSettings(temperature=0, dry_multiplier=0.8, dry_base=1.75, dry_allowed_length=2,
                        dry_penalty_last_n=0, dry_sequence_breakers=["\n"])
    # greedy: c (repeat of 3) and y are penalised; ids 0, 1, 2, 5 keep logit 0, the lowest id wins
    assert Sampler(s, 6, tok).sample(logits, DRY_HISTORY).token == 0
    top = dict(Sampler(s, 6, tok).sample(logits, DRY_HISTORY).top)
    assert top[3] < top[4] < top[1]
    # a new line just before the end stops every repetition
    top = dict(Sampler(s, 6, tok).sample(logits, DRY_HISTORY[:-1] + [5, 3]).top)
    assert top[3] == top[4] == top[1]
    with pytest.raises(ValueError, match="tokenizer"):
        Sampler(s, 6)


class Roll:
    """A stand-in for the random generator: random() returns the given values in turn."""

    def __init__(self, *values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


def test_xtc_removes_the_top_choices_but_the_least_likely_of_them():
    c = cands([0.4, 0.3, 0.2, 0.1], log=True)
    assert kept(apply_xtc(c, 0.2, 1.0, Roll(0.0))) == [2, 3]            # 0.4 and 0.3 go, 0.2 stays
    assert kept(apply_xtc(c, 0.29, 1.0, Roll(0.0))) == [1, 2, 3]
    assert kept(apply_xtc(c, 0.35, 1.0, Roll(0.0))) == [0, 1, 2, 3]     # one above: nothing to do
    assert kept(apply_xtc(c, 0.6, 1.0, Roll())) == [0, 1, 2, 3]         # > 0.5: off, no draw
    assert kept(apply_xtc(c, 0.2, 0.0, Roll())) == [0, 1, 2, 3]         # probability 0: no draw
    assert kept(apply_xtc(c, 0.2, 0.5, Roll(0.7))) == [0, 1, 2, 3]      # the draw says no
    assert kept(apply_xtc(c, 0.2, 0.5, Roll(0.3))) == [2, 3]


def test_xtc_in_the_sampler_never_draws_the_top_choices():
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.1]))
    s = SamplerSettings(temperature=1.0, top_k=0, top_p=1.0, rep_pen=1.0, xtc_threshold=0.2, xtc_probability=1.0)
    sampler = Sampler(dataclasses.replace(s, seed=3), 4)
    drawn = {sampler.sample(logits).token for _ in range(200)}
    assert drawn == {2, 3}
    sampler = Sampler(dataclasses.replace(s, xtc_probability=0.5, seed=3), 4)
    drawn = [sampler.sample(logits).token for _ in range(400)]
    assert 0.15 < drawn.count(0) / 400 < 0.25          # half the draws skip XTC: 0.5 * 0.4


def test_dynamic_temperature_follows_the_entropy():
    c = cands([0.5, 0.25, 0.25], log=True)
    # H = 1.5 ln 2 = 1.03972, H_max = ln 3 = 1.09861: normalised 0.94639
    t = 0.5 + (1.5 - 0.5) * 0.946394
    out = apply_dynamic_temperature(c, 0.5, 1.5, 1.0)
    np.testing.assert_allclose(out.logits, c.logits / t, rtol=1e-5)
    out = apply_dynamic_temperature(c, 0.5, 1.5, 2.0)                 # exponent 2: 0.5 + 0.94639^2
    np.testing.assert_allclose(out.logits, c.logits / (0.5 + 0.946394 ** 2), rtol=1e-5)
    flat = cands([0.25] * 4, log=True)                                 # maximal entropy: the high end
    np.testing.assert_allclose(apply_dynamic_temperature(flat, 0.2, 2.0, 1.0).logits, flat.logits / 2.0)
    assert kept(apply_dynamic_temperature(cands([1.0, 0.0]), 0.0, 0.0, 1.0)) == [0]   # temperature 0: greedy
    one = cands([3.0])
    assert apply_dynamic_temperature(one, 0.5, 1.5, 1.0) is one


def test_dynamic_temperature_in_the_temperature_slot():
    logits = np.log(np.array([0.5, 0.25, 0.25]))
    s = SamplerSettings(temperature=1.0, dynatemp_range=0.5, top_k=0, top_p=1.0, rep_pen=1.0, seed=1)
    top = dict(Sampler(s, 3).sample(logits).top)
    e = np.exp(logits / (0.5 + 0.946394))
    assert top[0] == pytest.approx(e[0] / e.sum(), rel=1e-5)
    # temperature 0 with a range is not greedy: the range is [0, 0.5]
    assert not SamplerSettings(temperature=0, dynatemp_range=0.5).greedy


def test_smoothing_is_quadratic_around_the_top_logit():
    c = cands([2.0, 1.0, 0.0])
    np.testing.assert_allclose(apply_smoothing(c, 0.5).logits, [2.0, 1.5, 0.0])          # 2 - 0.5 d^2
    np.testing.assert_allclose(apply_smoothing(c, 0.5, curve=3.0).logits, [2.0, 1.5, -2.0])   # 2 + 0.5 d^3
    np.testing.assert_allclose(apply_smoothing(c, 0.5, curve=2.0).logits, [2.0, 1.5, -1.0])
    # SillyTavern's slider goes to 10: text-generation-webui's formula, k = -3.5, s = 4.5 (d = -1, -2)
    np.testing.assert_allclose(apply_smoothing(c, 0.5, curve=10.0).logits, [2.0, 2.0 + 1.75 - 2.25, 2.0 + 7.0 - 18.0])
    assert apply_smoothing(c, 0.0) is c
    # after the temperature, as KoboldCpp's sample_temperature: [4, 2, 0] / 2 -> [2, 1, 0] -> smoothed
    np.testing.assert_allclose(apply_temperature(cands([4.0, 2.0, 0.0]), 2.0, 0.5).logits, [2.0, 1.5, 0.0])


def test_new_settings_round_trip_and_accept_sillytaverns_json_breakers():
    s = SamplerSettings(dry_multiplier=0.8, dry_sequence_breakers='["\\n", ":", "", ":"]', xtc_probability=0.5,
                        dynatemp_range=0.3, smoothing_factor=0.2, banned_phrases=["a phrase", "", "another"])
    assert s.dry_sequence_breakers == ("\n", ":")                    # empty and repeated ones dropped
    assert s.banned_phrases == ("a phrase", "another")
    assert SamplerSettings(**s.to_dict()) == s
