"""What app.threads.GilHandover costs the engine thread when nothing else wants the GIL.

    python bench/gil_handover.py MODEL.bin [MODEL.bin ...] [--every 0.002] [--tokens 200] [--rounds 4]

A per-token loop of the fast backend (`session.eval` of the argmax token, one thread), with and
without a hand-over per token, alternating round by round; prints a markdown table. The files of
bench/speed.py (bench/out/pythia-70M-q4_0-v2.bin, ...) serve; no tokenizer is needed. Its benefit,
the GUI thread's event-loop gaps, is measured by tests/test_gui_latency.py -s.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.threads import GIL_HANDOVER_PAUSE, GilHandover  # noqa: E402
from engine.model import load_model  # noqa: E402


def tokens_per_second(model, tokens: int, handover) -> float:
    session = model.new_session(tokens + 8)
    logits = session.eval([1, 2, 3, 4])
    start = time.perf_counter()
    for _ in range(tokens):
        logits = session.eval([int(np.argmax(logits[-1] if logits.ndim > 1 else logits))])
        handover()
    return tokens / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--every", type=float, default=0.002, help="seconds between hand-overs")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    print(f"| model | every | without (tokens/s) | with (tokens/s) | cost |\n| --- | ---: | ---: | ---: | ---: |")
    for path in args.models:
        model = load_model(path, backend="fast", threads=1)
        tokens_per_second(model, 16, lambda: None)          # warm: compiled kernels loaded, caches filled
        without, with_ = [], []
        for _ in range(args.rounds):
            without.append(tokens_per_second(model, args.tokens, lambda: None))
            with_.append(tokens_per_second(model, args.tokens, GilHandover(args.every, GIL_HANDOVER_PAUSE)))
        cost = 1 - np.median(with_) / np.median(without)
        print(f"| {path.name} | {args.every * 1000:g} ms | {min(without):.1f}-{max(without):.1f} | "
              f"{min(with_):.1f}-{max(with_):.1f} | {cost:.1%} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
