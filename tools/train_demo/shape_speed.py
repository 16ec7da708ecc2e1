"""Training tokens per second of candidate model shapes, to choose one for a time budget.

Each shape trains for --seconds on random windows of the real corpus (the same step as train.py:
forward, cross-entropy, backward, clipping, AdamW), after two warm-up steps that are not timed.
Run it at the nice level and thread count the real run will use, on a machine as quiet as then.

    python tools/train_demo/shape_speed.py --work WORKDIR --shapes 256x6 384x4 384x6 --train-ctx 256 512

prints one table row per shape and window length.
"""
from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np
import torch
from tokenizers import Tokenizer

from train import make_model, make_optimizer, tokenize_corpus, training_loss


def parse_shape(text: str) -> tuple[int, int]:
    """'384x4' -> (n_embd 384, n_layer 4)."""
    n_embd, n_layer = (int(part) for part in text.lower().split("x"))
    return n_embd, n_layer


def tokens_per_second(train: np.ndarray, n_vocab: int, n_embd: int, n_layer: int, train_ctx: int,
                      batch_tokens: int, seconds: float, dropout: float, bf16: bool = False,
                      attn_dropout: float | None = None) -> tuple[float, int]:
    """(training tokens per second, parameters) for one shape."""
    args = SimpleNamespace(n_embd=n_embd, n_layer=n_layer, n_head=max(1, n_embd // 64), n_ctx=512,
                           lr=1e-3, weight_decay=0.1, dropout=dropout,
                           attn_dropout=attn_dropout)
    model = make_model(args, n_vocab)
    optimizer = make_optimizer(model, args)
    rng = np.random.default_rng(0)
    batch = max(1, batch_tokens // train_ctx)

    def step() -> None:
        starts = rng.integers(0, len(train) - train_ctx - 1, size=batch)
        ids = torch.from_numpy(np.stack([train[s:s + train_ctx + 1] for s in starts]).astype(np.int64))
        loss = training_loss(model, ids, bf16)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    step(), step()
    started, steps = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        step()
        steps += 1
    return steps * batch * train_ctx / (time.perf_counter() - started), sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="work directory with train.txt and tokenizer.json")
    parser.add_argument("--shapes", nargs="+", default=["256x6"], help="n_embd x n_layer, e.g. 384x4")
    parser.add_argument("--train-ctx", type=int, nargs="+", default=[512])
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="as train.py's: dropout costs time (384x6 at 0.1: 2 threads 1748 -> about 1190 tokens/s)")
    parser.add_argument("--attn-dropout", type=float, default=None, help="as train.py's")
    parser.add_argument("--bf16", action="store_true", help="as train.py's: autocast to bfloat16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from pathlib import Path
    work = Path(args.work)
    tokenizer = Tokenizer.from_file(str(work / "tokenizer.json"))
    train, _ = tokenize_corpus(work, tokenizer)
    print(f"| shape | parameters | train window | tokens/s |\n| --- | --- | --- | --- |", flush=True)
    for shape in args.shapes:
        n_embd, n_layer = parse_shape(shape)
        for train_ctx in args.train_ctx:
            rate, params = tokens_per_second(train, tokenizer.get_vocab_size(), n_embd, n_layer, train_ctx,
                                             args.batch_tokens, args.seconds, args.dropout, args.bf16, args.attn_dropout)
            print(f"| {n_embd}x{n_layer} | {params / 1e6:.2f}M | {train_ctx} | {rate:.0f} |", flush=True)


if __name__ == "__main__":
    main()
