"""Phrase bans (KoboldCpp's banned_tokens / SillyTavern's banned_phrases) enforced by the
generator's backtracking, on a toy bigram model whose favourite phrase spans tokens."""
from __future__ import annotations

from engine.generator import DoneEvent, Generator, TokenEvent
from engine.phrase_bans import PhraseBans, PhraseGuard
from engine.sampling import SamplerSettings
from toymodel import BigramModel, BytesTokenizer

VOCAB = ["", " the", " cat", " sat", " on", " mat", " dog", " ", "ca", "t", "z", " Cat", "Once"]
THE, CAT, SAT, ON, MAT, DOG, SPACE, CA, T, Z, CAT_UPPER, ONCE = range(1, 13)
# " the" is nearly always followed by " cat", spelt one way or another: " cat", " Cat" or " " "ca" "t".
MODEL = BigramModel({
    ONCE: {THE: 0.9, DOG: 0.1},
    THE: {CAT: 0.75, SPACE: 0.15, CAT_UPPER: 0.05, DOG: 0.05},
    CAT: {SAT: 1.0}, CAT_UPPER: {SAT: 1.0}, DOG: {SAT: 1.0}, T: {SAT: 1.0},
    SPACE: {CA: 0.9, MAT: 0.1}, CA: {T: 1.0},
    SAT: {ON: 1.0}, ON: {THE: 0.9, MAT: 0.1}, MAT: {ON: 0.5, THE: 0.5},
}, len(VOCAB))
TOKENIZER = BytesTokenizer(VOCAB)
FREE = SamplerSettings(temperature=1.0, top_k=0, top_p=1.0, rep_pen=1.0)


def continuations(settings, n=200, max_tokens=12):
    generator = Generator(MODEL, TOKENIZER)
    out = []
    for seed in range(n):
        events = list(generator.generate("Once", settings.__class__(**{**settings.to_dict(), "seed": seed}),
                                         max_tokens=max_tokens))
        tokens, done = events[:-1], events[-1]
        assert all(isinstance(e, TokenEvent) for e in tokens) and isinstance(done, DoneEvent)
        text = "".join(e.text for e in tokens)
        assert text == done.text
        # what was streamed is exactly the text of the tokens streamed: nothing taken back leaks
        assert text == TOKENIZER.decode([e.token for e in tokens if e.token >= 0])
        out.append((text, tokens, done, list(generator.session.tokens)))
    return out


def test_without_the_ban_the_phrase_is_almost_always_there():
    texts = [text.lower() for text, *_ in continuations(FREE)]
    assert sum("the cat" in t for t in texts) >= 190


def test_a_banned_phrase_never_appears_in_200_continuations():
    settings = FREE.__class__(**{**FREE.to_dict(), "banned_phrases": ["THE cat"]})
    runs = continuations(settings)
    for text, tokens, done, cached in runs:
        assert "the cat" not in text.lower()
        # the ban took tokens back, yet every continuation is still max_tokens long, and the
        # KV cache holds exactly the prompt and the kept tokens (the last one is not evaluated yet)
        assert done.stop_reason == "length" and len(tokens) == 12 == done.gen_tokens
        assert cached == [ONCE] + [e.token for e in tokens][:-1]
    texts = [text for text, *_ in runs]
    assert sum(" the " in t for t in texts) > 100            # " the" still appears, followed by something else


def test_a_single_character_ban_bans_every_token_containing_it():
    bans = PhraseBans(["T"], TOKENIZER)
    assert not bans.phrases
    assert sorted(bans.token_ids) == [THE, CAT, SAT, MAT, T, CAT_UPPER]
    settings = FREE.__class__(**{**FREE.to_dict(), "banned_phrases": ["t"]})
    for text, *_ in continuations(settings, n=20):
        assert "t" not in text.lower()


def test_when_the_bans_leave_no_token_the_text_ends_there():
    tok = BytesTokenizer(["", "q", "Q"])
    model = BigramModel({1: {1: 0.5, 2: 0.5}, 2: {1: 0.5, 2: 0.5}, 0: {1: 0.5, 2: 0.5}}, 3)
    settings = SamplerSettings(temperature=1.0, top_k=0, top_p=1.0, rep_pen=1.0, banned_tokens=[0],
                               banned_phrases=["qq"], seed=1)
    events = list(Generator(model, tok).generate("q", settings, max_tokens=5))
    done = events[-1]
    assert done.text == "" and done.stop_reason == "length"
    assert all(e.token >= 0 for e in events[:-1])


def test_guard_holds_back_only_what_could_begin_a_phrase():
    guard = PhraseGuard(PhraseBans(["the cat"], TOKENIZER), TOKENIZER, max_tokens=10)
    for token in (SAT, ON, THE):
        guard.push(token, None, [0.0])
    assert guard.violation() is None
    assert [h.token for h in guard.release()] == [SAT, ON]          # " the" could begin " the cat"
    guard.push(SPACE, None, [0.0])
    guard.push(CA, None, [0.0])
    assert guard.release() == []                                     # " the ca" still could
    guard.push(T, None, [0.0])
    assert guard.violation() == 0                                    # " the" " " "ca" "t": back to " the"
    first = guard.rewind(0, position=7)
    assert first.token == THE and guard.held == [] and guard.banned_at(7) == {THE}
    guard.push(DOG, None, [0.0])
    assert [h.token for h in guard.release()] == [DOG]
    assert guard.banned_at(8) == set()
