"""The built-in demo model in resources/demo/ is the trained model, and small enough to ship.

The held-out passages come from the last chapters of Persuasion and of Moby Dick, which training
never saw (tools/train_demo/corpus.py). docs/demo-model.md reports the shipped file's perplexity
on them; a model with random weights scores about the vocabulary size (4096) or worse.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from app.bundled import demo_dir
from engine import load_model
from engine.tokenizer import load_tokenizer

DEMO_DIR = demo_dir()          # found as the program finds it: the package app.resources
HELD_OUT = Path(__file__).resolve().parent / "fixtures" / "demo" / "persuasion-ch22-24.txt"
HELD_OUT_MOBY = Path(__file__).resolve().parent / "fixtures" / "demo" / "moby-dick-ch133-135.txt"

MAX_SHIPPED_BYTES = 20 * 1000 * 1000  # model + tokenizer, the budget of issue 8
# The shipped q5_1 file scores PASSAGE_PPL_MEASURED on the passage below (the whole held-out text:
# 44.51, docs/demo-model.md); random weights score 4280, the 2026-12-06 model 41.92 and
# the earlier 6.8M model 60.34. The bounds leave 10-20% for backend rounding and for a model
# retrained on another CPU (other bits, the same quality); an untrained or wrong file fails them.
PASSAGE_PPL_MEASURED = 36.21
PASSAGE_PPL_BOUND = 42.0
# On the opening of Moby Dick's chapter 133 (held out of training since issue 19) it scores 46.66
# (the two models before it 50.18 and 56.05).
MOBY_PASSAGE_PPL_MEASURED = 46.66
MOBY_PASSAGE_PPL_BOUND = 54.0


def shipped_model_path() -> Path:
    models = sorted(DEMO_DIR.glob("demo-*.bin"))
    assert len(models) == 1, f"expected exactly one demo model file in {DEMO_DIR}, found {models}"
    return models[0]


@pytest.fixture(scope="module")
def demo():
    model = load_model(shipped_model_path(), backend="reference")
    tokenizer = load_tokenizer(model.vocab, DEMO_DIR / "tokenizer.json")
    return model, tokenizer


def held_out_passage(tokenizer, max_tokens: int) -> list[int]:
    """The opening paragraphs of chapter 22, as many whole ones as fit in max_tokens."""
    return opening_paragraphs(HELD_OUT, "Chapter 22", tokenizer, max_tokens)


def moby_passage(tokenizer, max_tokens: int) -> list[int]:
    """The opening paragraphs of Moby Dick's chapter 133, as many whole ones as fit in max_tokens."""
    return opening_paragraphs(HELD_OUT_MOBY, "CHAPTER 133. The Chase--First Day.", tokenizer, max_tokens)


def opening_paragraphs(path: Path, heading: str, tokenizer, max_tokens: int) -> list[int]:
    """The paragraphs after the text's first one (its chapter heading), as many as fit in max_tokens."""
    paragraphs = [p for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    assert paragraphs[0] == heading, f"{path.name} must start at {heading!r}"
    ids: list[int] = []
    for paragraph in paragraphs[1:]:
        more = tokenizer.encode(("\n\n" if ids else "") + paragraph)
        if len(ids) + len(more) > max_tokens:
            break
        ids += more
    return ids


def perplexity(model, ids: list[int]) -> float:
    logits = model.logits(ids[:-1]).astype(np.float64)
    peak = logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(logits - peak).sum(axis=1)) + peak[:, 0]
    return math.exp(float(np.mean(log_z - logits[np.arange(len(ids) - 1), ids[1:]])))


def test_demo_files_fit_the_budget(demo):
    model, _ = demo
    total = shipped_model_path().stat().st_size + (DEMO_DIR / "tokenizer.json").stat().st_size
    assert total < MAX_SHIPPED_BYTES
    assert model.info()["weight_type"] in ("q8_0", "q5_1")


def test_tokenizer_belongs_to_the_model(demo):
    model, tokenizer = demo
    assert tokenizer.n_vocab == model.info()["n_vocab"]
    assert tokenizer.eos_id == 0
    assert not tokenizer.approximate
    text = "Captain Wentworth handed her the letter."
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_demo_model_predicts_held_out_austen(demo):
    model, tokenizer = demo
    ids = held_out_passage(tokenizer, model.info()["n_ctx"])
    assert len(ids) > 300  # several paragraphs, so one lucky token cannot decide the result
    ppl = perplexity(model, ids)
    assert ppl < PASSAGE_PPL_BOUND, (
        f"perplexity {ppl:.1f} on held-out Persuasion; the shipped model measured "
        f"{PASSAGE_PPL_MEASURED} and random weights 4280")


def test_demo_model_predicts_held_out_moby_dick(demo):
    model, tokenizer = demo
    ids = moby_passage(tokenizer, model.info()["n_ctx"])
    assert len(ids) > 300
    ppl = perplexity(model, ids)
    assert ppl < MOBY_PASSAGE_PPL_BOUND, (
        f"perplexity {ppl:.1f} on Moby Dick ch. 133; the shipped model measured {MOBY_PASSAGE_PPL_MEASURED}")
