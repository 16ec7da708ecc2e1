"""Compare checkpoints (headless): greedy continuations with per-token probabilities, prompt perplexity, exports."""
from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

import engine
from app.comparison import Checkpoint, compare, softmax, to_csv, to_markdown
from hf_checkpoints import TINY, local_revision

PROMPT = "Hello world, the"


@pytest.fixture(scope="module")
def revisions(tmp_path_factory):
    root = tmp_path_factory.mktemp("revs")
    return [Checkpoint(f"step{seed}000", str(local_revision(root / f"r{seed}", seed)),
                       str(TINY / "tokenizer.json"), f"{seed:040x}") for seed in (1, 2, 3)]


def test_greedy_continuations_probabilities_and_perplexity_match_the_model(revisions):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(TINY / "tokenizer.json"))
    ids = tok.encode(PROMPT).ids
    results = compare(revisions, PROMPT, 6)
    assert [r.checkpoint.label for r in results] == ["step1000", "step2000", "step3000"]
    texts = set()
    for r in results:
        assert r.error == "" and r.prompt_tokens == len(ids) and len(r.steps) >= 1
        model = engine.load_model(r.checkpoint.path, backend="reference")
        seq = list(ids)
        for step in r.steps:
            probs = softmax(model.logits(seq)[-1][:tok.get_vocab_size()])
            assert step.id == int(np.argmax(probs)) and step.prob == pytest.approx(probs[step.id], rel=1e-3)
            seq.append(step.id)
        logits = model.logits(ids)
        nll = [-math.log(softmax(logits[i][:tok.get_vocab_size()])[ids[i + 1]]) for i in range(len(ids) - 1)]
        assert r.perplexity == pytest.approx(math.exp(np.mean(nll)), rel=1e-3)
        texts.add(tuple(s.id for s in r.steps))
    assert len(texts) > 1                   # the revisions differ in what they write


def test_a_fixed_seed_is_repeatable_and_a_broken_file_is_reported(revisions, tmp_path):
    a = compare(revisions[:1], PROMPT, 5, seed=7)
    b = compare(revisions[:1], PROMPT, 5, seed=7)
    assert [s.id for s in a[0].steps] == [s.id for s in b[0].steps]
    broken = tmp_path / "broken.bin"
    broken.write_bytes(b"not a model")
    results = compare([revisions[0], Checkpoint("bad", str(broken))], PROMPT, 3)
    assert results[0].error == "" and "ModelFormatError" in results[1].error
    with pytest.raises(ValueError, match="1 to 6 revisions"):
        compare(revisions * 3, PROMPT, 3)


def test_markdown_and_csv_exports(revisions):
    results = compare(revisions, PROMPT, 4)
    md = to_markdown(results, "a | b\nc")
    assert "| | step1000 | step2000 | step3000 |" in md and "> a \\| b⏎c" in md
    assert "| prompt perplexity | " + " | ".join(f"{r.perplexity:.2f}" for r in results) + " |" in md
    assert md.count("\n| 1 | ") == 1
    rows = list(csv.DictReader(io.StringIO(to_csv(results))))
    assert len(rows) == sum(len(r.steps) for r in results)
    first = rows[0]
    assert first["revision"] == "step1000" and first["position"] == "1" and first["commit"] == f"{1:040x}"
    assert float(first["probability"]) == pytest.approx(results[0].steps[0].prob, rel=1e-5)
