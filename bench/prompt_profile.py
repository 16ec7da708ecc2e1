"""Where a long prompt's time goes: products, attention (with RoPE) and LayerNorm, and the attention kernel alone.

    python bench/prompt_profile.py MODEL [--tokens 512] [--threads 2] [--runs 3]

Wraps the prompt path's steps (``prompt.TileDecoder.matmul``, ``TileDecoder.attention``,
``layer_norm_rows``) with wall-clock timers and evaluates a prompt of random tokens in a fresh
session ``--runs`` times; then times ``forward.attend_prompt_heads`` alone on one thread (half the
model's heads over ``--tokens`` positions, random q, k, v) per layer. The kernel's figure against
its share of the prompt says how much the threads, the caches and the calls cost around it.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import load_model  # noqa: E402
from engine.fast import prompt  # noqa: E402
from engine.fast.forward import attend_prompt_heads, rope_tables  # noqa: E402

SPENT = defaultdict(float)


def timed(name, fn):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - t
    return wrapper


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    prompt.TileDecoder.matmul = timed("products", prompt.TileDecoder.matmul)
    prompt.TileDecoder.attention = timed("attention", prompt.TileDecoder.attention)
    prompt.layer_norm_rows = timed("layer norm", prompt.layer_norm_rows)
    model = load_model(args.model, backend="fast", threads=args.threads)
    c = model.config
    tokens = np.random.default_rng(0).integers(0, c.n_vocab, args.tokens).tolist()
    print(f"{Path(args.model).name}, {args.tokens}-token prompt, {args.threads} threads, wall seconds")
    print("| run | prompt | products | attention + RoPE | layer norm | rest |")
    print("| --- | --- | --- | --- | --- | --- |")
    for run in range(args.runs):
        SPENT.clear()
        session = model.new_session(args.tokens + 16)
        t = time.perf_counter()
        session.eval(tokens)
        total = time.perf_counter() - t
        rest = total - sum(SPENT.values())
        print(f"| {run + 1} | {total:.3f} | {SPENT['products']:.3f} | {SPENT['attention']:.3f} | "
              f"{SPENT['layer norm']:.3f} | {rest:.3f} |", flush=True)
    n, e, heads = args.tokens, c.n_embd, c.n_head
    rng = np.random.default_rng(1)
    qkv = rng.standard_normal((n, 3 * e)).astype(np.float32)
    kc, vc = np.zeros((n, e), np.float32), np.zeros((n, e), np.float32)
    out = np.zeros((n, e), np.float32)
    cos, sin = rope_tables(n, c.n_rot)
    attend_prompt_heads(qkv.copy(), n, 0, cos, sin, heads, c.n_rot, kc, vc, out, 0, heads // 2)
    best = float("inf")
    for _ in range(5):
        q = qkv.copy()
        t = time.perf_counter()
        attend_prompt_heads(q, n, 0, cos, sin, heads, c.n_rot, kc, vc, out, 0, heads // 2)
        best = min(best, time.perf_counter() - t)
    print(f"attend_prompt_heads alone, one thread, {heads // 2} of {heads} heads, {n} positions: "
          f"{best * 1e3:.2f} ms a layer ({best * c.n_layer:.3f} s for {c.n_layer} layers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
