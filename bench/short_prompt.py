"""Short prompts: the one-call compiled path against the old paths, in the same process and minutes.

    python bench/short_prompt.py FILE... [--tokens 8 16 32 64 96] [--threads N] [--repeats R]

For each file and prompt length, R alternating timings of each path (a random prompt evaluated
on an empty cache after a warm-up run of both): ``short`` is forward.forward_prompt_rows (prompts
up to session.SHORT_PROMPT tokens), ``old`` the same with SHORT_PROMPT 0, which sends 6 or more
tokens to prompt.py's batched path and fewer through the per-token path one by one. Prints the
median and best tokens per second of each and the median ratio. Alternating the two paths makes
a shared machine's load drift count against both alike.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine.fast.session as fast_session  # noqa: E402
from engine import load_model  # noqa: E402


def time_prompt(session, prompt, short_max: int) -> float:
    saved = fast_session.SHORT_PROMPT
    fast_session.SHORT_PROMPT = short_max
    try:
        session.truncate(0)
        t = time.perf_counter()
        session.eval(prompt)
        return time.perf_counter() - t
    finally:
        fast_session.SHORT_PROMPT = saved


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--tokens", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args(argv)
    short_max = fast_session.SHORT_PROMPT
    print(f"| file | tokens | old tok/s (median, best) | short tok/s (median, best) | short/old (median) |")
    print("| --- | --- | --- | --- | --- |")
    for path in args.files:
        model = load_model(path, backend="fast", threads=args.threads)
        session = model.new_session(max(args.tokens))
        rng = np.random.default_rng(0)
        for n in args.tokens:
            prompt = rng.integers(0, min(model.config.n_vocab, 50277), n).tolist()
            for limit in (0, short_max):       # warm-up: compile or load both, touch the buffers
                time_prompt(session, prompt, limit)
            old, short = [], []
            for _ in range(args.repeats):
                old.append(n / time_prompt(session, prompt, 0))
                short.append(n / time_prompt(session, prompt, short_max))
            ratio = statistics.median(s / o for s, o in zip(short, old))
            print(f"| {path.name} | {n} | {statistics.median(old):.0f}, {max(old):.0f} | "
                  f"{statistics.median(short):.0f}, {max(short):.0f} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
