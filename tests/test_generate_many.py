"""Generator.generate_many: n continuations of one prompt, one pass over the weights per token.

Tested on a converted fixture model with both backends: events tagged by sequence, sequence i
repeated exactly by a single generation with seed s + i (plain sampling, repetition penalty,
mirostat), independent ends, cancel within one pass, and prefix reuse of a sequence afterwards.
"""
from __future__ import annotations

import dataclasses
import json
import threading

import pytest

from engine.errors import SettingsError
from engine.generator import DoneEvent, Generator, TokenEvent, common_prefix_length
from engine.model import load_model
from engine.sampling import SamplerSettings
from engine.tokenizer import load_tokenizer
from modelgen import TINY_FIXTURE as FIXTURE, converted_tiny_model

PROMPT = "Once upon a time"
GREEDY = SamplerSettings.from_preset("Deterministic")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return converted_tiny_model(tmp_path_factory.mktemp("many"))


@pytest.fixture(scope="module", params=["fast", "reference"])
def model(request, model_path):
    return load_model(model_path, backend=request.param)


@pytest.fixture(scope="module")
def tokenizer(model):
    return load_tokenizer(model.vocab, str(FIXTURE / "tokenizer.json"))


def by_sequence(events, n):
    """{index: (its TokenEvents, its DoneEvent)}, checking that nothing follows a sequence's DoneEvent."""
    out = {i: ([], None) for i in range(n)}
    for e in events:
        tokens, done = out[e.index]
        assert done is None, f"an event of sequence {e.index} after its DoneEvent"
        if isinstance(e, DoneEvent):
            out[e.index] = (tokens, e)
        else:
            assert isinstance(e, TokenEvent)
            tokens.append(e)
    assert all(done is not None for _, done in out.values())
    return out


def single(model, tokenizer, settings, **kw):
    events = list(Generator(model, tokenizer).generate(PROMPT, settings, **kw))
    return events[:-1], events[-1]


@pytest.mark.parametrize("settings", [
    SamplerSettings(seed=1234, temperature=1.0, top_k=0, top_p=1.0, rep_pen=1.0),
    SamplerSettings(seed=77, temperature=0.9, rep_pen=1.3, rep_pen_range=16),
    SamplerSettings(seed=5, temperature=1.0, mirostat=2, mirostat_tau=3.0),
], ids=["plain", "rep_pen", "mirostat"])
def test_sequence_i_is_the_single_generation_with_seed_s_plus_i(model, tokenizer, settings):
    n = 4
    seqs = by_sequence(Generator(model, tokenizer).generate_many(PROMPT, n, settings, max_tokens=24), n)
    texts = set()
    for i, (tokens, done) in seqs.items():
        assert done.seed == settings.seed + i
        alone_tokens, alone = single(model, tokenizer, dataclasses.replace(settings, seed=done.seed), max_tokens=24)
        assert [e.token for e in tokens] == [e.token for e in alone_tokens]
        assert [e.text for e in tokens] == [e.text for e in alone_tokens]
        assert done.text == alone.text == "".join(e.text for e in tokens)
        assert (done.stop_reason, done.gen_tokens, done.prompt_tokens) == (alone.stop_reason, alone.gen_tokens,
                                                                           alone.prompt_tokens)
        texts.add(done.text)
    assert len(texts) > 1                        # different seeds, different continuations


def test_random_seed_is_reported_per_sequence(model, tokenizer):
    settings = SamplerSettings(temperature=1.0)
    seqs = by_sequence(Generator(model, tokenizer).generate_many(PROMPT, 3, settings, max_tokens=4), 3)
    seeds = [seqs[i][1].seed for i in range(3)]
    assert seeds == [seeds[0], seeds[0] + 1, seeds[0] + 2]


def test_events_are_interleaved_per_pass(model, tokenizer):
    events = list(Generator(model, tokenizer).generate_many(PROMPT, 3, GREEDY, max_tokens=5))
    assert [e.index for e in events[:6]] == [0, 1, 2, 0, 1, 2]
    assert all(isinstance(e, TokenEvent) for e in events[:-6])
    # the last pass: each sequence's last token, then its DoneEvent
    assert [(type(e).__name__, e.index) for e in events[-6:]] == [
        ("TokenEvent", 0), ("DoneEvent", 0), ("TokenEvent", 1), ("DoneEvent", 1), ("TokenEvent", 2), ("DoneEvent", 2)]
    seqs = by_sequence(events, 3)
    # greedy: every sequence is the single greedy generation
    _, alone = single(model, tokenizer, GREEDY, max_tokens=5)
    assert all(done.text == alone.text and done.stop_reason == "length" for _, done in seqs.values())


def test_sequences_end_independently(model, tokenizer):
    settings = SamplerSettings(seed=42, temperature=1.0, rep_pen=1.0, banned_tokens=(tokenizer.eos_id,))
    free = by_sequence(Generator(model, tokenizer).generate_many(PROMPT, 3, settings, max_tokens=20), 3)
    texts = [free[i][1].text for i in range(3)]
    # a stop string in sequence 0's text that the others do not contain
    stop = next(texts[0][a:a + 2] for a in range(1, len(texts[0]) - 2)
                if texts[0][a:a + 2].strip() and all(texts[0][a:a + 2] not in t for t in texts[1:]))
    stopped = by_sequence(Generator(model, tokenizer).generate_many(PROMPT, 3, settings, max_tokens=20,
                                                                     stop=[stop]), 3)
    first = stopped[0][1]
    assert first.stop_reason == "stop_sequence" and first.stop_sequence == stop
    assert first.text == texts[0][:texts[0].index(stop)] and first.gen_tokens < 20
    for i in (1, 2):                             # the others went on, in a smaller batch, as before
        was, now = free[i][1], stopped[i][1]
        assert (now.stop_reason, now.text, now.gen_tokens) == (was.stop_reason, was.text, was.gen_tokens)
        assert now.gen_tokens > first.gen_tokens


def test_end_of_text_ends_every_sequence_at_once(model, tokenizer):
    settings = SamplerSettings.from_preset("Deterministic", logit_bias={tokenizer.eos_id: 100.0})
    seqs = by_sequence(Generator(model, tokenizer).generate_many(PROMPT, 2, settings, max_tokens=10), 2)
    for tokens, done in seqs.values():
        assert done.stop_reason == "eos" and [e.token for e in tokens] == [tokenizer.eos_id]


def test_cancel_ends_every_sequence_within_one_pass(model, tokenizer):
    generator = Generator(model, tokenizer)
    seen = []
    for event in generator.generate_many(PROMPT, 3, GREEDY, max_tokens=100):
        seen.append(event)
        if len(seen) == 7:                       # sequence 0's token of the third pass
            generator.cancel()
    seqs = by_sequence(seen, 3)
    # the third pass had begun before the cancel; the fourth ends every sequence
    assert [(seqs[i][1].stop_reason, seqs[i][1].gen_tokens) for i in range(3)] == [("cancelled", 4)] * 3


def test_cancel_before_the_prompt_is_read(model, tokenizer):
    cancel = threading.Event()
    cancel.set()
    events = list(Generator(model, tokenizer).generate_many(PROMPT, 2, GREEDY, max_tokens=5, cancel=cancel))
    assert [(type(e), e.index, e.stop_reason, e.gen_tokens) for e in events] == \
        [(DoneEvent, 0, "cancelled", 0), (DoneEvent, 1, "cancelled", 0)]


def test_continuing_a_sequence_evaluates_only_what_it_has_not_seen(model, tokenizer):
    generator = Generator(model, tokenizer)
    settings = SamplerSettings(seed=3, temperature=1.0)
    seqs = by_sequence(generator.generate_many(PROMPT, 3, settings, max_tokens=12), 3)
    tokens, chosen = seqs[2]
    story = PROMPT + chosen.text
    story_tokens = tokenizer.encode(story)
    events = list(generator.generate(story, GREEDY, max_tokens=6))
    cont = events[-1]
    assert cont.prompt_tokens == len(story_tokens)
    # the prompt and what sequence 2 evaluated (all its tokens but the last) came from the cache,
    # as far as the story's tokens agree with them (text can tokenize differently)
    cached = tokenizer.encode(PROMPT) + [e.token for e in tokens][:-1]
    agree = common_prefix_length(cached, story_tokens)
    assert agree > len(tokenizer.encode(PROMPT)) + 2
    assert cont.prompt_tokens_reused == min(agree, len(story_tokens) - 1)
    _, fresh = list(Generator(model, tokenizer).generate(story, GREEDY, max_tokens=6))[-2:]
    assert cont.text == fresh.text


def test_n_is_checked(model, tokenizer):
    generator = Generator(model, tokenizer)
    for bad in (0, 9, "2", 2.0, True):
        with pytest.raises(SettingsError, match="n"):
            generator.generate_many(PROMPT, bad, GREEDY)
    events = list(generator.generate_many(PROMPT, 1, GREEDY, max_tokens=3))      # n = 1: a plain generation
    assert [e.index for e in events] == [0, 0, 0, 0]


# -- the commands --------------------------------------------------------------------------------


def test_generate_n_prints_every_continuation(model, tokenizer, model_path):
    from test_generator import engine_cli
    settings = SamplerSettings.from_preset("KoboldCpp default", seed=11)
    seqs = by_sequence(Generator(model, tokenizer).generate_many(PROMPT, 3, settings, max_tokens=8), 3)
    proc = engine_cli("generate", model_path, "--prompt", PROMPT, "--max-tokens", 8, "--seed", 11, "--n", 3,
                      "--backend", model.info()["backend"])
    assert proc.stdout == "".join(f"=== continuation {i + 1} of 3 (seed {11 + i}) ===\n{seqs[i][1].text}\n"
                                  for i in range(3))
    assert proc.stderr.count("[length]") == 3
    out = engine_cli("generate", model_path, "--prompt", PROMPT, "--max-tokens", 8, "--seed", 11, "--n", 3, "--json",
                     "--backend", model.info()["backend"]).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    for i in range(3):
        mine = [x for x in lines if x["index"] == i]
        assert [x["token"] for x in mine[:-1]] == [e.token for e in seqs[i][0]]
        assert mine[-1]["done"] is True and mine[-1]["seed"] == 11 + i


def test_generate_n_out_of_range_is_a_one_line_error(model_path):
    from test_generator import engine_cli
    proc = engine_cli("generate", model_path, "--prompt", PROMPT, "--n", 9, check=False)
    assert proc.returncode == 2 and "n: must be an integer within 1..8" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_parallel_reports_both_speeds_from_one_process(model_path):
    from test_generator import engine_cli
    out = engine_cli("bench", model_path, "--threads", 1, "--prompt-tokens", 8, "--gen-tokens", 6, "--parallel", 4,
                     "--json").stdout
    r = json.loads(out.splitlines()[-1])
    assert r["parallel_n"] == 4 and r["parallel_gen_tokens_per_s"] > 0 and r["gen_tokens_per_s"] > 0
    assert r["parallel_kv_mib"] >= 0 and r["parallel_rss_mib"] > 0 and r["single_rss_mib"] > 0
    proc = engine_cli("bench", model_path, "--parallel", 9, check=False)
    assert proc.returncode == 2 and "--parallel" in proc.stderr


def test_banned_phrases_run_the_sequences_one_after_another(model, tokenizer):
    """Phrase bans take tokens back, which a batch cannot: the sequences run in turn, same seeds, same events."""
    settings = SamplerSettings(seed=21, temperature=1.0, banned_phrases=["e"])
    events = list(Generator(model, tokenizer).generate_many(PROMPT, 2, settings, max_tokens=10))
    assert [e.index for e in events] == sorted(e.index for e in events)
    seqs = by_sequence(events, 2)
    for i, (tokens, done) in seqs.items():
        alone_tokens, alone = single(model, tokenizer, dataclasses.replace(settings, seed=21 + i), max_tokens=10)
        assert [e.token for e in tokens] == [e.token for e in alone_tokens]
        assert done.text == alone.text and "e" not in done.text and done.seed == 21 + i
