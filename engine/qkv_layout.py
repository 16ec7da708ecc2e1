"""Which row order the QKV matrices of a GGUF file have, when the file does not say.

llama.cpp's converter has written rows [all Q | all K | all V] since mid-2024; files converted
before kept Hugging Face's per-head interleaved order, and no metadata tells them apart (spec
``gguf-gptneox.md`` §1.1). Both orders give a model that runs; only the right one gives a model
that predicts text. So a short English text is scored under both, and the lower loss wins: the
gap is large for any trained model (the wrong order mixes queries, keys and values across heads),
while for random weights, where it is small, either order is as good as the other.

The backend is built once; between the two scorings only the QKV matrices are read again
(``backend.reload_qkv()``).
"""
from __future__ import annotations

import math

import numpy as np

from engine.gguf_constants import QKV_INTERLEAVED, QKV_SPLIT

# Plain English any GPT-NeoX model has seen in some form: a famous first line and a count.
PROBE_TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
              "must be in want of a wife. One, two, three, four, five, six, seven, eight, nine, ten.")


def probe_tokens(file) -> list[int]:
    """The probe text in the file's own tokenizer (its metadata, else the vocab rebuilt)."""
    from engine.tokenizer import load_tokenizer
    tokenizer = load_tokenizer(file.vocab, None, source=file.path, embedded=file.embedded_tokenizer)
    n_vocab = file.hparams["n_vocab"]
    return [t for t in tokenizer.encode(PROBE_TEXT) if t < n_vocab][:file.hparams["n_ctx"]]


def probe_loss(backend, tokens: list[int]) -> float:
    """Mean negative log-likelihood (nats) of tokens[1:] under the backend."""
    logits = backend.new_session(len(tokens)).eval(tokens, all_logits=True).astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(tokens) - 1), tokens[1:]].mean())


def settle_qkv_layout(file, backend) -> None:
    """Decide the QKV order of a GGUF file without a marker (``file.qkv_layout_source`` "unknown"),
    leaving the file and the backend on the order with the lower loss; records ``file.qkv_losses``."""
    if getattr(file, "qkv_layout_source", None) != "unknown":
        return
    try:
        tokens = probe_tokens(file)
    except ValueError as exc:       # no usable tokenizer: keep the converter's order
        file.qkv_layout_source = f"assumed (no tokenizer to detect it: {exc})"
        return
    if len(tokens) < 2:
        file.qkv_layout_source = "assumed (the vocabulary cannot spell the probe text)"
        return
    losses = {}
    for layout in (QKV_SPLIT, QKV_INTERLEAVED):
        if file.qkv_layout != layout:
            file.set_qkv_layout(layout)
            backend.reload_qkv()
        losses[layout] = probe_loss(backend, tokens)
    best = min(losses, key=lambda k: (losses[k] if math.isfinite(losses[k]) else math.inf, k != QKV_SPLIT))
    if file.qkv_layout != best:
        file.set_qkv_layout(best)
        backend.reload_qkv()
    file.qkv_layout_source = "detected"
    file.qkv_losses = losses


def describe(file) -> str:
    """The QKV order and how it was decided, in words (``python -m engine info``)."""
    layout = file.qkv_layout
    source = getattr(file, "qkv_layout_source", "legacy file")
    if source == "detected":
        other = QKV_INTERLEAVED if layout == QKV_SPLIT else QKV_SPLIT
        losses = file.qkv_losses
        return f"{layout} (detected: loss {losses[layout]:.3f} vs {losses[other]:.3f} {other})"
    if file.format != "gguf":
        return f"{layout} (legacy file)"
    return f"{layout} ({source})"
