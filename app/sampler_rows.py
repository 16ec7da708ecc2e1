"""The sampler settings the app offers, with their ranges: the sampling panel's rows.

No Qt here: the sampling panel builds a slider and a spin box from each row, and the API server
refuses a request whose sampler field lies outside the row's range (a client cannot ask for
what the panel could not set, such as a temperature of 1e9).
"""
from __future__ import annotations

from dataclasses import dataclass

MAX_SEED = 2**31 - 1             # the panel's seed box (a Qt spin box holds a C int)

# The ranges are those of the clients people point at this server, so that nothing they can set
# is refused (SillyTavern 1.12: temperature to 5, repetition penalty to 3, its range to 65536 or
# "all", slope to 10, mirostat tau to 20, dynamic temperature to 5 with exponent to 10, smoothing
# curve to 10), while
# absurd values still are (a temperature of 1e9). Penalty windows longer than the context are
# simply the whole context.
MAX_TOKEN_RANGE = 65536


@dataclass(frozen=True)
class SamplerRow:
    """One slider + spin box row: the setting's name, label, range, and slider steps per unit."""
    name: str
    label: str
    minimum: float
    maximum: float
    scale: int          # slider steps per unit (1 for integer settings)
    tip: str
    object_name: str

    @property
    def is_int(self) -> bool:
        return self.scale == 1


SAMPLER_ROWS = (
    SamplerRow("temperature", "Temperature", 0.0, 5.0, 100, "0 = always the most likely token", "temperatureSlider"),
    SamplerRow("top_k", "Top-k", 0, 200, 1, "keep the k most likely tokens (0 = off)", "topKSlider"),
    SamplerRow("top_p", "Top-p", 0.0, 1.0, 100, "keep the smallest set with this much probability (1 = off)", "topPSlider"),
    SamplerRow("min_p", "Min-p", 0.0, 1.0, 100, "drop tokens less likely than this times the best (0 = off)", "minPSlider"),
    SamplerRow("typical", "Typical", 0.0, 1.0, 100, "locally typical sampling (1 = off)", "typicalSlider"),
    SamplerRow("tfs", "Tail-free", 0.0, 1.0, 100, "tail-free sampling z (1 = off)", "tailFreeSlider"),
    SamplerRow("top_a", "Top-a", 0.0, 1.0, 100, "drop tokens below a * p_max^2 (0 = off)", "topASlider"),
    SamplerRow("rep_pen", "Repetition penalty", 1.0, 3.0, 100, "penalize recently used tokens (1 = off)", "repetitionPenaltySlider"),
    SamplerRow("rep_pen_range", "Rep. penalty range", 0, MAX_TOKEN_RANGE, 1, "how many recent tokens are penalized", "repetitionRangeSlider"),
    SamplerRow("rep_pen_slope", "Rep. penalty slope", 0.0, 10.0, 100, "share of the penalty the older half gets (1 = the same, 0 = none)", "repetitionSlopeSlider"),
    SamplerRow("mirostat", "Mirostat mode", 0, 2, 1, "0 = off, 1 = Mirostat, 2 = Mirostat 2.0", "mirostatSlider"),
    SamplerRow("mirostat_tau", "Mirostat tau", 0.0, 20.0, 100, "target surprise", "mirostatTauSlider"),
    SamplerRow("mirostat_eta", "Mirostat eta", 0.0, 1.0, 100, "learning rate", "mirostatEtaSlider"),
    SamplerRow("dry_multiplier", "DRY multiplier", 0.0, 5.0, 100,
               "penalize tokens that would continue a repetition (0 = off; 0.8 is a common choice)", "dryMultiplierSlider"),
    SamplerRow("dry_base", "DRY base", 1.0, 4.0, 100, "how fast the penalty grows with the repetition's length",
               "dryBaseSlider"),
    SamplerRow("dry_allowed_length", "DRY allowed length", 0, 20, 1, "repetitions this long go unpenalized",
               "dryAllowedLengthSlider"),
    SamplerRow("dry_penalty_last_n", "DRY range", 0, MAX_TOKEN_RANGE, 1, "how many recent tokens are searched (0 = all)",
               "dryRangeSlider"),
    SamplerRow("xtc_threshold", "XTC threshold", 0.0, 0.5, 100,
               "tokens at least this likely are excluded, all but the least likely of them", "xtcThresholdSlider"),
    SamplerRow("xtc_probability", "XTC probability", 0.0, 1.0, 100, "how often XTC applies (0 = off)",
               "xtcProbabilitySlider"),
    SamplerRow("dynatemp_range", "Dyn. temp. range", 0.0, 5.0, 100,
               "temperature varies by ± this with the model's certainty (0 = off)", "dynatempRangeSlider"),
    SamplerRow("dynatemp_exponent", "Dyn. temp. exponent", 0.0, 10.0, 100, "shape of the dynamic temperature curve",
               "dynatempExponentSlider"),
    SamplerRow("smoothing_factor", "Smoothing factor", 0.0, 10.0, 100,
               "quadratic sampling: raise likely tokens, cut the tail (0 = off)", "smoothingFactorSlider"),
    SamplerRow("smoothing_curve", "Smoothing curve", 1.0, 10.0, 100, "1 = quadratic; higher = steeper tail cut",
               "smoothingCurveSlider"),
)


SAMPLER_RANGES = {row.name: (row.minimum, row.maximum) for row in SAMPLER_ROWS}
