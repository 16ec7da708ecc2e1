"""Perplexity of a ggml model file on a text, computed with the project's engine (no torch).

The text is tokenized with the model's tokenizer.json and cut into windows of n_ctx + 1 tokens
with a stride of n_ctx; each window is a fresh context whose n_ctx next-token predictions are all
scored. This is exactly how train.py measures its validation loss, so the f32 file's figure must
equal the training log's last val_ppl (up to float rounding): a check that conversion is lossless.

    python tools/train_demo/perplexity.py MODEL.bin --text val.txt --tokenizer tokenizer.json
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `engine`
from engine import load_model  # noqa: E402


def window_nll(model, ids: list[int]) -> float:
    """Summed negative log-likelihood of ids[1:] given their prefixes in one fresh context."""
    logits = model.logits(ids[:-1]).astype(np.float64)
    peak = logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(logits - peak).sum(axis=1)) + peak[:, 0]
    return float((log_z - logits[np.arange(len(ids) - 1), ids[1:]]).sum())


def perplexity(model, ids: list[int], n_ctx: int | None = None) -> tuple[float, int]:
    """(perplexity, number of scored tokens) over non-overlapping windows of n_ctx predictions."""
    n_ctx = n_ctx or model.config.n_ctx
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, n_ctx):
        window = ids[start:start + n_ctx + 1]
        if len(window) < 2:
            break
        total += window_nll(model, window)
        count += len(window) - 1
    if count == 0:
        raise ValueError("text is too short: it needs at least two tokens")
    return math.exp(total / count), count


def main() -> None:
    from tokenizers import Tokenizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--text", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--n-ctx", type=int, default=None, help="window length (default: the model's n_ctx)")
    args = parser.parse_args()
    model = load_model(args.model)
    ids = Tokenizer.from_file(str(args.tokenizer)).encode(args.text.read_text(encoding="utf-8").strip()).ids
    ppl, count = perplexity(model, ids, args.n_ctx)
    print(f"{args.model.name}: perplexity {ppl:.3f} over {count} tokens")


if __name__ == "__main__":
    main()
