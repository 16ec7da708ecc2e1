"""The generation loop on a converted fixture model: streaming, stops, cancellation, cache reuse,
context shifting, and the generate/perplexity commands end to end."""
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.errors import SettingsError
from engine.generator import DoneEvent, Generator, StopMatcher, TokenEvent
from engine.model import load_model
from engine.sampling import SamplerSettings
from engine.tokenizer import load_tokenizer
from modelgen import TINY_FIXTURE as FIXTURE, converted_tiny_model

ROOT = Path(__file__).resolve().parents[1]
GREEDY = SamplerSettings.from_preset("Deterministic")
PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return converted_tiny_model(tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module")
def model(model_path):
    return load_model(model_path, backend="reference")


@pytest.fixture(scope="module")
def tokenizer(model):
    return load_tokenizer(model.vocab, str(FIXTURE / "tokenizer.json"))


def run(generator, *args, **kw):
    events = list(generator.generate(*args, **kw))
    assert all(isinstance(e, TokenEvent) for e in events[:-1])
    assert isinstance(events[-1], DoneEvent)
    return events[:-1], events[-1]


class CountingSession:
    """Wraps a Session to count the tokens each eval call is given."""

    def __init__(self, session):
        self.inner = session
        self.evaluated = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def eval(self, tokens, all_logits=False):
        self.evaluated += len(tokens)
        return self.inner.eval(tokens, all_logits)


def counting(generator):
    generator._session = CountingSession(generator.session)
    return generator._session


# -- StopMatcher on its own --------------------------------------------------------------------


def test_stop_matcher_holds_back_possible_starts():
    m = StopMatcher(["\nYou:", "END"])
    assert m.push("Hello") == ("Hello", None)
    assert m.push(" there\nY") == (" there", None)          # "\nY" could start "\nYou:"
    assert m.held == "\nY"
    assert m.push("es") == ("\nYes", None)                    # it did not
    assert m.push(" the E") == (" the ", None)
    assert m.push("N") == ("", None)
    assert m.push("D of it") == ("", "END")                   # the stop and what follows are cut
    m = StopMatcher(["ab"])
    assert m.push("xa") == ("x", None)
    assert m.release() == "a"


def test_stop_matcher_earliest_stop_wins():
    m = StopMatcher(["later", "ear"])
    assert m.push("an early and later") == ("an ", "ear")


# -- the generation loop -------------------------------------------------------------------------


def test_greedy_tokens_are_the_argmax_of_a_fresh_forward(model, tokenizer):
    events, done = run(Generator(model, tokenizer), PROMPT, GREEDY, max_tokens=12)
    assert done.stop_reason == "length" and done.gen_tokens == 12 == len(events)
    ids = tokenizer.encode(PROMPT)
    for event in events:
        row = model.logits(ids)[-1][:tokenizer.n_vocab]
        assert event.token == int(np.argmax(row))
        ids.append(event.token)


def test_streamed_text_is_the_decode_and_alternatives_are_sorted(model, tokenizer):
    events, done = run(Generator(model, tokenizer), PROMPT, SamplerSettings(seed=7), max_tokens=40)
    tokens = [e.token for e in events if e.token != tokenizer.eos_id]
    assert "".join(e.text for e in events) == done.text == tokenizer.decode(tokens)
    for e in events:
        assert 1 <= len(e.top) <= 10
        probs = [p for _, p in e.top]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-9
        assert all(t < tokenizer.n_vocab for t, _ in e.top)
        if e.token in dict(e.top):
            assert dict(e.top)[e.token] == pytest.approx(e.probability)
    assert done.seed == 7


def test_same_seed_same_text(model, tokenizer):
    settings = SamplerSettings(seed=1234, temperature=1.0)
    _, a = run(Generator(model, tokenizer), PROMPT, settings, max_tokens=30)
    _, b = run(Generator(model, tokenizer), PROMPT, settings, max_tokens=30)
    _, c = run(Generator(model, tokenizer), PROMPT, SamplerSettings(seed=99, temperature=1.0), max_tokens=30)
    assert a.text == b.text
    assert a.text != c.text


def test_stop_sequence_spanning_tokens(model, tokenizer):
    events, full = run(Generator(model, tokenizer), PROMPT, GREEDY, max_tokens=40)
    pieces = [e.text for e in events]
    # A stop string made of the end of one token's text and the start of the next one's.
    i = next(i for i in range(3, len(pieces) - 1) if pieces[i].strip() and pieces[i + 1].strip())
    stop = pieces[i][-1] + pieces[i + 1]
    assert len(tokenizer.encode(stop)) >= 1 and stop in full.text
    events, done = run(Generator(model, tokenizer), PROMPT, GREEDY, max_tokens=40, stop=["never there", stop])
    assert done.stop_reason == "stop_sequence" and done.stop_sequence == stop
    assert done.text == full.text[:full.text.index(stop)]
    assert stop not in done.text
    assert "".join(e.text for e in events) == done.text


def test_end_of_text_stops(model, tokenizer):
    settings = SamplerSettings.from_preset("Deterministic", logit_bias={tokenizer.eos_id: 100.0})
    events, done = run(Generator(model, tokenizer), PROMPT, settings, max_tokens=10)
    assert done.stop_reason == "eos" and len(events) == 1 and events[0].token == tokenizer.eos_id
    assert done.text == ""


def test_cancel_from_another_thread_takes_effect_within_one_token(model, tokenizer):
    generator = Generator(model, tokenizer)
    paused, resume = threading.Event(), threading.Event()
    seen = []

    def consume():
        for event in generator.generate(PROMPT, GREEDY, max_tokens=100):
            seen.append(event)
            if len(seen) == 3:
                paused.set()
                resume.wait(10)

    worker = threading.Thread(target=consume)
    worker.start()
    assert paused.wait(60)
    generator.cancel()
    resume.set()
    worker.join(60)
    done = seen[-1]
    assert isinstance(done, DoneEvent) and done.stop_reason == "cancelled"
    assert done.gen_tokens == 4                          # the one being made when cancel came


def test_cancel_before_the_prompt_is_read(model, tokenizer):
    cancel = threading.Event()
    cancel.set()
    events, done = run(Generator(model, tokenizer), PROMPT, GREEDY, max_tokens=5, cancel=cancel)
    assert events == [] and done.stop_reason == "cancelled" and done.gen_tokens == 0


def test_retry_and_continue_reuse_the_cache(model, tokenizer):
    generator = Generator(model, tokenizer)
    session = counting(generator)
    n_prompt = len(tokenizer.encode(PROMPT))
    _, first = run(generator, PROMPT, GREEDY, max_tokens=10)
    assert (first.prompt_tokens, first.prompt_tokens_reused) == (n_prompt, 0)
    assert session.evaluated == n_prompt + 9            # the last token is never evaluated

    session.evaluated = 0                               # retry: the same prompt again
    _, retry = run(generator, PROMPT, GREEDY, max_tokens=10)
    assert retry.prompt_tokens_reused == n_prompt - 1 and retry.prompt_tokens_evaluated == 1
    assert session.evaluated == 1 + 9
    assert retry.text == first.text

    session.evaluated = 0                               # continue: prompt + what was generated
    story = PROMPT + first.text
    _, cont = run(generator, story, GREEDY, max_tokens=10)
    n_story = len(tokenizer.encode(story))
    assert cont.prompt_tokens == n_story
    assert cont.prompt_tokens_reused >= n_prompt
    assert session.evaluated == cont.prompt_tokens_evaluated + 9
    assert cont.prompt_tokens_evaluated < n_story
    # Reusing the cache changes nothing: a fresh generator writes the same continuation.
    _, fresh = run(Generator(model, tokenizer), story, GREEDY, max_tokens=10)
    assert fresh.text == cont.text and fresh.prompt_tokens_reused == 0


def test_long_story_keeps_the_memory_head(model, tokenizer):
    generator = Generator(model, tokenizer)
    memory = "Memory: the hero is Alice.\n"
    story = " ".join(f"Day {i}, the hero walked on." for i in range(40))
    mem_ids, story_ids = tokenizer.encode(memory), tokenizer.encode(story)
    assert len(mem_ids) + len(story_ids) > 64
    _, done = run(generator, story, GREEDY, memory=memory, max_tokens=8, max_context=64)
    assert done.prompt_tokens_dropped > 0
    assert done.prompt_tokens + 8 <= 64
    cached = generator.session.tokens
    assert cached[:len(mem_ids)] == mem_ids
    kept = done.prompt_tokens - len(mem_ids)
    assert cached[len(mem_ids):done.prompt_tokens] == story_ids[-kept:]
    # Continuing the story keeps the same cut, so the window's prefix comes from the cache.
    _, more = run(generator, story + " Day 40", GREEDY, memory=memory, max_tokens=8, max_context=64)
    assert more.prompt_tokens_dropped == done.prompt_tokens_dropped
    assert more.prompt_tokens_reused >= done.prompt_tokens - 2


def test_settings_errors_name_the_setting(model, tokenizer):
    generator = Generator(model, tokenizer)
    cases = [(dict(max_tokens=128), "max_tokens"), (dict(max_tokens=0), "max_tokens"),
             (dict(max_context=500), "max_context"), (dict(stop=[""]), "stop"),
             (dict(memory="word " * 200, max_tokens=8), "memory")]
    for kwargs, setting in cases:
        with pytest.raises(SettingsError) as err:
            generator.generate(PROMPT, GREEDY, **kwargs)
        assert err.value.setting == setting


def test_one_request_at_a_time(model, tokenizer):
    generator = Generator(model, tokenizer)
    events = generator.generate(PROMPT, GREEDY, max_tokens=5)
    next(events)
    with pytest.raises(RuntimeError, match="still running"):
        generator.generate(PROMPT, GREEDY, max_tokens=5)
    events.close()                                      # an abandoned request frees the generator
    _, done = run(generator, PROMPT, GREEDY, max_tokens=5)
    assert done.prompt_tokens_reused > 0


def test_empty_prompt_starts_from_end_of_text(model, tokenizer):
    _, done = run(Generator(model, tokenizer), "", GREEDY, max_tokens=3)
    assert done.prompt_tokens == 1 and done.gen_tokens == 3


# -- the commands --------------------------------------------------------------------------------


def engine_cli(*args, check=True):
    """Run `python -m engine` (stdout and stderr decoded as UTF-8, newlines untouched)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, PYTHONIOENCODING="utf-8")
    proc = subprocess.run([sys.executable, "-m", "engine", *map(str, args)], capture_output=True,
                          env=env, timeout=300)
    proc.stdout, proc.stderr = proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_generate_json_end_to_end(model, tokenizer, model_path):
    _, expected = run(Generator(model, tokenizer), PROMPT, GREEDY, max_tokens=20)
    # tokenizer.json sits next to the model file, so --tokenizer is not needed.
    out = engine_cli("generate", model_path, "--prompt", PROMPT, "--max-tokens", 20, "--preset", "Deterministic",
                     "--json", "--backend", "reference").stdout
    lines = [json.loads(line) for line in out.splitlines()]
    tokens, done = lines[:-1], lines[-1]
    assert len(tokens) == 20
    for t in tokens:
        assert set(t) == {"text", "token", "top"} and isinstance(t["token"], int)
        assert all(len(pair) == 2 for pair in t["top"]) and t["top"][0][0] == t["token"]
    assert "".join(t["text"] for t in tokens) == expected.text
    assert done["done"] is True and done["stop_reason"] == "length"
    assert done["prompt_tokens"] == len(tokenizer.encode(PROMPT)) and done["prompt_tokens_reused"] == 0
    assert done["gen_tokens_per_s"] > 0


def test_generate_text_stream_with_stop(model, tokenizer, model_path):
    _, full = run(Generator(model, tokenizer), PROMPT, GREEDY, max_tokens=30)
    at = next(i for i in range(5, len(full.text) - 3) if full.text[i:i + 3].isprintable()
              and full.text[i:i + 3].strip())
    stop = full.text[at:at + 3]
    proc = engine_cli("generate", model_path, "--prompt", PROMPT, "--max-tokens", 30, "--temperature", 0,
                      "--stop", stop, "--tokenizer", FIXTURE / "tokenizer.json", "--seed", 3, "--backend", "reference")
    assert proc.stdout == full.text[:full.text.index(stop)] + "\n"
    assert "[stop_sequence]" in proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["--preset", "Nope"], "preset"), (["--temperature", "-1"], "temperature"),
    (["--top-p", "1.5"], "top_p"), (["--max-tokens", "500"], "max_tokens"),
])
def test_generate_bad_settings_are_one_line_errors(model_path, args, needle):
    proc = engine_cli("generate", model_path, "--prompt", PROMPT, *args, check=False)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def log_softmax_at(row, target):
    row = row.astype(np.float64)
    return row[target] - (row.max() + math.log(np.exp(row - row.max()).sum()))


def test_perplexity_matches_a_direct_computation(model, tokenizer, model_path, tmp_path):
    text = "The quick brown fox jumps over the lazy dog. " * 2
    path = tmp_path / "text.txt"
    path.write_text(text)
    ids = tokenizer.encode(text)
    n = len(ids)
    assert 32 < n <= 128
    V = tokenizer.n_vocab

    # One window holds everything: every target is predicted from all tokens before it.
    logits = model.logits(ids)
    expected = math.exp(-sum(log_softmax_at(logits[t - 1, :V], ids[t]) for t in range(1, n)) / (n - 1))
    out = json.loads(engine_cli("perplexity", model_path, "--text", path, "--json", "--backend", "reference").stdout)
    assert out["tokens"] == n and out["perplexity"] == pytest.approx(expected, rel=1e-5)

    # Context 16, stride 8: target t >= 16 is scored by the window starting at (t // 8 - 1) * 8.
    nll = 0.0
    for t in range(1, n):
        begin = 0 if t < 16 else (t // 8 - 1) * 8
        row = model.logits(ids[begin:begin + 16])[t - begin - 1, :V]
        nll -= log_softmax_at(row, ids[t])
    out = json.loads(engine_cli("perplexity", model_path, "--text", path, "--context", 16, "--json",
                                "--backend", "reference").stdout)
    assert out["perplexity"] == pytest.approx(math.exp(nll / (n - 1)), rel=1e-5)
    assert "perplexity" in engine_cli("perplexity", model_path, "--text", path, "--backend", "reference").stdout
