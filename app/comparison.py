"""Compare checkpoints: one prompt run on several revisions of a model, in turn, and the results as tables.

For each revision the prompt is evaluated once (its perplexity under that revision comes from
the same pass) and continued greedily, or by sampling with one fixed seed so every revision
draws from the same random stream; each generated token keeps the probability the revision
gave it. Models are opened one at a time and closed before the next, so comparing six
checkpoints of a 12B model needs the memory of one. No Qt here: the view runs `compare` on a
worker thread and the exports are plain text.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

MAX_REVISIONS = 6


@dataclass(frozen=True)
class Checkpoint:
    """One installed revision to run: its label (the revision), file, tokenizer and commit."""
    label: str
    path: str
    tokenizer: str | None = None
    commit: str | None = None


@dataclass
class TokenStep:
    """A generated token: its text (complete UTF-8 only, so maybe empty) and the probability it had."""
    id: int
    text: str
    prob: float


@dataclass
class RevisionResult:
    """What one revision made of the prompt."""
    checkpoint: Checkpoint
    prompt_tokens: int = 0
    perplexity: float | None = None
    steps: list[TokenStep] = field(default_factory=list)
    error: str = ""

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)


class Cancelled(Exception):
    """The comparison was stopped between two tokens."""


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - float(np.max(logits))
    e = np.exp(z)
    return e / e.sum()


def prompt_perplexity(logits: np.ndarray, ids: list[int], n_vocab: int) -> float | None:
    """exp(mean negative log-likelihood) of ids[1:] given what precedes each; None for one token."""
    if len(ids) < 2:
        return None
    nll = 0.0
    for i in range(len(ids) - 1):
        row = logits[i, :n_vocab].astype(np.float64)
        top = float(row.max())
        log_z = top + math.log(float(np.exp(row - top).sum()))
        nll += log_z - float(row[ids[i + 1]])
    return math.exp(nll / (len(ids) - 1))


def run_checkpoint(checkpoint: Checkpoint, prompt: str, n_tokens: int, seed: int | None = None,
                   stop: Callable[[], bool] = lambda: False, on_token=None) -> RevisionResult:
    """Open one checkpoint, score the prompt and continue it by `n_tokens`; always closes the model."""
    from engine.loaded import open_model
    from engine.stream_decode import StreamDecoder

    result = RevisionResult(checkpoint)
    loaded = open_model(checkpoint.path, checkpoint.tokenizer or None)
    try:
        tokenizer = loaded.tokenizer
        ids = tokenizer.encode(prompt)
        if not ids:
            raise ValueError("the prompt is empty after tokenizing")
        session = loaded.model.new_session()
        if len(ids) + n_tokens > session.n_ctx:
            raise ValueError(f"{len(ids)} prompt tokens + {n_tokens} new ones exceed the context of {session.n_ctx}")
        result.prompt_tokens = len(ids)
        n_vocab = tokenizer.n_vocab                  # ids past the tokenizer are padding, never chosen
        all_logits = session.eval(ids, all_logits=True)
        result.perplexity = prompt_perplexity(all_logits, ids, n_vocab)
        last = all_logits[-1]
        rng = np.random.default_rng(seed) if seed is not None else None
        decoder = StreamDecoder(tokenizer)
        for _ in range(n_tokens):
            if stop():
                raise Cancelled()
            probs = softmax(last[:n_vocab])
            token = int(np.argmax(probs)) if rng is None else int(rng.choice(n_vocab, p=probs))
            step = TokenStep(token, decoder.feed(token), float(probs[token]))
            result.steps.append(step)
            if on_token is not None:
                on_token(step)
            if token == tokenizer.eos_id:
                break
            last = session.eval([token])
        tail = decoder.flush()
        if tail and result.steps:
            result.steps[-1].text += tail
    finally:
        loaded.close()
    return result


def compare(checkpoints: list[Checkpoint], prompt: str, n_tokens: int, seed: int | None = None,
            stop: Callable[[], bool] = lambda: False, on_result=None) -> list[RevisionResult]:
    """Run the prompt on each checkpoint in turn; a checkpoint that fails records its error and the rest go on."""
    if not 1 <= len(checkpoints) <= MAX_REVISIONS:
        raise ValueError(f"choose 1 to {MAX_REVISIONS} revisions, not {len(checkpoints)}")
    results = []
    for checkpoint in checkpoints:
        try:
            result = run_checkpoint(checkpoint, prompt, n_tokens, seed, stop)
        except Cancelled:
            raise
        except Exception as exc:   # noqa: BLE001 - a damaged file must not hide the other revisions
            result = RevisionResult(checkpoint, error=f"{type(exc).__name__}: {exc}")
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, newlines shown as ⏎, spaces kept visible."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "⏎").replace("`", "'")


def to_markdown(results: list[RevisionResult], prompt: str, seed: int | None = None) -> str:
    """The comparison as Markdown: the continuations side by side, then token by token with probabilities."""
    mode = "greedy" if seed is None else f"sampled, seed {seed}"
    heads = [r.checkpoint.label for r in results]
    lines = [f"# Checkpoint comparison ({mode})", "", "Prompt:", "", "> " + _cell(prompt), "",
             "| | " + " | ".join(_cell(h) for h in heads) + " |",
             "|---|" + "---|" * len(heads),
             "| commit | " + " | ".join((r.checkpoint.commit or "")[:12] for r in results) + " |",
             "| prompt perplexity | " + " | ".join(_ppl(r) for r in results) + " |",
             "| continuation | " + " | ".join(_cell(r.error or r.text) for r in results) + " |", "",
             "| token | " + " | ".join(_cell(h) for h in heads) + " |",
             "|---|" + "---|" * len(heads)]
    for i in range(max((len(r.steps) for r in results), default=0)):
        cells = [f"`{_cell(r.steps[i].text)}` {r.steps[i].prob:.3f}" if i < len(r.steps) else "" for r in results]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(results: list[RevisionResult]) -> str:
    """One row per generated token: revision, commit, position, token id and text, probability,
    and the revision's prompt perplexity (repeated, so each row stands alone)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["revision", "commit", "model_file", "prompt_perplexity", "position", "token_id", "token",
                     "probability", "error"])
    for r in results:
        c = r.checkpoint
        ppl = f"{r.perplexity:.6g}" if r.perplexity is not None else ""
        if not r.steps:
            writer.writerow([c.label, c.commit or "", Path(c.path).name, ppl, "", "", "", "", r.error])
        for i, s in enumerate(r.steps):
            writer.writerow([c.label, c.commit or "", Path(c.path).name, ppl, i + 1, s.id, s.text, f"{s.prob:.6g}",
                             r.error])
    return out.getvalue()


def _ppl(r: RevisionResult) -> str:
    return f"{r.perplexity:.2f}" if r.perplexity is not None else ("error" if r.error else "n/a")
